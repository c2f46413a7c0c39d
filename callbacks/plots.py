"""Pictures of the generator: a scatter of 2D samples over the true modes (the picture of mode
collapse), a grid of images from fixed latents, and the drawings of InfoGAN's latent traversals
(`diagnostics.LatentTraversal`). Each drawing function writes one PNG."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch import Tensor

from .base import EvaluationCallback


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes and CI
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------- drawings
def draw_scatter(path: str, samples: Tensor, centers: Optional[Tensor], std: float, title: str,
                 marker_size: float) -> None:
    """The first two dimensions of `samples`, with the `centers` (if any) marked; equal axes
    that hold the centres with a margin, so plots of one mixture compare at a glance."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.scatter(samples[:, 0], samples[:, 1], s=marker_size, alpha=0.5, label="generated")
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=40, marker="x", c="red", label="true modes")
        lim = float(centers.abs().max()) * 1.5 + 4 * float(std)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def draw_image_grid(path: str, images: Tensor, nrow: int) -> None:
    """Images in [-1, 1] (N, C, H, W), `nrow` to a row."""
    from torchvision.utils import save_image

    save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1))


def draw_traversal_grids(path: str, panels: list[Tensor]) -> None:
    """Image traversals side by side, one panel (values, steps, C, H, W) per continuous code."""
    from torchvision.utils import make_grid, save_image

    rows = [make_grid(p.reshape(-1, *p.shape[2:]), nrow=p.shape[1], normalize=True, value_range=(-1, 1))
            for p in panels]
    save_image(make_grid(torch.stack(rows), nrow=len(rows), padding=8), path)


def draw_traversal_scatter(path: str, panels: list[Tensor], centers: Optional[Tensor], g_step: int) -> None:
    """2D traversals, one panel (values, noise draws, steps, 2) per continuous code: each sweep a
    line, one colour per categorical value, over the true modes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), dpi=100, squeeze=False)
    cmap = plt.get_cmap("tab10" if panels[0].shape[0] <= 10 else "tab20")
    for j, (ax, p) in enumerate(zip(axes[0], panels)):
        if centers is not None:
            ax.scatter(centers[:, 0], centers[:, 1], s=40, marker="x", c="black")
        for v in range(p.shape[0]):
            for n in range(p.shape[1]):
                ax.plot(p[v, n, :, 0], p[v, n, :, 1], "-o", ms=2, lw=0.8, color=cmap(v % cmap.N),
                        label=f"code {v}" if n == 0 else None)
        ax.set_aspect("equal")
        ax.set_title(f"continuous code {j} swept, generator step {g_step}")
    axes[0][0].legend(fontsize=6, loc="upper right")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------- callbacks
class SampleScatter(EvaluationCallback):
    """At every validation, plots `num_samples` generated 2D samples over the datamodule's centres.

    Saves `<run folder>/samples/scatter_g<generator step>.png` (the run folder is
    `trainer.log_dir`, where the CSV log and config.yaml are) and logs the image as
    `val/samples` to every W&B logger. The last PNG's path is kept in `self.last_path`.
    Only the first two data dimensions are drawn.
    """

    def __init__(self, num_samples: int = 2500, marker_size: float = 2.0):
        super().__init__()
        self.num_samples = num_samples
        self.marker_size = marker_size

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        g_step = getattr(pl_module, "g_steps", trainer.global_step)
        path = self.output_path(trainer, "samples", f"scatter_g{g_step:07d}.png")
        if path is None:
            return
        # the same latent stream as ModeCoverage: in one process the plot shows the measured samples
        samples = pl_module.sample(self.num_samples, rng=pl_module.evaluation_rng()).float().cpu()
        dm = trainer.datamodule
        draw_scatter(path, samples, getattr(dm, "centers", None), getattr(dm, "std", 0.0),
                     f"{type(pl_module).__name__}, generator step {g_step}", self.marker_size)
        self.publish_image(trainer, "val/samples", path)


class SampleGrid(EvaluationCallback):
    """A grid of images from the fixed latents `val_z` (the same z through training), saved as
    `<run folder>/samples/grid_g<step>.png` and logged to W&B as `val/samples`."""

    def __init__(self, num_images: int = 64, nrow: int = 8):
        super().__init__()
        self.num_images, self.nrow = num_images, nrow

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.output_path(trainer, "samples", f"grid_g{pl_module.g_steps:07d}.png")
        if path is None:
            return
        z = pl_module.val_z[: self.num_images]
        draw_image_grid(path, pl_module.sample(z.shape[0], z=z).float().cpu(), self.nrow)
        self.publish_image(trainer, "val/samples", path)
