"""Gaussian mixtures in 2D (or any dimension): the mode-collapse toy benchmarks.

`Ring`: 8 modes on a circle of radius 2, std 0.02 (Metz et al. 2017; Srivastava et al. 2017).
PacGAN (Lin et al. 2018) used radius 1, std 0.01: `Ring(radius=1.0, std=0.01)`.
`Grid`: 25 modes at {-4, -2, 0, 2, 4}^2, std 0.05 (Lin et al. 2018; Gulrajani et al. 2017 toy).

Training data are sampled on the fly: batch k of the run is drawn from a NumPy generator seeded
by (seed, k), where k = (epoch * batches_per_epoch + i) * world_size + rank. So every rank sees
different data, every epoch is new data, and a run resumed at an epoch boundary sees exactly the
batches the uninterrupted run would have seen. An "epoch" is only the interval between
validation/checkpoint points (`batches_per_epoch` batches).

With `train_size` set, the training data are instead a fixed sample of that many points (drawn
once from (seed, 2)), batches drawn from it without replacement, pass after pass; with
`num_parts = P` too, that sample is cut into P fixed, disjoint parts and each batch holds one
contiguous share per part (`datamodules.parts`): the per-worker datasets of MD-GAN.
"""

import math
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from . import parts
from models.arguments import PositiveFloat, PositiveInt


