"""D2GAN (Nguyen et al. 2017): the objective's values worked by hand, its optimal discriminators (the paper's
Proposition 1: D1* = alpha p / q, D2* = beta q / p) found by minimising our discriminator loss, the second
discriminator's own weights and optimiser, and the authors' settings in the configs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from experiments.configs import model_configs, resolve
from models import D2GAN, MLPDiscriminator, MLPGenerator
from models.d2gan import log_softplus
from tests.factories import quiet_trainer, tiny_model, tiny_ring


class LookupDiscriminator(nn.Module):
    """A raw score per input point: x[:, 0] is 0 or 1, the score is scores[x]."""

    def __init__(self, first: float, second: float):
        super().__init__()
        self.in_dim = 2
        self.scores = nn.Parameter(torch.tensor([first, second]))

    def forward(self, x):
        return self.scores[x[:, 0].long()]

    def reset_parameters(self):
        with torch.no_grad():
            self.scores.copy_(torch.tensor([0.3, -0.7]))


def _model(alpha=0.5, beta=2.0):
    return D2GAN(MLPGenerator(latent_dim=4, hidden_dim=8), LookupDiscriminator(0.2, -1.0), alpha=alpha, beta=beta)


def softplus(a):
    return math.log1p(math.exp(a))


def test_losses_match_the_objective_worked_by_hand():
    model = _model(alpha=0.5, beta=2.0)  # D1 raw scores (0.2, -1.0); D2, reset: (0.3, -0.7)
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    fake = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    d_loss, logs = model.discriminator_loss(real, fake, torch.zeros(2, 4))
    d1 = (-0.5 * (math.log(softplus(0.2)) + math.log(softplus(-1.0))) / 2) + softplus(-1.0)
    d2 = (softplus(0.3) + softplus(-0.7)) / 2 - 2.0 * math.log(softplus(-0.7))
    assert logs["d1_loss"].item() == pytest.approx(d1, rel=1e-6)
    assert logs["d2_loss"].item() == pytest.approx(d2, rel=1e-6)
    assert d_loss.item() == pytest.approx(d1 + d2, rel=1e-6)
    g_loss, _ = model.generator_loss(real, fake, torch.zeros(2, 4))
    assert g_loss.item() == pytest.approx(-softplus(-1.0) + 2.0 * math.log(softplus(-0.7)), rel=1e-6)


def test_minimising_the_discriminator_loss_reaches_the_papers_optimal_discriminators():
    """Point 0 has data share p = 3/4 and sample share q = 1/4, point 1 the reverse: D1* = alpha p / q and
    D2* = beta q / p, i.e. (3 alpha, alpha / 3) and (beta / 3, 3 beta)."""
    alpha, beta = 0.5, 2.0
    model = _model(alpha, beta)
    real = torch.tensor([[0.0, 0], [0, 0], [0, 0], [1, 0]])
    fake = torch.tensor([[0.0, 0], [1, 0], [1, 0], [1, 0]])
    params = [model.discriminator.scores, model.discriminator2.scores]
    optimizer = torch.optim.LBFGS(params, lr=0.5, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        optimizer.zero_grad()
        loss, _ = model.discriminator_loss(real, fake, torch.zeros(4, 4))
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    d1 = torch.nn.functional.softplus(model.discriminator.scores.detach())
    d2 = torch.nn.functional.softplus(model.discriminator2.scores.detach())
    torch.testing.assert_close(d1, torch.tensor([3 * alpha, alpha / 3]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d2, torch.tensor([beta / 3, 3 * beta]), rtol=1e-4, atol=1e-5)


def test_log_softplus_is_finite_where_softplus_underflows():
    a = torch.tensor([-1000.0, -100.0, -30.0, -5.0, 0.0, 30.0])
    expected = [math.log(math.log1p(math.exp(v))) if v > -700 else v for v in a.tolist()]
    assert torch.isfinite(log_softplus(a)).all()
    assert log_softplus(a).tolist() == pytest.approx(expected, rel=1e-6)


def test_the_second_discriminator_has_its_own_weights_and_both_train_with_the_discriminator_optimiser():
    torch.manual_seed(0)
    model = tiny_model("D2GAN")
    d1, d2 = model.discriminator, model.discriminator2
    assert isinstance(d2, MLPDiscriminator) and d2 is not d1
    assert not torch.equal(d1.net[0].weight, d2.net[0].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quiet_trainer(max_steps=4, limit_val_batches=0).fit(model, datamodule=tiny_ring())
    assert len(model.discriminator_parameters()) == 2 * len(list(d1.parameters()))
    for prefix in ("discriminator.", "discriminator2.", "generator."):
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith(prefix)), prefix
    with pytest.raises(ValueError, match="beta must be > 0"):
        D2GAN(MLPGenerator(), MLPDiscriminator(), beta=0.0)


@pytest.mark.parametrize("table", ["ring8", "grid25"])
def test_the_configs_hold_the_authors_settings(table):
    args = resolve(model_configs(table, "d2gan"))["model"]["init_args"]
    assert (args["alpha"], args["beta"], args["g_lr"], args["d_lr"]) == (1.0, 1.0, 2e-4, 2e-4)
    assert args["betas"] == [0.5, 0.999] and args["fresh_generator_latents"] is True and args["n_critic"] == 1


def test_log_softplus_has_finite_gradients_far_below_zero():
    a = torch.tensor([-200.0, -110.0, -25.0, 0.0], requires_grad=True)
    log_softplus(a).sum().backward()
    assert torch.isfinite(a.grad).all()
    assert a.grad[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])  # d/da of a, where log softplus(a) = a
