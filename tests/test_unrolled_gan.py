"""Unrolled GAN: the unrolled update is Adam's, the gradient is the true second-order one."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from models import GAN, UnrolledGAN
from models.unrolled_gan import unrolled_adam


class TinyG(nn.Module):
    def __init__(self):
        super().__init__()
        self.latent_dim = 2
        self.net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))

    def forward(self, z):
        return self.net(z)


def tiny_d(*extra: nn.Module) -> nn.Module:
    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 4), *extra, nn.Tanh(), nn.Linear(4, 1))

        def forward(self, x):
            return self.net(x).squeeze(1)

    return D()


def with_adam_state(model: UnrolledGAN, steps: int = 3) -> torch.optim.Adam:
    """An Adam optimiser on D with non-trivial moments, as after some training."""
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=0.05, betas=(0.5, 0.999))
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(6, 2, dtype=torch.float64)
        model.discriminator(x).pow(2).mean().backward()
        opt.step()
    model._unroll_optimizer = opt
    return opt


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = UnrolledGAN(TinyG(), tiny_d(), unrolled_steps=3).double()
    opt = with_adam_state(model)
    real = torch.randn(5, 2, dtype=torch.float64) + 1
    z = torch.randn(5, 2, dtype=torch.float64)
    return model, opt, real, z


@pytest.mark.parametrize("clip", [None, 0.01])
def test_unrolled_update_is_exactly_torch_adam(setup, clip):
    model, opt, real, z = setup
    model.hparams.gradient_clip_val = clip
    fake = model.generator(z).detach()
    theta = model.unrolled_discriminator(real, fake)
    reference = copy.deepcopy(model.discriminator)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.05, betas=(0.5, 0.999))
    ref_opt.load_state_dict(opt.state_dict())
    for _ in range(3):
        ref_opt.zero_grad()
        model.loss_fns.discriminator(reference(real), reference(fake)).backward()
        if clip is not None:
            total = torch.nn.utils.clip_grad_norm_(reference.parameters(), clip)
            assert total > clip  # the clip is active
        ref_opt.step()
    for name, p in reference.named_parameters():
        assert_close(theta[name], p, rtol=1e-10, atol=1e-12)


def test_unrolled_generator_gradient_matches_finite_differences(setup):
    model, _, real, z = setup

    def loss() -> torch.Tensor:
        return model.generator_loss(real, model.generator(z))[0]

    params = list(model.generator.parameters())
    grads = torch.autograd.grad(loss(), params)
    h = 1e-6
    for p, g in zip(params, grads):
        numeric = torch.zeros_like(p)
        flat = p.data.view(-1)  # perturb in place; the loss itself needs autograd (it unrolls D)
        for i in range(p.numel()):
            flat[i] += h
            up = loss().item()
            flat[i] -= 2 * h
            down = loss().item()
            flat[i] += h
            numeric.view(-1)[i] = (up - down) / (2 * h)
        assert_close(g, numeric, rtol=1e-5, atol=1e-8)

    # the second-order term matters here: dropping it gives another gradient
    model.second_order = False
    first_order = torch.autograd.grad(loss(), params)
    assert max((a - b).abs().max().item() for a, b in zip(grads, first_order)) > 1e-4


def test_zero_unrolled_steps_is_the_plain_gan_gradient(setup):
    model, _, real, z = setup
    model.unrolled_steps = 0
    plain = GAN(TinyG(), tiny_d()).double()
    plain.load_state_dict(model.state_dict())
    g_unrolled = torch.autograd.grad(model.generator_loss(real, model.generator(z))[0], model.generator.parameters())
    g_plain = torch.autograd.grad(plain.generator_loss(real, plain.generator(z))[0], plain.generator.parameters())
    for a, b in zip(g_unrolled, g_plain):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["batchnorm", "spectral_norm"])
def test_real_discriminator_is_untouched_and_buffers_work(kind):
    torch.manual_seed(0)
    if kind == "batchnorm":
        d = tiny_d(nn.BatchNorm1d(4))
    else:
        d = tiny_d()
        d.net[0] = nn.utils.parametrizations.spectral_norm(d.net[0])
    model = UnrolledGAN(TinyG(), d, unrolled_steps=5).double()
    opt = with_adam_state(model)
    before = copy.deepcopy(model.discriminator.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    real, z = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    loss, _ = model.generator_loss(real, model.generator(z))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    for name, value in model.discriminator.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"
    assert str(opt.state_dict()) == str(opt_state)


def test_trains_in_lightning_and_rejects_bad_settings():
    import lightning as L

    from tests.conftest import quiet_trainer, tiny_ring
    from models import MLPDiscriminator, MLPGenerator

    L.seed_everything(0)
    model = UnrolledGAN(MLPGenerator(latent_dim=8, hidden_dim=16), MLPDiscriminator(hidden_dim=16), unrolled_steps=2)
    d0 = copy.deepcopy(model.discriminator.state_dict())
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=tiny_ring())
    assert model.g_steps == 5 and model.d_steps == 5
    assert any(not torch.equal(v, d0[k]) for k, v in model.discriminator.state_dict().items())
    with pytest.raises(ValueError, match="unrolled_steps must be an integer >= 0"):
        UnrolledGAN(MLPGenerator(latent_dim=8), MLPDiscriminator(), unrolled_steps=-1)


def test_unrolled_adam_leaves_its_inputs_alone():
    p = {"w": torch.tensor([1.0, -2.0], requires_grad=True)}
    state = {"w": {"exp_avg": torch.tensor([0.1, 0.1]), "exp_avg_sq": torch.tensor([0.01, 0.02]), "step": torch.tensor(4.0)}}
    saved = copy.deepcopy(state)
    out = unrolled_adam(lambda t: (t["w"] ** 2).sum(), p, state, lr=0.1, betas=(0.9, 0.99), eps=1e-8,
                        weight_decay=0.0, steps=2)
    assert not torch.equal(out["w"], p["w"]) and torch.equal(p["w"], torch.tensor([1.0, -2.0]))
    assert all(torch.equal(state["w"][k], saved["w"][k]) for k in saved["w"])


def test_generator_unrolls_from_the_discriminator_before_this_batchs_update():
    """Eq. 6-7 update G and D simultaneously: the G step must see D as the batch found it."""
    import lightning as L

    from models import MLPDiscriminator, MLPGenerator
    from tests.conftest import quiet_trainer, tiny_ring

    L.seed_everything(0)
    model = UnrolledGAN(MLPGenerator(latent_dim=8, hidden_dim=16), MLPDiscriminator(hidden_dim=16), unrolled_steps=1)
    order, checks = [], []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.d_before = copy.deepcopy(pl_module.discriminator.state_dict())

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            is_g = optimizer is pl_module.optimizers()[0].optimizer
            order.append("G" if is_g else "D")
            if is_g:
                now = pl_module.discriminator.state_dict()
                checks.append(all(torch.equal(now[k], v) for k, v in self.d_before.items()))

    quiet_trainer(max_steps=6, limit_val_batches=0, callbacks=[Spy()]).fit(model, datamodule=tiny_ring())
    assert order == ["G", "D"] * 3 and checks == [True] * 3


def test_unsupported_discriminator_optimisers_are_rejected(setup):
    model, _, real, z = setup
    model._unroll_optimizer = torch.optim.AdamW(model.discriminator.parameters())
    with pytest.raises(TypeError, match="replays plain Adam"):
        model.generator_loss(real, model.generator(z))
    model._unroll_optimizer = torch.optim.Adam(model.discriminator.parameters(), maximize=True)
    with pytest.raises(TypeError, match="maximize"):
        model.generator_loss(real, model.generator(z))
