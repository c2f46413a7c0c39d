"""Mode coverage on 2D Gaussian mixtures: modes captured, high-quality samples %, KL and the within-mode
spread (definitions in `callbacks.metrics`)."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch import Tensor
from torchmetrics import Metric

from .base import EvaluationCallback, local_sample_count, mixture_of
from .metrics import mode_coverage, mode_spread, nearest_modes


class ModeCoverageMetric(Metric):
    """Counts HQ samples per mode, and sums their coordinates and squared norms (for the spread); states are
    sums, so DDP ranks merge by addition.

    Args:
        centers: (K, D) mode centres.
        std: the modes' standard deviation.
        weights: (K,) true mode weights; uniform if None.
        threshold: HQ radius in units of std.
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, centers: Tensor, std: float, weights: Optional[Tensor] = None, threshold: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        centers = torch.as_tensor(centers, dtype=torch.float32)
        k = centers.shape[0]
        weights = torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != (k,):
            raise ValueError(f"weights must have one entry per centre ({k}); got shape {tuple(weights.shape)}")
        self.register_buffer("centers", centers)
        self.register_buffer("weights", weights / weights.sum())
        self.radius, self.std = threshold * float(std), float(std)
        self.add_state("hq_per_mode", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hq_sum", default=torch.zeros(k, centers.shape[1], dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("hq_sq_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        nearest, hq = nearest_modes(samples, self.centers, self.radius)
        k = self.centers.shape[0]
        self.hq_per_mode += torch.bincount(nearest[hq], minlength=k)
        x = samples.detach().double().flatten(1)[hq]
        self.hq_sum.index_add_(0, nearest[hq], x)
        self.hq_sq_sum.index_add_(0, nearest[hq], x.pow(2).sum(1))
        self.total += samples.shape[0]

    def compute(self) -> dict[str, Tensor]:
        return {**mode_coverage(self.hq_per_mode, self.total, self.weights),
                "spread": mode_spread(self.hq_per_mode, self.hq_sum, self.hq_sq_sum, self.std)}


class ModeCoverage(EvaluationCallback):
    """Evaluates `ModeCoverageMetric` on `num_samples` generated samples at every validation.

    Reads the centres, std and weights from the datamodule (`trainer.datamodule`). The samples
    are split across DDP ranks so the total is exactly `num_samples`, each rank drawing from its
    own latent stream (`evaluation_rng`); the metric's sums merge them. Logs `val/modes`,
    `val/hq` (percent), `val/kl` and `val/spread`; `self.last` keeps the last values for scripts.
    """

    def __init__(self, num_samples: int = 2500, threshold: float = 3.0):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        self.num_samples = num_samples
        self.threshold = threshold
        self.metric: Optional[ModeCoverageMetric] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        centers, std, weights = mixture_of(trainer, "ModeCoverage", ("centers", "std", "weights"))
        self.metric = ModeCoverageMetric(centers, std, weights, threshold=self.threshold)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = self.metric.to(pl_module.device)
        n_local = local_sample_count(self.num_samples, trainer)
        metric.update(pl_module.sample(n_local, rng=pl_module.evaluation_rng()))
        values = metric.compute()
        metric.reset()
        self.log_values(pl_module, values, prog_bar=True)
