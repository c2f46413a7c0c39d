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
        return model.generator_loss(real, model.generator(z), z)[0]

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
    g_unrolled = torch.autograd.grad(model.generator_loss(real, model.generator(z), z)[0], model.generator.parameters())
    g_plain = torch.autograd.grad(plain.generator_loss(real, plain.generator(z), z)[0], plain.generator.parameters())
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
    loss, _ = model.generator_loss(real, model.generator(z), z)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in model.generator.parameters())
    for name, value in model.discriminator.state_dict().items():
        assert torch.equal(value, before[name]), f"{name} changed"
    assert str(opt.state_dict()) == str(opt_state)


def test_trains_in_lightning_and_rejects_bad_settings():
    import lightning as L

    from tests.factories import quiet_trainer, tiny_ring
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
    from tests.factories import quiet_trainer, tiny_ring

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
        model.generator_loss(real, model.generator(z), z)
    model._unroll_optimizer = torch.optim.Adam(model.discriminator.parameters(), maximize=True)
    with pytest.raises(TypeError, match="maximize"):
        model.generator_loss(real, model.generator(z), z)


def _reference_unrolled_objective(g_params, d_params, adam_state, real, z, steps, loss, lr, betas, eps):
    """f_K(theta_G) written out from Metz et al. Eq. 4-5, independently of the model's code.

    G: z -> W2 tanh(W1 z + b1) + b2; D: x -> V2 tanh(V1 x + c1) + c2 (logit); D(x) = sigmoid.
    Adam (Kingma & Ba, Algorithm 1, as torch implements it: eps outside the square root) is
    unrolled by hand on D's loss -f = -(E log D(x) + E log(1 - D(G(z)))), from the given moments.
    """
    W1, b1, W2, b2 = g_params
    fake = torch.tanh(z @ W1.T + b1) @ W2.T + b2

    def logit(theta, x):
        V1, c1, V2, c2 = theta
        return (torch.tanh(x @ V1.T + c1) @ V2.T + c2).squeeze(1)

    def value(theta):  # f(theta_G, theta_D), the full value function
        return torch.log(torch.sigmoid(logit(theta, real))).mean() + torch.log(1 - torch.sigmoid(logit(theta, fake))).mean()

    theta = list(d_params)
    m = [s["exp_avg"].clone() for s in adam_state]
    v = [s["exp_avg_sq"].clone() for s in adam_state]
    t = float(adam_state[0]["step"])
    b1_, b2_ = betas
    for _ in range(steps):
        grads = torch.autograd.grad(-value(theta), theta, create_graph=True)
        t += 1
        m = [b1_ * mi + (1 - b1_) * g for mi, g in zip(m, grads)]
        v = [b2_ * vi + (1 - b2_) * g * g for vi, g in zip(v, grads)]
        theta = [p - lr * (mi / (1 - b1_**t)) / ((vi / (1 - b2_**t)).sqrt() + eps) for p, mi, vi in zip(theta, m, v)]
    if loss == "minimax":
        return value(theta)
    # non-saturating: the fake term -E log D_K(G(z)) replaces E log(1 - D_K(G(z)))
    return torch.log(torch.sigmoid(logit(theta, real))).mean() - torch.log(torch.sigmoid(logit(theta, fake))).mean()


@pytest.mark.parametrize("loss", ["minimax", "nonsaturating"])
@pytest.mark.parametrize("steps", [1, 5])
def test_generator_gradient_is_the_gradient_of_the_unrolled_value_function(loss, steps):
    """The gradient the model applies to G equals d f_K / d theta_G of Eq. 5, real term included,
    computed by a hand-written unrolling (and that one checked against finite differences)."""
    torch.manual_seed(0)
    model = UnrolledGAN(TinyG(), tiny_d(), unrolled_steps=steps, loss=loss).double()
    opt = with_adam_state(model, steps=4)
    real = torch.randn(6, 2, dtype=torch.float64) + 1
    z = torch.randn(6, 2, dtype=torch.float64)

    model.zero_grad()
    model.generator_loss(real, model.generator(z), z)[0].backward()
    applied = [p.grad.clone() for p in model.generator.parameters()]

    g_params = [p.detach().clone().requires_grad_(True) for p in model.generator.parameters()]
    d_params = [p.detach().clone().requires_grad_(True) for p in model.discriminator.parameters()]
    state = [opt.state[p] for p in model.discriminator.parameters()]
    group = opt.param_groups[0]

    def f_k(g):
        return _reference_unrolled_objective(g, d_params, state, real, z, steps, loss, group["lr"], group["betas"], group["eps"])

    expected = torch.autograd.grad(f_k(g_params), g_params)
    for got, want in zip(applied, expected):
        assert_close(got, want, rtol=1e-9, atol=1e-12)

    # the reference itself against central finite differences of f_K
    h = 1e-6
    for p, g in zip(g_params, expected):
        flat = p.data.view(-1)
        for i in range(p.numel()):
            flat[i] += h
            up = f_k(g_params).item()
            flat[i] -= 2 * h
            down = f_k(g_params).item()
            flat[i] += h
            assert (up - down) / (2 * h) == pytest.approx(g.view(-1)[i].item(), rel=1e-5, abs=1e-8)

    # the real-data term carries gradient through theta_D^K: without it the gradient differs
    fake_only = UnrolledGAN(TinyG(), tiny_d(), unrolled_steps=steps, loss=loss).double()
    fake_only.load_state_dict(model.state_dict())
    fake_only._unroll_optimizer = opt
    fake_only.loss_fns = fake_only.loss_fns._replace(discriminator_real=lambda r: r.sum() * 0.0)
    dropped = torch.autograd.grad(fake_only.generator_loss(real, fake_only.generator(z), z)[0],
                                  list(fake_only.generator.parameters()))
    assert max((a - b).abs().max().item() for a, b in zip(dropped, expected)) > 1e-6


def test_minimax_generator_loss_is_minus_the_unrolled_discriminator_loss(setup):
    model, opt, real, z = setup
    model.loss_fns = model.loss_fns._replace(generator=lambda f: -torch.nn.functional.softplus(f).mean())
    fake = model.generator(z)
    g_loss = model.generator_loss(real, fake, None)[0]
    theta = model.unrolled_discriminator(real, fake)
    from torch.func import functional_call
    d_loss_k = model.loss_fns.discriminator(functional_call(model.discriminator, theta, (real,)),
                                            functional_call(model.discriminator, theta, (fake,)))
    assert_close(g_loss, -d_loss_k, rtol=1e-12, atol=1e-12)
