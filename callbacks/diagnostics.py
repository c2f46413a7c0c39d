"""Diagnostics of structured generators: which generator makes which mode (MGAN), which code
makes which mode (InfoGAN), and InfoGAN's latent traversals.

On 2D Gaussian mixtures a sample's mode is its nearest centre, counted only when the sample is
high quality (within 3 std, as in `ModeCoverage`). Counts are summed over DDP ranks.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import numpy as np
import torch
from torch import Tensor

from .base import EvaluationCallback, local_sample_count, mixture_of
from .classifier import channel_digits, load_classifier
from .metrics import contingency_table, generator_mode_shares, matched_accuracy, nearest_modes
from .plots import draw_traversal_grids, draw_traversal_scatter


class GeneratorModeShares(EvaluationCallback):
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
        super().__init__()
        self.num_samples = num_samples
        self.threshold = threshold
        self.last_shares: Optional[Tensor] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "num_generators", 1) < 2:
            raise ValueError("GeneratorModeShares needs a model with several generators (MGAN)")
        mixture_of(trainer, "GeneratorModeShares")

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        centers, std = mixture_of(trainer, "GeneratorModeShares")
        centers = centers.to(pl_module.device)
        n_local = local_sample_count(self.num_samples, trainer)
        counts = torch.zeros(pl_module.num_generators, centers.shape[0], device=pl_module.device)
        stream = pl_module.evaluation_rng()
        for k in range(pl_module.num_generators):
            nearest, hq = nearest_modes(pl_module.sample(n_local, rng=stream, generator_index=k), centers,
                                        self.threshold * std)
            counts[k] = torch.bincount(nearest[hq], minlength=centers.shape[0]).float()
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        shares = generator_mode_shares(counts)
        self.last_shares = shares["shares"].cpu()
        self.log_values(pl_module, {"mixture/mode_purity": shares["mode_purity"],
                                    "mixture/generators_used": float(shares["generators_used"])})
        path = self.output_path(trainer, "mixture", f"counts_g{pl_module.g_steps:07d}.csv")
        if path is not None:
            header = ",".join(f"mode_{j}" for j in range(counts.shape[1]))
            np.savetxt(path, counts.cpu().numpy(), fmt="%d", delimiter=",", header="generator rows; " + header,
                       comments="")


class CodeModeAccuracy(EvaluationCallback):
    """InfoGAN: how well each categorical code predicts the mode (2D) or class (images) of its samples.

    Draws `num_samples` with codes from their priors and labels each sample: on a 2D mixture its
    nearest mode, high-quality samples only; on images, the class the MNIST classifier at
    `classifier_path` gives it (28 x 28 single-channel images: the digit). Logs
    `val/info/code_accuracy` (first categorical code; `..._<j>` for the others): the accuracy of
    the best one-to-one matching of code values to modes or classes (`matched_accuracy`); 1 when
    every code value makes exactly one mode and different values make different modes. (The
    InfoGAN paper's MNIST result, about 5 % error, is 1 - this on MNIST.) `self.last` is keyed by
    the logged names.
    """

    def __init__(self, num_samples: int = 2500, threshold: float = 3.0, classifier_path: Optional[str] = None):
        super().__init__()
        self.num_samples = num_samples
        self.threshold = threshold
        self.classifier_path = classifier_path
        self.classifier = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not getattr(pl_module, "categorical_codes", None):
            raise ValueError("CodeModeAccuracy needs a model with categorical codes (InfoGAN)")
        if self.classifier_path is not None:
            self.classifier = load_classifier(self.classifier_path)
        else:
            mixture_of(trainer, "CodeModeAccuracy (without classifier_path)")

    def _labels(self, trainer: L.Trainer, samples: Tensor) -> tuple[Tensor, Tensor, int]:
        """(label per sample, which samples count, number of labels)."""
        if self.classifier is None:
            centers, std = mixture_of(trainer, "CodeModeAccuracy")
            nearest, hq = nearest_modes(samples, centers, self.threshold * std)
            return nearest, hq, centers.shape[0]
        if samples.dim() != 4 or samples.shape[1:] != (1, 28, 28):
            raise ValueError(f"the MNIST classifier labels (B, 1, 28, 28) images; got {tuple(samples.shape)}")
        digits = channel_digits(self.classifier.to(samples.device), samples)[:, 0]
        return digits, torch.ones_like(digits, dtype=torch.bool), 10

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        z = pl_module.sample_latent(local_sample_count(self.num_samples, trainer), rng=pl_module.evaluation_rng())
        codes, _ = pl_module.split_codes(z)
        labels, counted, num_labels = self._labels(trainer, pl_module.sample(z.shape[0], z=z))
        values = {}
        for j, k in enumerate(pl_module.categorical_codes):
            table = contingency_table(codes[counted, j], labels[counted], k, num_labels)
            table = trainer.strategy.reduce(table, reduce_op="sum")
            values["val/info/code_accuracy" + (f"_{j}" if j else "")] = matched_accuracy(table)
        self.log_values(pl_module, values, prefix="")


class LatentTraversal(EvaluationCallback):
    """InfoGAN: one row per value of the first categorical code, each continuous code swept from
    -range to range across the row, the other latents fixed.

    Images: a grid (torchvision `make_grid`) per continuous code. 2D data: a scatter per
    continuous code, one colour per categorical value, each sweep drawn as a line over the true
    modes. Saved as `<run folder>/traversal/traversal_g<step>.png` and logged to W&B as
    `val/traversal`.
    """

    def __init__(self, steps: int = 10, num_noise: int = 8):
        super().__init__()
        self.steps = steps
        self.num_noise = num_noise

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.output_path(trainer, "traversal", f"traversal_g{pl_module.g_steps:07d}.png")
        if path is None:
            return
        panels = self._traversals(pl_module)
        if panels[0].dim() > 4:  # images (V, noise, steps, C, H, W): first noise draw, rows = values
            draw_traversal_grids(path, [p[:, 0] for p in panels])
        else:
            draw_traversal_scatter(path, panels, getattr(trainer.datamodule, "centers", None), pl_module.g_steps)
        self.publish_image(trainer, "val/traversal", path)

    def _traversals(self, pl_module: L.LightningModule) -> list[Tensor]:
        """Per continuous code, the samples (values, num_noise, steps, *sample shape) of its sweeps."""
        values = pl_module.categorical_codes[0] if pl_module.categorical_codes else 1
        J = max(pl_module.continuous_codes, 1)
        sweep = torch.linspace(-pl_module.continuous_range, pl_module.continuous_range, self.steps)
        stream = torch.Generator(device=pl_module.device).manual_seed(0)
        base = pl_module.make_latent(self.num_noise, rng=stream)  # fixed noise and other codes
        panels = []
        for j in range(J):
            z = base[None, :, None].repeat(values, 1, self.steps, 1)  # (V, noise, steps, latent)
            grid = z.shape[:-1]
            categorical = {0: torch.arange(values, device=z.device)[:, None, None].expand(grid)} \
                if pl_module.categorical_codes else None
            continuous = {j: sweep.to(z).expand(grid)} if pl_module.continuous_codes else None
            z = pl_module.replace_codes(z, categorical=categorical, continuous=continuous)
            flat = z.reshape(-1, z.shape[-1])
            x = pl_module.sample(flat.shape[0], z=flat)
            panels.append(x.float().cpu().view(values, self.num_noise, self.steps, *x.shape[1:]))
        return panels
