"""Diagnostics of structured generators: which generator makes which mode (MGAN), which code
makes which mode (InfoGAN), and InfoGAN's latent traversals.

On 2D Gaussian mixtures a sample's mode is its nearest centre, counted only when the sample is
high quality (within 3 std, as in `ModeCoverage`). Counts are summed over DDP ranks.
"""

from __future__ import annotations

import os
from typing import Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor

from .mode_coverage import local_sample_count, nearest_modes
from .scatter import log_image_to_wandb


def matched_accuracy(contingency: Tensor) -> float:
    """Accuracy of the best one-to-one matching of rows (code values) to columns (classes).

    `contingency[i, j]` counts samples with code i and class j. The matching maximises the
    matched count (Hungarian algorithm, `scipy.optimize.linear_sum_assignment`); with more codes
    than classes (or fewer) the unmatched ones count as errors. NaN for an empty table.
    """
    from scipy.optimize import linear_sum_assignment

    counts = contingency.detach().double().cpu().numpy()
    total = counts.sum()
    if total == 0:
        return float("nan")
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / total)


def _mixture(trainer: L.Trainer, who: str):
    dm = trainer.datamodule
    if dm is None or not all(hasattr(dm, a) for a in ("centers", "std")):
        raise ValueError(f"{who} needs a datamodule that describes its modes (centers, std), such as "
                         f"datamodules.Ring or Grid; got {type(dm).__name__}")
    return dm.centers, dm.std


class GeneratorModeShares(L.Callback):
    """MGAN on 2D mixtures: each generator's share of the high-quality samples of each mode.

    Draws `num_samples` from every generator at each validation and counts, for generator k and
    mode j, its HQ samples nearest to j. `share[k, j] = count[k, j] / sum_k count[k, j]`, each
    generator's share of what lands on mode j. Logs
    - `val/mixture/mode_purity`: mean over captured modes of the largest generator's share
      (1: every mode comes from a single generator; 1/K: all generators make every mode);
    - `val/mixture/generators_used`: generators that make the most samples of at least one mode;
    and writes the counts to `<run folder>/mixture/counts_g<step>.csv` (rows generators,
    columns modes). The last shares are kept in `self.last_shares`.
    """

    def __init__(self, num_samples: int = 500, threshold: float = 3.0):
        self.num_samples = num_samples
        self.threshold = threshold
        self.last_shares: Optional[Tensor] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "num_generators", 1) < 2:
            raise ValueError("GeneratorModeShares needs a model with several generators (MGAN)")
        _mixture(trainer, "GeneratorModeShares")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        centers, std = _mixture(trainer, "GeneratorModeShares")
        centers = centers.to(pl_module.device)
        n_local = local_sample_count(self.num_samples, trainer)
        counts = torch.zeros(pl_module.num_generators, centers.shape[0], device=pl_module.device)
        stream = pl_module.evaluation_generator()
        for k in range(pl_module.num_generators):
            nearest, hq = nearest_modes(pl_module.sample(n_local, generator=stream, generator_index=k), centers,
                                        self.threshold * std)
            counts[k] = torch.bincount(nearest[hq], minlength=centers.shape[0]).float()
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        per_mode = counts.sum(0)
        shares = counts / per_mode.clamp(min=1)
        captured = per_mode > 0
        purity = shares.max(0).values[captured].mean() if captured.any() else torch.tensor(float("nan"))
        used = shares.argmax(0)[captured].unique().numel()
        self.last_shares = shares.cpu()
        pl_module.log("val/mixture/mode_purity", purity.float(), sync_dist=False)
        pl_module.log("val/mixture/generators_used", float(used), sync_dist=False)
        folder = os.path.join(trainer.log_dir or trainer.default_root_dir, "mixture")
        if trainer.is_global_zero:
            os.makedirs(folder, exist_ok=True)
            header = ",".join(f"mode_{j}" for j in range(counts.shape[1]))
            np.savetxt(os.path.join(folder, f"counts_g{pl_module.g_steps:07d}.csv"), counts.cpu().numpy(),
                       fmt="%d", delimiter=",", header="generator rows; " + header, comments="")


