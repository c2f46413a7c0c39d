"""Training time per batch and per generator step of experiment configs, on this machine.

    python experiments/step_time.py experiments/ring8/gan.yaml experiments/ring8/wgan_gp.yaml ...

Builds each config's model and datamodule exactly as `train.py fit` would, trains `--batches`
batches after `--warmup` batches (no validation, logging or checkpoints), and prints a
Markdown table with milliseconds per batch, per generator step, and the ratio of the latter to
the first config's. Configs are run one after another in one process; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402


class _Timer(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.g0 = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.d_steps == self.warmup:
            self.start, self.g0 = time.perf_counter(), pl_module.g_steps

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start
        self.batches = pl_module.d_steps - self.warmup
        self.g_steps = pl_module.g_steps - self.g0


def time_config(config: str, batches: int, warmup: int) -> dict:
    cli = train.main(args=["--config", config], run=False)
    model, datamodule = cli.model, cli.datamodule
    datamodule.batches_per_epoch = max(getattr(datamodule, "batches_per_epoch", 0), batches + warmup + 1)
    total = batches + warmup
    timer = _Timer(warmup)
    trainer = L.Trainer(max_steps=total + total // model.n_critic, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[timer])
    trainer.fit(model, datamodule=datamodule)
    return {"config": config, "ms_per_batch": 1e3 * timer.seconds / timer.batches,
            "ms_per_g_step": 1e3 * timer.seconds / max(timer.g_steps, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    rows = [time_config(c, args.batches, args.warmup) for c in args.configs]
    base = rows[0]["ms_per_g_step"]
    print("| config | ms / batch | ms / generator step | relative to the first |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['config']} | {r['ms_per_batch']:.2f} | {r['ms_per_g_step']:.2f} | {r['ms_per_g_step'] / base:.2f} |")


if __name__ == "__main__":
    main()
