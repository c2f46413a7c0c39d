"""MD-GAN: aggregation of the discriminators' feedback, data shares, swaps, per-D updates."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.testing import assert_close

from models import MDGAN, MLPDiscriminator, MLPGenerator
from models.losses import aggregate_losses, d_logistic_loss
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def tiny_mdgan(k: int = 3, **kwargs) -> MDGAN:
    return tiny_model("MDGAN", num_discriminators=k, **kwargs)


LOSSES = torch.tensor([0.3, 1.7, 0.9, 1.2])


def test_lambda_zero_is_the_mean_and_a_large_lambda_the_max_exactly():
    mean, w0 = aggregate_losses(LOSSES, "softmax", 0.0)
    assert mean.item() == LOSSES.mean().item() and torch.equal(w0, torch.full((4,), 0.25))
    top, w = aggregate_losses(LOSSES, "softmax", 1e4)
    assert top.item() == LOSSES.max().item() and w.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert aggregate_losses(LOSSES, "mean")[0].item() == LOSSES.mean().item()
    assert aggregate_losses(LOSSES, "max")[0].item() == LOSSES.max().item()


def test_softmax_weights_are_gman_s():
    lam = 2.0
    loss, w = aggregate_losses(LOSSES.double(), "softmax", lam)
    e = [math.exp(lam * v) for v in LOSSES.double().tolist()]
    expected_w = [x / sum(e) for x in e]
    assert w.tolist() == pytest.approx(expected_w, rel=1e-12)
    assert loss.item() == pytest.approx(sum(a * b for a, b in zip(expected_w, LOSSES.double().tolist())), rel=1e-12)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_losses(LOSSES, "median")


def test_data_shares_are_disjoint_and_cover_the_batch():
    model = tiny_mdgan(k=4)
    shares = model.local_shares(10)
    assert sorted(d for d, _ in shares) == [0, 1, 2, 3]
    rows = [i for _, s in shares for i in range(10)[s]]
    assert sorted(rows) == list(range(10))  # disjoint and covering
    assert [len(range(10)[s]) for _, s in shares] in ([3, 2, 3, 2], [2, 3, 2, 3], [3, 2, 2, 3], [2, 3, 3, 2])
    # under 2 processes each rank's batch is split in 2, and the ranks hold different discriminators
    r0, r1 = model.local_shares(10, world=2, rank=0), model.local_shares(10, world=2, rank=1)
    assert sorted(d for d, _ in r0 + r1) == [0, 1, 2, 3] and len(r0) == len(r1) == 2
    assert sorted(i for _, s in r0 for i in range(10)[s]) == list(range(10))
    with pytest.raises(ValueError, match="cannot be split into 4 non-empty shares"):
        model.local_shares(3)


def test_swaps_permute_the_shares_every_e_epochs():
    model = tiny_mdgan(k=5, swap_every_epochs=2)
    torch.manual_seed(0)
    assignments = [model.share_assignment(e) for e in range(8)]
    assert assignments[0] == assignments[1] == list(range(5))  # identity before the first swap
    for a in assignments:
        assert sorted(a) == list(range(5))  # a permutation: every share has one discriminator
    assert assignments[2] == assignments[3] and assignments[4] == assignments[5]
    assert len({tuple(a) for a in assignments[::2]}) == 4  # each period draws a new permutation
    never = tiny_mdgan(k=5, swap_every_epochs=0)
    assert all(never.share_assignment(e) == list(range(5)) for e in range(4))


def test_each_discriminator_gets_exactly_its_own_loss_gradient():
    torch.manual_seed(0)
    model = tiny_mdgan(k=3)
    model.assignment = [2, 0, 1]  # share 0 -> D2, share 1 -> D0, share 2 -> D1
    real, fake = torch.randn(9, 2), torch.randn(9, 2)
    loss, logs = model.discriminator_loss(real, fake, None)
    loss.backward()
    for share, index in enumerate(model.assignment):
        d = model.discriminators[index]
        rows = slice(3 * share, 3 * share + 3)
        own = d_logistic_loss(d(real[rows]), d(fake[rows]))
        assert_close(logs[f"d_loss_{index}"], own.detach())
        grads = torch.autograd.grad(own, list(d.parameters()))
        for p, g in zip(d.parameters(), grads):
            assert_close(p.grad, g)


def test_discriminators_are_independent_copies():
    model = tiny_mdgan(k=3)
    w = [d.net[0].weight for d in model.discriminators]
    assert len({p.data_ptr() for p in w}) == 3
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])  # re-initialised, not cloned


def test_generator_loss_aggregates_every_discriminator():
    """Linear discriminators D_i(x) = a_i . x + b_i with chosen weights: each one's non-saturating
    loss V_i = mean_n log(1 + exp(-D_i(x_n))) and GMAN's weights exp(lambda V_i) / sum_j exp(lambda V_j)
    worked out with `math`, not with the code's own softmax."""
    model = MDGAN(MLPGenerator(latent_dim=8, hidden_dim=16), MLPDiscriminator(n_hidden=0), num_discriminators=3,
                  aggregation="softmax", softmax_lambda=3.0)
    a, b = [(1.0, 0.0), (-1.0, 1.0), (0.5, -0.5)], [0.0, 0.5, -0.3]
    with torch.no_grad():
        for d, a_i, b_i in zip(model.discriminators, a, b):
            d.net[-1].weight.copy_(torch.tensor([a_i]))
            d.net[-1].bias.fill_(b_i)
    points = [(1.0, 0.0), (0.0, 1.0), (-1.0, 2.0), (0.5, -0.5)]
    loss, logs = model.generator_loss(None, torch.tensor(points), None)
    v = [sum(math.log1p(math.exp(-(a_i[0] * x + a_i[1] * y + b_i))) for x, y in points) / len(points)
         for a_i, b_i in zip(a, b)]
    e = [math.exp(3.0 * v_i) for v_i in v]
    w = [e_i / sum(e) for e_i in e]
    # float32 forward: a few roundings of relative size 6e-8 each
    assert [logs[f"g_loss_{i}"].item() for i in range(3)] == pytest.approx(v, rel=1e-6)
    assert [logs[f"weight_{i}"].item() for i in range(3)] == pytest.approx(w, rel=1e-5)
    assert loss.item() == pytest.approx(sum(w_i * v_i for w_i, v_i in zip(w, v)), rel=1e-5)
    assert max(w) < 0.7 and min(w) > 0.1  # weights 0.21, 0.13, 0.66: neither the mean nor the max


def test_learned_lambda_starts_at_its_value_and_gets_a_gradient():
    model = tiny_mdgan(k=2, aggregation="softmax", softmax_lambda=0.7, learn_lambda=True, lambda_penalty=0.01)
    assert model.softmax_lambda.item() == pytest.approx(0.7)
    assert any(p is model.lambda_raw for p in model.generator_parameters())
    loss, logs = model.generator_loss(None, torch.randn(5, 2), None)
    loss.backward()
    assert model.lambda_raw.grad is not None and model.lambda_raw.grad.item() != 0
    with pytest.raises(ValueError, match="learn_lambda needs aggregation='softmax'"):
        tiny_mdgan(k=2, learn_lambda=True)


def test_trains_every_discriminator():
    L.seed_everything(0)
    model = tiny_mdgan(k=3, aggregation="max", swap_every_epochs=1)
    before = [d.net[0].weight.clone() for d in model.discriminators]
    quiet_trainer(max_epochs=2).fit(model, datamodule=tiny_ring(batches_per_epoch=4, train_size=300))
    assert model.g_steps == 8
    assert all(not torch.equal(b, d.net[0].weight) for b, d in zip(before, model.discriminators))
    assert model.assignment == model.share_assignment(1)
