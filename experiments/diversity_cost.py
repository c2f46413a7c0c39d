"""Cost of one DiversityMetrics evaluation against the training time between two evaluations.

    OMP_NUM_THREADS=1 python experiments/diversity_cost.py experiments/ring8/gan.yaml 11.82

Builds the config's model and data (untrained weights: the cost does not depend on them), times the k-means fit of
NDB's bins (once per run) and the median of 5 evaluations of 2,500 samples over 50 bins, and divides by the
training time between two of the config's evaluations: its batches per epoch (one evaluation an epoch) times the
ms per batch given (e.g. experiments/benchmark.py's figure for the config).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks import DiversityMetrics  # noqa: E402
from callbacks.metrics import kmeans_bins  # noqa: E402
from experiments.benchmark import cpu_cli  # noqa: E402


def main(argv: list[str]) -> str:
    config, ms_per_batch = Path(argv[0]), float(argv[1])
    cli = cpu_cli(config)
    model, data = cli.model, cli.datamodule
    callback = DiversityMetrics(num_bins=50, num_samples=2500)
    callback.setup(cli.trainer, model, "fit")
    callback.log_values = lambda *args, **kwargs: None  # measured outside a fit: nothing to log to
    trainer = SimpleNamespace(world_size=1, global_rank=0, datamodule=data)  # what evaluate() reads
    reference = callback.metric.extractor(model.unpack_batch(next(iter(data.val_dataloader()))))
    start = time.perf_counter()
    kmeans_bins(reference, 50)
    fit = time.perf_counter() - start
    callback.evaluate(trainer, model)  # fits the bins it keeps
    times = []
    for _ in range(5):
        start = time.perf_counter()
        callback.evaluate(trainer, model)
        times.append(time.perf_counter() - start)
    evaluation = statistics.median(times)
    interval = data.batches_per_epoch * ms_per_batch / 1000
    text = (f"{config}: k-means fit (once) {fit:.2f} s; one evaluation {evaluation:.3f} s; training between two "
            f"evaluations {interval:.1f} s ({data.batches_per_epoch} batches x {ms_per_batch} ms): "
            f"{100 * evaluation / interval:.2f} %")
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
