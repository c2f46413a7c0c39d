"""WGAN-GP: the penalty on critics with known gradients, the interpolates, the n_critic schedule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from models import WGANGP, MLPDiscriminator, MLPGenerator
from models.losses import gradient_penalty
from tests.conftest import quiet_trainer, tiny_ring


class LinearCritic(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x @ self.w


def tiny_wgan(critic=None, **kwargs) -> WGANGP:
    return WGANGP(MLPGenerator(latent_dim=8, hidden_dim=16), critic or MLPDiscriminator(hidden_dim=16), **kwargs)


def test_paper_defaults():
    model = tiny_wgan()
    assert model.gp_weight == 10.0 and model.n_critic == 5
    assert model.hparams.g_lr == model.hparams.d_lr == 1e-4 and tuple(model.hparams.betas) == (0.0, 0.9)


@pytest.mark.parametrize("w, expected_penalty", [([0.6, 0.8], 0.0), ([3.0, 4.0], 16.0), ([0.0, 0.5], 0.25)])
def test_discriminator_loss_is_wasserstein_plus_lambda_times_penalty(w, expected_penalty):
    model = tiny_wgan(LinearCritic(w), gp_weight=10.0)
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    loss, logs = model.discriminator_loss(real, fake)
    w_t = torch.tensor(w)
    wasserstein = (fake @ w_t).mean() - (real @ w_t).mean()
    assert_close(logs["gradient_penalty"], torch.tensor(expected_penalty))
    assert_close(loss, wasserstein + 10.0 * expected_penalty)
    assert_close(logs["wasserstein_distance"], -wasserstein)


def test_interpolates_lie_on_the_segments_with_one_alpha_per_sample():
    seen = []
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    alpha = torch.rand(5)

    def critic(x):
        seen.append(x.detach().clone())
        return x.sum(1)

    gradient_penalty(critic, real, fake, alpha)
    (x_hat,) = seen
    assert_close(x_hat, alpha[:, None] * real + (1 - alpha[:, None]) * fake)


def test_alphas_are_uniform_per_sample(monkeypatch):
    model = tiny_wgan(LinearCritic([1.0, 0.0]))
    model.noise = torch.Generator().manual_seed(0)
    captured = {}
    import models.wgan_gp as wgan_module

    def spy(critic, real, fake, alpha):
        captured["alpha"] = alpha
        return gradient_penalty(critic, real, fake, alpha)

    monkeypatch.setattr(wgan_module, "gradient_penalty", spy)
    model.discriminator_loss(torch.randn(4000, 2), torch.randn(4000, 2))
    alpha = captured["alpha"]
    assert alpha.shape == (4000,) and alpha.min() >= 0 and alpha.max() <= 1
    assert abs(alpha.mean().item() - 0.5) < 0.02 and abs(alpha.var().item() - 1 / 12) < 0.005


def test_critic_gets_five_updates_per_generator_update():
    L.seed_everything(0)
    model = tiny_wgan()
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=0)
    trainer.fit(model, datamodule=tiny_ring(batches_per_epoch=10))
    opt_g, opt_d = (o.optimizer for o in model.optimizers())
    d_count = {int(s["step"]) for s in opt_d.state.values()}
    g_count = {int(s["step"]) for s in opt_g.state.values()}
    assert d_count == {20} and g_count == {4}


def test_penalty_stays_finite_under_bf16_and_fp16_with_a_gradient_scaler():
    from lightning.pytorch.plugins import MixedPrecision

    for precision in ("bf16-mixed", "16-mixed"):
        L.seed_everything(0)
        model = tiny_wgan(gp_weight=10.0)
        logged = []
        original = model.discriminator_loss

        def spy(real, fake):
            loss, logs = original(real, fake)
            logged.append(logs["gradient_penalty"])
            return loss, logs

        model.discriminator_loss = spy
        kwargs = {"precision": "bf16-mixed"} if precision == "bf16-mixed" else {
            "plugins": [MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))]}
        quiet_trainer(max_epochs=1, limit_val_batches=0, **kwargs).fit(model, datamodule=tiny_ring(batches_per_epoch=10))
        assert model.g_steps == 2
        assert all(torch.isfinite(p).all() for p in logged) and logged[0].dtype == torch.float32
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_negative_lambda_is_rejected():
    with pytest.raises(ValueError, match="gp_weight"):
        tiny_wgan(gp_weight=-1.0)