class GaussianMixture2D(L.LightningDataModule):
    """A mixture of isotropic Gaussians with given centres, weights and one std.

    Args:
        centers: mode centres, K lists of D coordinates.
        std: standard deviation of every mode.
        weights: mixture weights (normalised here); uniform if None.
        batch_size: samples per training batch, per device.
        batches_per_epoch: training batches between two validation/checkpoint points.
        val_size: real samples in the validation set (the metrics use generated samples).
        seed: seed of the data stream; None follows `seed_everything`.
        train_size: None (default) draws fresh points for every batch; an integer trains on a
            fixed sample of that many points.
        num_parts: cut the fixed sample into this many disjoint parts, one batch share each;
            None (default) takes the model's `data_parts` (MD-GAN: one per discriminator;
            every other model: 1). Parts > 1 need train_size.
    """

    def __init__(
        self,
        centers: Sequence[Sequence[float]],
        std: PositiveFloat = 0.02,
        weights: Optional[Sequence[float]] = None,
        batch_size: PositiveInt = 512,
        batches_per_epoch: PositiveInt = 1000,
        val_size: PositiveInt = 2500,
        seed: Optional[int] = None,
        train_size: Optional[PositiveInt] = None,
        num_parts: Optional[PositiveInt] = None,
    ):
        super().__init__()
        centers_t = torch.as_tensor(centers, dtype=torch.float32)
        if centers_t.dim() != 2 or centers_t.shape[0] < 1:
            raise ValueError(f"centers must be a non-empty list of points, shape (K, D); got shape {tuple(centers_t.shape)}")
        if not std > 0:
            raise ValueError(f"std must be positive; got {std}")
        if weights is None:
            weights_t = torch.full((centers_t.shape[0],), 1.0 / centers_t.shape[0])
        else:
            weights_t = torch.as_tensor(weights, dtype=torch.float64)
            if weights_t.shape != (centers_t.shape[0],) or (weights_t < 0).any() or weights_t.sum() <= 0:
                raise ValueError(
                    f"weights must be {centers_t.shape[0]} non-negative numbers (one per centre) with a positive "
                    f"sum; got {list(weights)}"
                )
            weights_t = (weights_t / weights_t.sum()).float()
        for name, value in (("batch_size", batch_size), ("batches_per_epoch", batches_per_epoch), ("val_size", val_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        parts.check_num_parts(num_parts)
        if train_size is not None and train_size < 1:
            raise ValueError(f"train_size must be >= 1 (or null for fresh points every batch); got {train_size}")
        self.train_size, self.num_parts = train_size, num_parts
        self.centers = centers_t  # (K, D)
        self.weights = weights_t  # (K,), sums to 1
        self._centers_np = centers_t.double().numpy()
        self._cum_weights = np.cumsum(weights_t.double().numpy())
        self.std = float(std)
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.val_size = val_size
        self.seed = seed

    @property
    def num_modes(self) -> int:
        return self.centers.shape[0]

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (self.centers.shape[1],)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """n points and the index of the mode each was drawn from: (n, D) float32, (n,) int64."""
        # inverse-CDF draw of the modes: the same distribution as rng.choice(p=weights), 3x faster
        modes = np.minimum(np.searchsorted(self._cum_weights, rng.random(n), side="right"), self.num_modes - 1)
        noise = rng.standard_normal((n, self.centers.shape[1]))
        points = self._centers_np[modes] + self.std * noise
        return torch.from_numpy(points.astype(np.float32)), torch.from_numpy(modes)

    def train_points(self) -> tuple[Tensor, Tensor]:
        """The fixed training sample (train_size points) and the mode of each point."""
        if self.train_size is None:
            raise ValueError("this datamodule draws fresh training points; set train_size for a fixed sample")
        return self.sample(self.train_size, np.random.default_rng([self._seed(), 2]))

    def parts_for(self, model) -> int:
        """The number of data parts to train `model` on, checked against this datamodule (see
        `datamodules.parts.resolve_num_parts`); parts > 1 need a fixed training set."""
        num_parts = parts.resolve_num_parts(self.num_parts, model, self.batch_size)
        if num_parts > 1 and self.train_size is None:
            raise ValueError(f"{type(model).__name__} trains on {num_parts} fixed, disjoint parts of a finite training "
                             f"set, but this datamodule draws fresh points for every batch: set "
                             f"data.init_args.train_size (e.g. 100000)")
        if self.train_size is not None and self.train_size < num_parts:
            raise ValueError(f"train_size {self.train_size} cannot be cut into {num_parts} parts; raise it")
        return num_parts

    def train_parts(self, num_parts: Optional[int] = None) -> list[np.ndarray]:
        """Indices into `train_points()` of each part (disjoint, covering the sample)."""
        return parts.partition(self.train_size, num_parts or self.num_parts or 1, self._seed())

    def _seed(self) -> int:
        return int(self.seed if self.seed is not None else torch.initial_seed())

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        num_parts = self.parts_for(trainer.lightning_module if trainer is not None else None)
        if self.train_size is None:
            dataset = _MixtureBatches(self, self._seed(), self.batch_size, self.batches_per_epoch)
        else:
            points, _ = self.train_points()
            dataset = _PartBatches(points, self.train_parts(num_parts), self._seed(), self.batch_size, world)
        sampler = _BatchIndexSampler(dataset, self.batches_per_epoch, num_replicas=world, rank=rank, trainer=trainer)
        return DataLoader(dataset, batch_size=None, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        points, _ = self.sample(self.val_size, np.random.default_rng([self._seed(), 1]))
        return DataLoader(TensorDataset(points), batch_size=self.val_size)


class Ring(GaussianMixture2D):
    """`num_modes` Gaussians evenly spaced on a circle of `radius` (defaults: 8, 2.0, std 0.02)."""

    def __init__(self, num_modes: PositiveInt = 8, radius: PositiveFloat = 2.0, std: PositiveFloat = 0.02, **kwargs):
        if num_modes < 1 or radius <= 0:
            raise ValueError(f"need num_modes >= 1 and radius > 0; got {num_modes}, {radius}")
        angles = [2 * math.pi * k / num_modes for k in range(num_modes)]
        centers = [[radius * math.cos(a), radius * math.sin(a)] for a in angles]
        super().__init__(centers=centers, std=std, **kwargs)


class Grid(GaussianMixture2D):
    """side x side Gaussians on a grid centred at 0 (defaults: 5 x 5, spacing 2, std 0.05)."""

    def __init__(self, side: PositiveInt = 5, spacing: PositiveFloat = 2.0, std: PositiveFloat = 0.05, **kwargs):
        if side < 1 or spacing <= 0:
            raise ValueError(f"need side >= 1 and spacing > 0; got {side}, {spacing}")
        coords = [(i - (side - 1) / 2) * spacing for i in range(side)]
        centers = [[x, y] for x in coords for y in coords]
        super().__init__(centers=centers, std=std, **kwargs)


class _MixtureBatches(Dataset):
    """Item k is a whole batch, drawn from a generator seeded by (seed, 0, k)."""

    def __init__(self, mixture: GaussianMixture2D, seed: int, batch_size: int, length: int):
        self.mixture, self.seed, self.batch_size, self.length = mixture, seed, batch_size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> Tensor:
        points, _ = self.mixture.sample(self.batch_size, np.random.default_rng([self.seed, 0, k]))
        return points


class _PartBatches(Dataset):
    """Item (k * world + rank) is rank `rank`'s batch k of a fixed set, one share per local part."""

    def __init__(self, points: Tensor, parts_: list[np.ndarray], seed: int, batch_size: int, world: int):
        self.points, self.parts, self.seed, self.batch_size, self.world = points, parts_, seed, batch_size, world
        parts.local_parts(len(parts_), world, 0)  # fails early on parts that do not spread over the ranks

    def __len__(self) -> int:
        return 2**62  # batches are numbered without end; the sampler chooses which

    def __getitem__(self, j: int) -> Tensor:
        k, rank = divmod(j, self.world)
        return self.points[parts.batch_indices(self.parts, k, self.batch_size, self.seed, self.world, rank)]


class _BatchIndexSampler(DistributedSampler):
    """Yields batch indices (epoch * n + i) * world + rank for i < n.

    The epoch is the trainer's `current_epoch` when the iterator is made, the counter the model
    seeds its noise stream from at the epoch's start (`GANBase.on_train_epoch_start`), so data and
    noise stay paired, on a resumed run too (a resumed run makes its first iterator before Lightning
    calls `set_epoch`); without a trainer, the last `set_epoch`. A DistributedSampler subclass so
    that Lightning keeps it as it is under DDP instead of wrapping it (the wrapper would not forward
    the epoch).
    """

    def __init__(self, dataset: Dataset, batches_per_epoch: int, num_replicas: int, rank: int, trainer=None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.batches_per_epoch = batches_per_epoch
        self.trainer = trainer

    def __iter__(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else self.epoch
        start = epoch * self.batches_per_epoch
        return iter([(start + i) * self.num_replicas + self.rank for i in range(self.batches_per_epoch)])

    def __len__(self) -> int:
        return self.batches_per_epoch
