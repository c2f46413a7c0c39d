"""Minibatch discrimination: exact outputs, permutation equivariance, the collapse signal."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.testing import assert_close

from models import DCGANDiscriminator, MinibatchDiscrimination, MinibatchDiscriminationGAN, MLPDiscriminator, MLPGenerator
from tests.factories import quiet_trainer, tiny_ring


def test_exact_output_on_three_samples():
    layer = MinibatchDiscrimination(in_features=2, num_kernels=2, kernel_dim=1)
    with torch.no_grad():
        layer.T.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # M_{i,b} = f_{i,b}
    f = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 0.0]])
    out = layer(f)
    e = math.exp
    expected_o = torch.tensor([
        [e(-1) + e(-3), e(-2) + e(-0)],
        [e(-1) + e(-2), e(-2) + e(-2)],
        [e(-3) + e(-2), e(-0) + e(-2)],
    ])
    assert_close(out, torch.cat([f, expected_o], 1))


def test_l1_distance_over_the_kernel_dimension():
    layer = MinibatchDiscrimination(in_features=2, num_kernels=1, kernel_dim=2)
    with torch.no_grad():
        layer.T.copy_(torch.eye(2))  # M_{i,0} = f_i, a 2-vector
    out = layer(torch.tensor([[0.0, 0.0], [1.0, -2.0]]))
    assert_close(out[:, 2], torch.tensor([math.exp(-3.0), math.exp(-3.0)]))


def test_gradient_matches_the_definition_in_float64():
    # the layer's gradient (of f and T) equals autograd through the literal definition,
    # o_{i,b} = sum_{j != i} exp(-sum_c |M_{i,b,c} - M_{j,b,c}|), and passes gradcheck
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(in_features=4, num_kernels=3, kernel_dim=2).double()
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(6, 7, dtype=torch.float64)

    def reference(f, T):
        m = (f @ T).view(6, 3, 2)
        d = (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(-1)  # (N, N, B)
        o = torch.exp(-d).sum(1) - 1.0
        return torch.cat([f, o], 1)

    got = torch.autograd.grad((layer(f) * weights).sum(), (f, layer.T))
    want = torch.autograd.grad((reference(f, layer.T) * weights).sum(), (f, layer.T))
    for g, w in zip(got, want):
        assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (f,))


def test_permuting_the_batch_permutes_the_output():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(in_features=6, num_kernels=4, kernel_dim=3)
    f = torch.randn(7, 6)
    perm = torch.randperm(7)
    assert_close(layer(f[perm]), layer(f)[perm])


def test_identical_samples_give_n_minus_one_the_maximum():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(in_features=5, num_kernels=8, kernel_dim=3)
    n = 6
    same = layer(torch.randn(1, 5).expand(n, 5))[:, 5:]
    assert_close(same, torch.full((n, 8), float(n - 1)))
    spread = layer(torch.randn(n, 5) * 10)[:, 5:]
    assert (spread < n - 1).all() and (spread >= 0).all()


@pytest.mark.parametrize("make", [
    lambda: MLPDiscriminator(in_dim=2, hidden_dim=16, minibatch_kernels=5),
    lambda: DCGANDiscriminator(image_size=28, channels=1, width=8, minibatch_kernels=5),
])
def test_both_discriminators_take_the_layer(make):
    d = make()
    shape = (4, 2) if isinstance(d, MLPDiscriminator) else (4, 1, 28, 28)
    assert d(torch.randn(shape)).shape == (4,)
    assert sum(isinstance(m, MinibatchDiscrimination) for m in d.modules()) == 1


def test_real_and_fake_go_through_the_discriminator_separately():
    torch.manual_seed(0)
    model = MinibatchDiscriminationGAN(MLPGenerator(latent_dim=8, hidden_dim=16),
                                       MLPDiscriminator(hidden_dim=16, minibatch_kernels=5))
    batches = []
    model.discriminator.register_forward_hook(lambda m, inp, out: batches.append(inp[0].clone()))
    real, fake = torch.randn(4, 2), torch.randn(4, 2) + 5
    model.discriminator_loss(real, fake, None)
    assert len(batches) == 2 and torch.equal(batches[0], real) and torch.equal(batches[1], fake)


def test_trains_and_requires_the_layer():
    L.seed_everything(0)
    model = MinibatchDiscriminationGAN(MLPGenerator(latent_dim=8, hidden_dim=16),
                                       MLPDiscriminator(hidden_dim=16, minibatch_kernels=5))
    t0 = model.discriminator.net[4].T.clone()
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(model, datamodule=tiny_ring())
    assert model.g_steps == 5 and not torch.equal(t0, model.discriminator.net[4].T)
    with pytest.raises(ValueError, match="minibatch_kernels > 0"):
        MinibatchDiscriminationGAN(MLPGenerator(latent_dim=8), MLPDiscriminator())


@pytest.mark.parametrize("n, block", [(7, 3), (10, 5), (9, 256)])
def test_blocked_features_and_gradient_equal_the_pairwise_definition(n, block):
    # the blocked, symmetric computation (and its written-out backward) against the definition
    # computed pair by pair in plain Python loops, float64, with blocks that do not divide n
    from models.networks import minibatch_similarity

    gen = torch.Generator().manual_seed(3)
    m = torch.randn(2, n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, n, generator=gen, dtype=torch.float64)
    o = minibatch_similarity(m, block=block)
    expected = torch.stack([torch.stack([
        sum(torch.exp(-(m[b, i] - m[b, j]).abs().sum()) for j in range(n) if j != i) for i in range(n)])
        for b in range(2)])
    assert_close(o, expected)
    (grad,) = torch.autograd.grad((o * weights).sum(), m)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), m)
    assert_close(grad, expected_grad)
    with torch.no_grad():  # the path that keeps no blocks gives the same values
        assert_close(minibatch_similarity(m, block=block), expected)


def test_second_derivatives_are_refused_with_a_clear_error():
    from models.networks import minibatch_similarity

    m = torch.randn(1, 4, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(minibatch_similarity(m).sum(), m, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|double backward"):
        torch.autograd.grad(grad.sum(), m)
