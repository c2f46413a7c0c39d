"""WGAN-GP: the penalty on critics with known gradients, the interpolates, the n_critic schedule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from models import WGANGP
from models.losses import gradient_penalty
from tests.factories import quiet_trainer, tiny_model, tiny_ring


class LinearCritic(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        return x @ self.w


def tiny_wgan(critic=None, **kwargs) -> WGANGP:
    return tiny_model("WGANGP", discriminator=critic, **kwargs)


def test_paper_defaults():
    model = tiny_wgan()
    assert model.gp_weight == 10.0 and model.n_critic == 5
    assert model.hparams.g_lr == model.hparams.d_lr == 1e-4 and tuple(model.hparams.betas) == (0.0, 0.9)


@pytest.mark.parametrize("w, expected_penalty", [([0.6, 0.8], 0.0), ([3.0, 4.0], 16.0), ([0.0, 0.5], 0.25)])
def test_discriminator_loss_is_wasserstein_plus_lambda_times_penalty(w, expected_penalty):
    model = tiny_wgan(LinearCritic(w), gp_weight=10.0)
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    loss, logs = model.discriminator_loss(real, fake, None)
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
    model.discriminator_loss(torch.randn(4000, 2), torch.randn(4000, 2), None)
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


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_penalty_is_computed_in_float32_without_autocast_under_mixed_precision(precision):
    """The critic sees the interpolates in float32 with autocast off, and training stays finite."""
    from lightning.pytorch.plugins import MixedPrecision

    L.seed_everything(0)
    model = tiny_wgan(gp_weight=10.0)
    interpolate_calls = []

    def record(module, inputs):
        x = inputs[0]
        if x.requires_grad and x.is_leaf:  # the penalty's x_hat (real and fake inputs are not leaves with grad)
            interpolate_calls.append((x.dtype, torch.is_autocast_enabled("cpu")))

    model.discriminator.register_forward_pre_hook(record)
    kwargs = {"precision": "bf16-mixed"} if precision == "bf16-mixed" else {
        "plugins": [MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16))]}
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, **kwargs)
    trainer.fit(model, datamodule=tiny_ring(batches_per_epoch=10))
    assert model.g_steps == 2 and len(interpolate_calls) == 10
    assert set(interpolate_calls) == {(torch.float32, False)}
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_penalty_value_under_autocast_matches_float64():
    from models.networks import MLPDiscriminator

    torch.manual_seed(0)
    critic = MLPDiscriminator(hidden_dim=16)
    model = tiny_wgan(critic, gp_weight=1.0)
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    model.noise = torch.Generator().manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, logs = model.discriminator_loss(real, fake, None)
    alpha = torch.rand(32, generator=torch.Generator().manual_seed(1))
    critic64 = MLPDiscriminator(hidden_dim=16).double()
    critic64.load_state_dict(critic.state_dict())
    expected = gradient_penalty(critic64, real.double(), fake.double(), alpha.double())
    assert_close(logs["gradient_penalty"].double(), expected, rtol=1e-5, atol=1e-7)


def test_batchnorm_critic_is_rejected_and_layer_norm_accepted():
    from models import DCGANDiscriminator, DCGANGenerator

    g = DCGANGenerator(latent_dim=8, image_size=28, channels=1, width=8)
    with pytest.raises(ValueError, match="must not use BatchNorm"):
        WGANGP(g, DCGANDiscriminator(image_size=28, channels=1, width=8))
    model = WGANGP(g, DCGANDiscriminator(image_size=28, channels=1, width=8, norm="layer"))
    assert any(isinstance(m, nn.GroupNorm) for m in model.discriminator.modules())


def test_negative_lambda_is_rejected():
    with pytest.raises(ValueError, match="gp_weight"):
        tiny_wgan(gp_weight=-1.0)


@pytest.mark.parametrize("fresh", [True, False])
def test_generator_step_draws_fresh_latents(fresh):
    """Algorithm 1, line 11: G's update uses new z, not the critic step's fakes. The gradient G
    receives is recomputed by hand from the z the module drew second and the critic after its step."""
    import copy

    L.seed_everything(0)
    model = tiny_wgan(n_critic=1, fresh_generator_latents=fresh)
    drawn, g_grads, critic_at_g = [], [], []
    sample_latent = model.sample_latent

    def recording_sample_latent(n, rng=None):
        z = sample_latent(n, rng=rng)
        if rng is not None and rng is model.noise:  # training draws only
            drawn.append(z.clone())
        return z

    model.sample_latent = recording_sample_latent

    class Spy(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if optimizer is pl_module.optimizers()[0].optimizer:
                g_grads.append([p.grad.clone() for p in pl_module.generator.parameters()])
                critic_at_g.append(copy.deepcopy(pl_module.discriminator))

    generator_before = copy.deepcopy(model.generator)
    quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[Spy()]).fit(model, datamodule=tiny_ring())
    assert len(drawn) == (2 if fresh else 1) and len(g_grads) == 1
    if fresh:
        assert not torch.equal(drawn[0], drawn[1])
    z_g = drawn[-1]
    expected = torch.autograd.grad(-critic_at_g[0](generator_before(z_g)).mean(), list(generator_before.parameters()))
    for got, want in zip(g_grads[0], expected):
        assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_wgan_gp_draws_fresh_generator_latents_by_default():
    assert tiny_wgan().hparams.fresh_generator_latents is True