class CodeModeAccuracy(L.Callback):
    """InfoGAN: how well each categorical code predicts the mode (2D) or class (images) of its samples.

    Draws `num_samples` with codes from their priors and labels each sample: on a 2D mixture its
    nearest mode, high-quality samples only; on images, the class the MNIST classifier at
    `classifier_path` gives it (28 x 28 single-channel images: the digit). Logs
    `val/info/code_accuracy` (first categorical code; `..._<j>` for the others): the accuracy of
    the best one-to-one matching of code values to modes or classes (`matched_accuracy`); 1 when
    every code value makes exactly one mode and different values make different modes. (The
    InfoGAN paper's MNIST result, about 5 % error, is 1 - this on MNIST.)
    """

    def __init__(self, num_samples: int = 2500, threshold: float = 3.0, classifier_path: Optional[str] = None):
        self.num_samples = num_samples
        self.threshold = threshold
        self.classifier_path = classifier_path
        self.classifier = None
        self.last: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not getattr(pl_module, "categorical_codes", None):
            raise ValueError("CodeModeAccuracy needs a model with categorical codes (InfoGAN)")
        if self.classifier_path is not None:
            from .images import load_classifier

            self.classifier = load_classifier(self.classifier_path)
        else:
            _mixture(trainer, "CodeModeAccuracy (without classifier_path)")

    def _labels(self, trainer, samples: Tensor) -> tuple[Tensor, Tensor, int]:
        """(label per sample, which samples count, number of labels)."""
        if self.classifier is None:
            centers, std = _mixture(trainer, "CodeModeAccuracy")
            nearest, hq = nearest_modes(samples, centers, self.threshold * std)
            return nearest, hq, centers.shape[0]
        if samples.dim() != 4 or samples.shape[1:] != (1, 28, 28):
            raise ValueError(f"the MNIST classifier labels (B, 1, 28, 28) images; got {tuple(samples.shape)}")
        with torch.no_grad():
            digits = self.classifier.to(samples.device)(samples.float()).argmax(1)
        return digits, torch.ones_like(digits, dtype=torch.bool), 10

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        z = pl_module.sample_latent(local_sample_count(self.num_samples, trainer), generator=pl_module.evaluation_generator())
        codes, _ = pl_module.split_codes(z)
        labels, counted, num_labels = self._labels(trainer, pl_module.sample(z.shape[0], z=z))
        self.last = {}
        for j, k in enumerate(pl_module.categorical_codes):
            table = torch.zeros(k, num_labels, device=z.device)
            table.index_put_((codes[counted, j], labels[counted]), torch.ones_like(labels[counted], dtype=table.dtype),
                             accumulate=True)
            table = trainer.strategy.reduce(table, reduce_op="sum")
            name = "val/info/code_accuracy" + (f"_{j}" if j else "")
            self.last[name] = matched_accuracy(table)
            pl_module.log(name, self.last[name], sync_dist=False)


class LatentTraversal(L.Callback):
    """InfoGAN: one row per value of the first categorical code, each continuous code swept from
    -range to range across the row, the other latents fixed.

    Images: a grid (torchvision `make_grid`) per continuous code. 2D data: a scatter per
    continuous code, one colour per categorical value, each sweep drawn as a line over the true
    modes. Saved as `<run folder>/traversal/traversal_g<step>.png` and logged to W&B as
    `val/traversal`.
    """

    def __init__(self, steps: int = 10, num_noise: int = 8):
        self.steps = steps
        self.num_noise = num_noise
        self.last_path: Optional[str] = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        folder = os.path.join(trainer.log_dir or trainer.default_root_dir, "traversal")
        if not trainer.is_global_zero:
            return
        values = pl_module.categorical_codes[0] if pl_module.categorical_codes else 1
        J = max(pl_module.continuous_codes, 1)
        sweep = torch.linspace(-pl_module.continuous_range, pl_module.continuous_range, self.steps)
        stream = torch.Generator(device=pl_module.device).manual_seed(0)
        base = pl_module.make_latent(self.num_noise, generator=stream)  # fixed noise and other codes
        panels = []  # per continuous code: (values, num_noise, steps, *sample shape)
        for j in range(J):
            z = base[None, :, None].repeat(values, 1, self.steps, 1)  # (V, noise, steps, latent)
            cat_offset = pl_module.noise_dim
            if pl_module.categorical_codes:
                z[..., cat_offset : cat_offset + values] = 0
                z[..., cat_offset : cat_offset + values] += torch.eye(values, device=z.device)[:, None, None]
            if pl_module.continuous_codes:
                z[..., pl_module.latent_dim - pl_module.continuous_codes + j] = sweep.to(z)
            flat = z.reshape(-1, z.shape[-1])
            x = pl_module.sample(flat.shape[0], z=flat)
            panels.append(x.float().cpu().view(values, self.num_noise, self.steps, *x.shape[1:]))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"traversal_g{pl_module.g_steps:07d}.png")
        if panels[0].dim() > 4:  # images (V, noise, steps, C, H, W): first noise draw, rows = values
            self._save_grid([p[:, 0] for p in panels], path)
        else:
            self._save_scatter(trainer, pl_module, panels, path)
        self.last_path = path
        log_image_to_wandb(trainer, "val/traversal", path)

    def _save_grid(self, panels: list[Tensor], path: str) -> None:
        from torchvision.utils import make_grid, save_image

        rows = [make_grid(p.reshape(-1, *p.shape[2:]), nrow=p.shape[1], normalize=True, value_range=(-1, 1))
                for p in panels]
        save_image(make_grid(torch.stack(rows), nrow=len(rows), padding=8), path)

    def _save_scatter(self, trainer: L.Trainer, pl_module: L.LightningModule, panels: list[Tensor], path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        centers = getattr(trainer.datamodule, "centers", None)
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
            ax.set_title(f"continuous code {j} swept, generator step {pl_module.g_steps}")
        axes[0][0].legend(fontsize=6, loc="upper right")
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
