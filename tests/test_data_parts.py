"""Fixed data parts (MD-GAN's per-worker datasets): disjoint and covering, one share per part in
every batch, each discriminator on its own part within a swap period and on another after it."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import parts
from models import MDGAN
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def tiny_mdgan(k: int, **kwargs) -> MDGAN:
    return tiny_model("MDGAN", noise_dim=4, hidden_dim=8, num_discriminators=k, **kwargs)


@pytest.mark.parametrize("n, p", [(103, 4), (12, 12), (1000, 3)])
def test_parts_are_disjoint_cover_the_set_and_have_near_equal_sizes(n, p):
    cut = parts.partition(n, p, seed=7)
    everything = np.concatenate(cut)
    assert len(cut) == p and sorted(everything.tolist()) == list(range(n))  # disjoint and covering
    assert max(map(len, cut)) - min(map(len, cut)) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(cut, parts.partition(n, p, seed=7)))  # fixed
    with pytest.raises(ValueError, match="cannot cut 3 items into 4"):
        parts.partition(3, 4, seed=0)


def test_a_part_s_stream_is_passes_without_replacement():
    part = np.arange(100, 130)  # 30 items, shares of 7 rows: passes end inside batches
    stream = np.concatenate([parts.part_stream(part, 7, k, seed=1, stream=0) for k in range(30)])
    assert len(stream) == 210
    for p in range(7):  # every pass is a permutation of the part, and passes differ
        assert sorted(stream[30 * p : 30 * (p + 1)].tolist()) == part.tolist()
    assert not np.array_equal(stream[:30], stream[30:60])
    # batch k depends on k only: recomputing one batch alone gives the same rows
    assert np.array_equal(parts.part_stream(part, 7, 13, seed=1, stream=0), stream[91:98])


def test_under_ddp_each_part_lives_on_one_rank():
    cut = parts.partition(400, 4, seed=0)
    for rank in (0, 1):
        idx = parts.batch_indices(cut, batch=3, batch_size=10, seed=0, world=2, rank=rank)
        owned = set(np.concatenate([cut[p] for p in parts.local_parts(4, 2, rank)]).tolist())
        assert len(idx) == 10 and set(idx.tolist()) <= owned
    with pytest.raises(ValueError, match="cannot be spread evenly over 3 processes"):
        parts.local_parts(4, 3, 0)


def test_each_discriminator_trains_on_its_own_part_and_swaps_move_it_to_another():
    """Records which training points each discriminator scored: within an epoch (a swap period)
    all of a discriminator's real samples come from one part, the one the assignment gives it;
    at the first swap the identity assignment changes, and the discriminators that moved see
    another part's samples."""
    L.seed_everything(3)
    k = 4
    dm = tiny_ring(batch_size=32, batches_per_epoch=5, train_size=400)
    model = tiny_mdgan(k, swap_every_epochs=1)
    points, _ = dm.train_points()
    part_of = {}
    for p, idx in enumerate(dm.train_parts(k)):
        for i in idx.tolist():
            part_of[tuple(points[i].tolist())] = p
    seen: dict[tuple[int, int], set[int]] = {}  # (epoch, discriminator) -> parts its real samples came from
    original = model.discriminator_loss

    def recording_loss(real, fake, latent):
        for index, rows in model.local_shares(real.shape[0]):
            key = (model.current_epoch, index)
            seen.setdefault(key, set()).update(part_of[tuple(x.tolist())] for x in real[rows])
        return original(real, fake, latent)

    model.discriminator_loss = recording_loss
    quiet_trainer(max_epochs=3, limit_val_batches=0).fit(model, datamodule=dm)
    assert model.d_steps == 15
    for epoch in range(3):
        assignment = model.share_assignment(epoch)
        for share, index in enumerate(assignment):
            assert seen[(epoch, index)] == {share}, (epoch, index, seen[(epoch, index)])
    moved = [d for d in range(k) if model.share_assignment(1).index(d) != d]
    assert moved  # this seed's first swap is not the identity
    for d in moved:
        assert seen[(1, d)] != seen[(0, d)]


def test_mdgan_refuses_data_without_parts_before_training():
    model = tiny_mdgan(3)
    with pytest.raises(ValueError, match="set data.init_args.train_size"):
        quiet_trainer(max_steps=2).fit(model, datamodule=tiny_ring())
    with pytest.raises(ValueError, match="num_parts is 2 but MDGAN trains on 3 part"):
        quiet_trainer(max_steps=2).fit(tiny_mdgan(3), datamodule=tiny_ring(train_size=100, num_parts=2))
    assert model.d_steps == 0
    with pytest.raises(ValueError, match="num_parts must be an integer >= 1"):
        tiny_ring(num_parts=0)


def test_image_parts_give_each_share_its_own_part():
    from torch.utils.data import TensorDataset

    from datamodules.images import _ImageDataModule

    class Numbered(_ImageDataModule):
        image_shape = (1, 2, 2)

        def setup(self, stage):  # image i is filled with the value i
            self._split(TensorDataset(torch.arange(60.0).view(60, 1, 1, 1).expand(60, 1, 2, 2), torch.zeros(60)))

    dm = Numbered(batch_size=6, val_size=0)
    dm.num_parts = 3
    dm.setup("fit")
    cut = parts.partition(60, 3, dm.seed)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == 10  # one pass over each part of 20, at 2 rows per share
    for images, _ in batches:
        values = images[:, 0, 0, 0].long()
        for share in range(3):
            dataset_index = values[2 * share : 2 * share + 2]
            positions = set(dm.train_set.indices[i] for i in cut[share].tolist())
            assert set(dataset_index.tolist()) <= positions


def test_clipping_acts_on_each_discriminator_alone():
    model = tiny_mdgan(2, gradient_clip_val=1.0)
    opt_g = torch.optim.Adam(model.generator_parameters())
    opt_d = torch.optim.Adam(model.discriminator_parameters())
    model.optimizers = lambda: [SimpleNamespace(optimizer=opt_g), SimpleNamespace(optimizer=opt_d)]
    d0, d1 = model.discriminators
    for p in d0.parameters():
        p.grad = torch.full_like(p, 3.0)
    for p in d1.parameters():
        p.grad = torch.full_like(p, 1e-3)
    n0 = torch.sqrt(sum((p.grad**2).sum() for p in d0.parameters()))
    small = [p.grad.clone() for p in d1.parameters()]
    model.on_before_optimizer_step(opt_d)
    # D0 alone is scaled to norm 1 (clip_grad_norm_'s eps of 1e-6); D1, far below the bound, is untouched
    assert torch.sqrt(sum((p.grad**2).sum() for p in d0.parameters())).item() == pytest.approx(1.0, rel=1e-5)
    assert all(torch.allclose(p.grad, torch.full_like(p, 3.0 / n0.item()), rtol=1e-5) for p in d0.parameters())
    assert all(torch.equal(p.grad, g) for p, g in zip(d1.parameters(), small))
