"""Pictures of the generator: a scatter of 2D samples over the true modes (the picture of mode
collapse), a grid of images from fixed latents, and the drawings of InfoGAN's latent traversals
(`diagnostics.LatentTraversal`). Each drawing function writes one PNG; `draw_samples_over_modes` draws
the scatter into a given axes (the per-run PNG and the tables' samples figure share it), from the
points `SampleScatter` keeps beside each PNG (`save_points` / `load_points`)."""

from __future__ import annotations

import os
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
MODE_RADIUS_STD = 3.0  # a mode's circle: 3 std around its centre, ModeCoverage's default high-quality radius


def scatter_limit(centers: Tensor, std: float) -> float:
    """Half the side of the square view of a mixture: its centres with a margin, the same for every plot of
    one mixture so they compare at a glance."""
    return float(torch.as_tensor(centers).abs().max()) * 1.5 + 4 * float(std)


def draw_samples_over_modes(ax, samples: Tensor, centers: Optional[Tensor], std: float, marker_size: float,
                            radius_std: float = MODE_RADIUS_STD) -> list:
    """Draws the first two dimensions of `samples` on `ax` with the `centers` (if any), each drawn as a
    circle of radius `radius_std` x `std`: a thin, translucent outline with nothing inside, so that the
    samples on a mode stay visible (a marker on the centre would hide the samples of narrow modes) and
    the circle shows whether they fall within it. Equal axes holding the centres with a margin
    (`scatter_limit`). Returns the circles (matplotlib patches)."""
    from matplotlib.patches import Circle

    samples = torch.as_tensor(samples)
    circles = []
    if centers is not None:
        centers = torch.as_tensor(centers)
        for x, y in centers[:, :2].tolist():
            circle = Circle((x, y), radius_std * float(std), fill=False, linewidth=0.7, edgecolor="#d62728",
                            alpha=0.7, zorder=3)
            ax.add_patch(circle)
            circles.append(circle)
        lim = scatter_limit(centers, std)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.scatter(samples[:, 0], samples[:, 1], s=marker_size, alpha=0.4, color="#1f77b4", linewidths=0, zorder=2)
    ax.set_aspect("equal")
    return circles


def scatter_legend_handles(marker_size: float, radius_std: float = MODE_RADIUS_STD) -> list:
    """Legend entries for `draw_samples_over_modes`: a generated sample and a mode's circle."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], linestyle="none", marker="o", markersize=max(3.0, marker_size ** 0.5 * 2),
                   color="#1f77b4", label="generated sample"),
            Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none",
                   markeredgecolor="#d62728", markeredgewidth=0.7, label=f"true mode ({radius_std:g} std)")]


def draw_scatter(path: str, samples: Tensor, centers: Optional[Tensor], std: float, title: str,
                 marker_size: float) -> None:
    """`draw_samples_over_modes` as a PNG of its own, titled `title`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    draw_samples_over_modes(ax, samples, centers, std, marker_size)
    ax.set_title(title)
    handles = scatter_legend_handles(marker_size)
    ax.legend(handles=handles if centers is not None else handles[:1], loc="upper right", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def save_points(path: str, samples: Tensor, centers: Optional[Tensor], std: float) -> None:
    """The drawn samples' first two dimensions (float32), with the mixture's centres and std, as `path` (.npz):
    what `draw_samples_over_modes` needs to draw the plot again (the tables' samples figure)."""
    import numpy as np

    arrays = {"samples": torch.as_tensor(samples)[:, :2].float().numpy(), "std": np.float64(std)}
    if centers is not None:
        arrays["centers"] = torch.as_tensor(centers)[:, :2].float().numpy()
    np.savez(path, **arrays)


def load_points(path) -> tuple[Tensor, Optional[Tensor], float]:
    """(samples, centres or None, std) as `save_points` wrote them."""
    import numpy as np

    with np.load(path) as data:
        centers = torch.from_numpy(data["centers"]) if "centers" in data.files else None
        return torch.from_numpy(data["samples"]), centers, float(data["std"])


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
def points_path(plot: str) -> str:
    """Where `SampleScatter` keeps the points of the plot at `plot`: beside it, with the suffix .npz."""
    return os.path.splitext(str(plot))[0] + ".npz"


class SampleScatter(EvaluationCallback):
    """At every validation, plots `num_samples` generated 2D samples over the datamodule's centres.

    Saves `<run folder>/samples/scatter_g<generator step>.png` (the run folder is
    `trainer.log_dir`, where the CSV log and config.yaml are) and, beside it, the points drawn
    with the mixture's centres and std (`scatter_g<step>.npz`, see `save_points`), and logs the
    image as `val/samples` to every W&B logger. The last PNG's path is kept in `self.last_path`.
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
        centers, std = getattr(dm, "centers", None), getattr(dm, "std", 0.0)
        draw_scatter(path, samples, centers, std, f"{type(pl_module).__name__}, generator step {g_step}",
                     self.marker_size)
        save_points(points_path(path), samples, centers, std)
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
