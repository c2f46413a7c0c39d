"""Every loss against values computed by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from models import losses

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_d_logistic_loss():
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    expected = (softplus(-0.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(3.0)) / 2
    assert_close(losses.d_logistic_loss(REAL, FAKE), torch.tensor(expected))


def test_d_logistic_loss_at_equilibrium_is_2_log_2():
    zeros = torch.zeros(5)
    assert_close(losses.d_logistic_loss(zeros, zeros), torch.tensor(2 * math.log(2)))


def test_g_nonsaturating_loss():
    expected = (softplus(1.0) + softplus(-3.0)) / 2  # -log sigmoid(f)
    assert_close(losses.g_nonsaturating_loss(FAKE), torch.tensor(expected))


def test_g_minimax_loss():
    sig = [1 / (1 + math.exp(1.0)), 1 / (1 + math.exp(-3.0))]
    expected = (math.log(1 - sig[0]) + math.log(1 - sig[1])) / 2  # E[log(1 - D(G(z)))]
    assert_close(losses.g_minimax_loss(FAKE), torch.tensor(expected))


def test_wasserstein_losses():
    assert_close(losses.d_wasserstein_loss(REAL, FAKE), torch.tensor(1.0 - 1.0))
    assert_close(losses.d_wasserstein_loss(torch.tensor([3.0, 5.0]), FAKE), torch.tensor(1.0 - 4.0))
    assert_close(losses.g_wasserstein_loss(FAKE), torch.tensor(-1.0))


def test_hinge_losses():
    # relu(1 - [0, 2]) = [1, 0]; relu(1 + [-1, 3]) = [0, 4]
    assert_close(losses.d_hinge_loss(REAL, FAKE), torch.tensor(0.5 + 2.0))
    assert_close(losses.g_hinge_loss(FAKE), torch.tensor(-1.0))


def test_least_squares_losses():
    # 0.5 * mean((r - 1)^2) = 0.5 * (1 + 1) / 2; 0.5 * mean(f^2) = 0.5 * (1 + 9) / 2
    assert_close(losses.d_least_squares_loss(REAL, FAKE), torch.tensor(0.5 + 2.5))
    # 0.5 * mean((f - 1)^2) = 0.5 * (4 + 4) / 2
    assert_close(losses.g_least_squares_loss(FAKE), torch.tensor(2.0))


def test_losses_compute_in_float32_from_half_inputs():
    out = losses.d_logistic_loss(REAL.to(torch.bfloat16), FAKE.to(torch.bfloat16))
    assert out.dtype == torch.float32


def test_gradient_penalty_is_zero_for_unit_norm_linear_critic():
    w = torch.tensor([0.6, 0.8])  # ||w|| = 1, so grad_x (w . x) has norm 1 everywhere
    real, fake = torch.randn(7, 2), torch.randn(7, 2)
    gp = losses.gradient_penalty(lambda x: x @ w, real, fake, torch.rand(7))
    assert_close(gp, torch.tensor(0.0))


def test_gradient_penalty_of_linear_critic_is_norm_minus_one_squared():
    w = torch.tensor([3.0, 4.0, 12.0])  # ||w|| = 13
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    gp = losses.gradient_penalty(lambda x: x @ w, real, fake, torch.rand(5))
    assert_close(gp, torch.tensor((13.0 - 1.0) ** 2))


def test_gradient_penalty_is_differentiable_in_the_critic_parameters():
    w = torch.tensor([2.0, 0.0], requires_grad=True)
    gp = losses.gradient_penalty(lambda x: x @ w, torch.randn(4, 2), torch.randn(4, 2), torch.rand(4))
    (grad_w,) = torch.autograd.grad(gp, w)
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w|| = 2 * 1 * [1, 0]
    assert_close(grad_w, torch.tensor([2.0, 0.0]))


def test_gradient_penalty_rejects_wrong_alpha_shape():
    with pytest.raises(ValueError, match="one per sample"):
        losses.gradient_penalty(lambda x: x.sum(1), torch.randn(4, 2), torch.randn(4, 2), torch.rand(4, 1))


def test_loss_lookup_by_name_and_clear_error():
    assert losses.get_gan_loss("minimax").generator is losses.g_minimax_loss
    with pytest.raises(ValueError, match=r"unknown loss 'nonsaturated'.*nonsaturating"):
        losses.get_gan_loss("nonsaturated")


def test_losses_keep_float64():
    out = losses.d_logistic_loss(REAL.double(), FAKE.double())
    assert out.dtype == torch.float64
