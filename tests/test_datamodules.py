"""Gaussian mixtures: geometry, sampling statistics, seeding and sharding."""

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from datamodules import GaussianMixture2D, Grid, Ring
from datamodules.gaussian_mixture import _BatchIndexSampler, _MixtureBatches


def test_ring_geometry_and_pacgan_preset():
    ring = Ring()
    assert ring.num_modes == 8 and ring.std == 0.02 and ring.data_shape == (2,)
    assert_close(ring.centers.norm(dim=1), torch.full((8,), 2.0))
    assert_close(ring.centers[2], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    assert_close(ring.weights, torch.full((8,), 1 / 8))
    pac = Ring(radius=1.0, std=0.01)
    assert_close(pac.centers.norm(dim=1), torch.full((8,), 1.0)) and pac.std == 0.01


def test_grid_geometry():
    grid = Grid()
    assert grid.num_modes == 25 and grid.std == 0.05
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in grid.centers.tolist()}) == 25


def test_samples_follow_the_mixture():
    dm = GaussianMixture2D(centers=[[0, 0], [10, 0]], std=0.5, weights=[3, 1])
    x, modes = dm.sample(20000, np.random.default_rng(0))
    assert x.shape == (20000, 2) and x.dtype == torch.float32
    assert abs((modes == 0).float().mean().item() - 0.75) < 0.01
    residual = x - dm.centers[modes]
    assert abs(residual.std().item() - 0.5) < 0.01 and residual.mean().abs().max() < 0.02


def test_batches_are_seeded_by_seed_and_index():
    ring = Ring(batch_size=16)
    a, b = _MixtureBatches(ring, 0, 16, 10), _MixtureBatches(ring, 0, 16, 10)
    assert torch.equal(a[3], b[3])
    assert not torch.equal(a[3], a[4])
    assert not torch.equal(a[3], _MixtureBatches(ring, 1, 16, 10)[3])


def test_sampler_gives_each_rank_and_epoch_disjoint_batches():
    ds = _MixtureBatches(Ring(), 0, 4, 3)
    seen = []
    for epoch in range(2):
        for rank in range(2):
            s = _BatchIndexSampler(ds, 3, num_replicas=2, rank=rank)
            s.set_epoch(epoch)
            seen.append(list(s))
            assert len(s) == 3
    flat = [i for idx in seen for i in idx]
    assert sorted(flat) == list(range(12))  # disjoint and gap-free over (epoch, rank)


def test_train_dataloader_without_trainer_yields_batches():
    dm = Ring(batch_size=8, batches_per_epoch=4, seed=3)
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and batches[0].shape == (8, 2)
    val = next(iter(dm.val_dataloader()))[0]
    assert val.shape == (dm.val_size, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(centers=[], std=0.1), "non-empty"),
        (dict(centers=[[0, 0]], std=0.0), "std must be positive"),
        (dict(centers=[[0, 0], [1, 1]], weights=[1.0]), "one per centre"),
        (dict(centers=[[0, 0], [1, 1]], weights=[1.0, -1.0]), "non-negative"),
        (dict(centers=[[0, 0]], batch_size=0), "batch_size"),
    ],
)
def test_invalid_mixtures_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture2D(**kwargs)


def test_invalid_presets_are_clear_errors():
    with pytest.raises(ValueError, match="radius"):
        Ring(radius=-1.0)
    with pytest.raises(ValueError, match="side"):
        Grid(side=0)
    assert math.isclose(Grid(side=3, spacing=1.0).centers.abs().max().item(), 1.0)
