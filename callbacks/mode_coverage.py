"""Mode coverage on Gaussian mixtures: modes captured, high-quality samples, KL.

Definitions (Srivastava et al. 2017, VEEGAN, Section 5.1; PacGAN's code does the same):
- a sample is *high quality* (HQ) if it lies within `threshold` (3) std of its nearest centre;
- a mode is *captured* if it is the nearest centre of at least one HQ sample;
- HQ % = HQ samples / all samples * 100;
- KL = KL(q || p) = sum_k q_k log(q_k / p_k), q the histogram of HQ samples over modes, p the
  true mixture weights. 0 when every mode gets its share; log K when one mode takes all.
  NaN when no sample is HQ (q is undefined then).
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch import Tensor
from torchmetrics import Metric


def nearest_modes(samples: Tensor, centers: Tensor, radius: float) -> tuple[Tensor, Tensor]:
    """Each sample's nearest centre (N,), and whether it is high quality (within `radius`) (N,)."""
    samples = samples.detach().float().flatten(1)
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples have dimension {samples.shape[1]} but the centres have {centers.shape[1]}")
    dist, nearest = torch.cdist(samples, centers.to(samples)).min(dim=1)
    return nearest, dist <= radius


def local_sample_count(total: int, trainer: L.Trainer) -> int:
    """This rank's share of `total` evaluation samples: the shares over all ranks sum to `total`."""
    world, rank = trainer.world_size, trainer.global_rank
    return total // world + (1 if rank < total % world else 0)


class ModeCoverageMetric(Metric):
    """Counts HQ samples per mode; states are sums, so DDP ranks merge by addition.

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
        self.radius = threshold * float(std)
        self.add_state("hq_per_mode", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        nearest, hq = nearest_modes(samples, self.centers, self.radius)
        self.hq_per_mode += torch.bincount(nearest[hq], minlength=self.centers.shape[0])
        self.total += samples.shape[0]

    def compute(self) -> dict[str, Tensor]:
        hq_total = self.hq_per_mode.sum()
        q = self.hq_per_mode.double() / hq_total.clamp(min=1)
        p = self.weights.double()
        kl = torch.where(q > 0, q * (q / p).log(), torch.zeros_like(q)).sum()
        if hq_total == 0:
            kl = torch.tensor(float("nan"), dtype=torch.float64, device=kl.device)
        return {
            "modes": (self.hq_per_mode > 0).sum().float(),
            "hq": 100.0 * hq_total.double() / self.total.clamp(min=1),
            "kl": kl,
        }


class ModeCoverage(L.Callback):
    """Evaluates `ModeCoverageMetric` on `num_samples` generated samples at every validation.

    Reads the centres, std and weights from the datamodule (`trainer.datamodule`). The samples
    are split across DDP ranks so the total is exactly `num_samples`, each rank drawing from its
    own latent stream (`evaluation_generator`); the metric's sums merge them. Logs `val/modes`,
    `val/hq` (percent) and `val/kl`; also keeps the last values in
    `self.last` for scripts.
    """

    def __init__(self, num_samples: int = 2500, threshold: float = 3.0):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1; got {num_samples}")
        self.num_samples = num_samples
        self.threshold = threshold
        self.metric: Optional[ModeCoverageMetric] = None
        self.last: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if dm is None or not all(hasattr(dm, a) for a in ("centers", "std", "weights")):
            raise ValueError(
                "ModeCoverage needs a datamodule that describes its modes (centers, std, weights), "
                f"such as datamodules.Ring or Grid; got {type(dm).__name__}"
            )
        self.metric = ModeCoverageMetric(dm.centers, dm.std, dm.weights, threshold=self.threshold)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metric = self.metric.to(pl_module.device)
        n_local = local_sample_count(self.num_samples, trainer)
        # per-rank latent streams: the ranks' samples are distinct, and the same for a given (seed, step)
        metric.update(pl_module.sample(n_local, generator=pl_module.evaluation_generator()))
        values = metric.compute()
        metric.reset()
        self.last = {k: float(v) for k, v in values.items()}
        for name, value in values.items():
            pl_module.log(f"val/{name}", value.float(), prog_bar=True, sync_dist=False)  # already merged
