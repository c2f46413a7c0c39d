"""Cost of a config's simultaneous training step under four Adam implementations, interleaved in one process.

    OMP_NUM_THREADS=1 python experiments/optimizer_step_cost.py experiments/ring8_pacgan/gan.yaml

Builds the config's generator, discriminator and optimiser settings as `train.py fit` does, and times a plain
PyTorch simultaneous step (both gradients at the same point, then both Adam steps; the non-saturating loss) on a
fixed batch, with Adam as PyTorch's default (for-loop on CPU), `foreach`, `fused`, and its `step` under
`torch.compile` (inductor), chunk by chunk in turn, and prints the median ms per step of each with the largest
difference of its generator weights from the default's after the same steps from the same start (the fused and
compiled kernels round differently). A way out of the Adam share of the step (BENCHMARK.md, "Where the
PacGAN-protocol batch goes") is worth adopting only if it shows here.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.benchmark import cpu_cli  # noqa: E402

VARIANTS = ("default", "foreach", "fused", "compiled step")


def main(argv: list[str], chunks: int = 6, chunk: int = 50, warmup: int = 5) -> dict[str, float]:
    config = Path(argv[0])
    cli = cpu_cli(config)
    model, data = cli.model, cli.datamodule
    real = model.unpack_batch(next(iter(data.train_dataloader())))
    z = model.sample_latent(real.shape[0])
    g_settings = {"lr": model.hparams.g_lr, "betas": tuple(model.hparams.betas)}
    d_settings = {"lr": model.hparams.d_lr, "betas": tuple(model.hparams.betas)}
    players = {}
    for name in VARIANTS:
        G, D = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
        extra = {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(name, {})
        og = torch.optim.Adam(G.parameters(), **g_settings, **extra)
        od = torch.optim.Adam(D.parameters(), **d_settings, **extra)
        steps = (torch.compile(og.step), torch.compile(od.step)) if name == "compiled step" else (og.step, od.step)
        players[name] = (G, D, steps)

    def step(G, D, steps):
        fake = G(z)
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        g_loss = F.softplus(-D(fake)).mean()
        for params, loss in ((list(G.parameters()), g_loss), (list(D.parameters()), d_loss)):
            for p, grad in zip(params, torch.autograd.grad(loss, params, retain_graph=True)):
                p.grad = grad
        for optimizer_step in steps:
            optimizer_step()

    for name in VARIANTS:
        for _ in range(warmup):
            step(*players[name])
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(chunks):
        for name in VARIANTS:
            start = time.perf_counter()
            for _ in range(chunk):
                step(*players[name])
            times[name].append((time.perf_counter() - start) / chunk * 1000)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    reference = list(players["default"][0].parameters())
    print(f"{config}: {warmup + chunks * chunk} simultaneous steps per variant, batch {real.shape[0]}, "
          f"{torch.get_num_threads()} thread(s)")
    print("| Adam | ms / step (median of chunks) | x default | max abs. G weight difference from default |")
    print("| --- | --- | --- | --- |")
    for name in VARIANTS:
        diff = max((a - b).abs().max().item() for a, b in zip(reference, players[name][0].parameters()))
        print(f"| {name} | {medians[name]:.2f} | {medians[name] / medians['default']:.3f} | {diff:.2g} |")
    return medians


if __name__ == "__main__":
    main(sys.argv[1:])
