"""Scatter plot of generated samples over the true modes: the picture of mode collapse."""

from __future__ import annotations

import os
from typing import Optional

import lightning as L
from lightning.pytorch.loggers import WandbLogger


class SampleScatter(L.Callback):
    """At every validation, plots `num_samples` generated 2D samples over the datamodule's centres.

    Saves `<run folder>/samples/scatter_g<generator step>.png` (the run folder is
    `trainer.log_dir`, where the CSV log and config.yaml are) and logs the image as
    `val/samples` to every W&B logger. The last PNG's path is kept in `self.last_path`.
    Only the first two data dimensions are drawn.
    """

    def __init__(self, num_samples: int = 2500, marker_size: float = 2.0):
        self.num_samples = num_samples
        self.marker_size = marker_size
        self.last_path: Optional[str] = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        folder = os.path.join(trainer.log_dir or trainer.default_root_dir, "samples")  # log_dir is a collective
        if trainer.is_global_zero:
            # the same latent stream as ModeCoverage: in one process the plot shows the measured samples
            samples = pl_module.sample(self.num_samples, generator=pl_module.evaluation_generator())
            self._plot(trainer, pl_module, samples.float().cpu(), folder)

    def _plot(self, trainer: L.Trainer, pl_module: L.LightningModule, samples, folder: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        dm = trainer.datamodule
        g_step = getattr(pl_module, "g_steps", trainer.global_step)
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        ax.scatter(samples[:, 0], samples[:, 1], s=self.marker_size, alpha=0.5, label="generated")
        centers = getattr(dm, "centers", None)
        if centers is not None:
            ax.scatter(centers[:, 0], centers[:, 1], s=40, marker="x", c="red", label="true modes")
            lim = float(centers.abs().max()) * 1.5 + 4 * float(getattr(dm, "std", 0.0))
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"{type(pl_module).__name__}, generator step {g_step}")
        ax.legend(loc="upper right", fontsize=8)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"scatter_g{g_step:07d}.png")
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        self.last_path = path
        log_image_to_wandb(trainer, "val/samples", path)


def log_image_to_wandb(trainer: L.Trainer, key: str, path: str) -> None:
    """Logs the image file at `path` under `key` to every W&B logger of the trainer."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            # the x-axis Lightning logs metrics at (training batches), not global_step (D + G steps)
            step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
            logger.log_image(key=key, images=[path], step=step)
