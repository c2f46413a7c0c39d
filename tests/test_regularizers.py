"""The generator regularisers: the k-NN entropy estimate against Gaussians of known entropy and a case worked by
hand, MSGAN's mode-seeking term by hand, and both wired into every model's generator loss."""

from __future__ import annotations

import math

import pytest
import torch

from models.regularizers import MODE_SEEKING_EPS, knn_entropy, mode_seeking_loss
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def gaussian_entropy(covariance: torch.Tensor) -> float:
    """0.5 log((2 pi e)^d det S), nats."""
    d = covariance.shape[0]
    return 0.5 * (d * math.log(2 * math.pi * math.e) + math.log(torch.linalg.det(covariance).item()))


@pytest.mark.parametrize("covariance, tolerance", [
    (torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64), 0.03),
    (0.25 * torch.eye(5, dtype=torch.float64), 0.1),
])
def test_knn_entropy_of_gaussian_samples_is_their_closed_form_entropy(covariance, tolerance):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, covariance.shape[0], generator=g, dtype=torch.float64) @ torch.linalg.cholesky(covariance).T
    assert knn_entropy(x).item() == pytest.approx(gaussian_entropy(covariance), abs=tolerance)


def test_knn_entropy_worked_by_hand():
    # 1-d points 0, 1, 3: nearest-neighbour distances 1, 1, 2; psi(3) - psi(1) = 1 + 1/2; V_1 = 2 (the segment
    # [-1, 1]); H = 1.5 + log 2 + (log 1 + log 1 + log 2) / 3
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    assert knn_entropy(x).item() == pytest.approx(1.5 + math.log(2) + math.log(2) / 3, abs=1e-9)
    # k = 2: distances 3, 2, 3; psi(3) - psi(2) = 1/2
    assert knn_entropy(x, k=2).item() == pytest.approx(0.5 + math.log(2) + (2 * math.log(3) + math.log(2)) / 3,
                                                       abs=1e-9)
    with pytest.raises(ValueError, match="needs 1 <= k < N"):
        knn_entropy(x, k=3)


def test_knn_entropy_pushes_close_samples_apart_and_stays_finite_on_copies():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(knn_entropy(x), x)
    assert grad[0, 0] < 0 < grad[1, 0]  # raising the entropy moves the close pair apart
    copies = torch.zeros(8, 2, requires_grad=True)
    value = knn_entropy(copies)
    (grad,) = torch.autograd.grad(value, copies)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_knn_entropy_keeps_the_small_distances_of_near_copies_far_from_the_origin():
    """Near-copies with a large norm (float32, 64-d, spread 1e-3 around 100): the estimate equals the formula on
    distances taken in float64 by exact differences, with a gradient to push them apart (cdist's float32
    matrix-product shortcut rounds these distances to 0: an estimate of about -1,500 and no gradient)."""
    g = torch.Generator().manual_seed(0)
    x = (100 + 1e-3 * torch.randn(128, 64, generator=g)).requires_grad_()
    x64 = x.detach().double()
    exact = (x64.unsqueeze(1) - x64.unsqueeze(0)).pow(2).sum(-1) + torch.diag(torch.full((128,), float("inf"),
                                                                                        dtype=torch.float64))
    r = exact.min(1).values.sqrt()
    by_hand = sum(1.0 / j for j in range(1, 128)) + 32 * math.log(math.pi) - math.lgamma(33) + 64 * r.log().mean()
    value = knn_entropy(x)
    assert value.item() == pytest.approx(by_hand.item(), abs=1e-3)
    (grad,) = torch.autograd.grad(value, x)
    assert grad.norm() > 0


def test_regularisers_on_the_discriminators_features_take_its_own_input_form():
    """PacGAN's D features come from packed groups and VEEGAN's from (F(x), x) pairs, so both regularise."""
    for name in ("PacGAN", "VEEGAN"):
        torch.manual_seed(0)
        model = tiny_model(name, entropy_weight=0.1, entropy_space="features")
        latent = model.sample_latent(16)
        fake = model.generate(latent)
        rows = 16 // model.packing
        assert model.discriminator_features(fake).shape[0] == rows
        _, logs = model.regularized_generator_loss(torch.randn(16, 2), fake, latent)
        assert torch.isfinite(logs["entropy"]), name


def test_mode_seeking_term_worked_by_hand():
    # pairs (0, 2) and (1, 5) of G, from latents (0, 1) and (0, 2): ratio = mean(2, 4) / mean(1, 2) = 2
    fake, latent = torch.tensor([[0.0], [1.0], [2.0], [5.0]]), torch.tensor([[0.0], [0.0], [1.0], [2.0]])
    loss, ratio = mode_seeking_loss(fake, latent)
    assert ratio.item() == 2.0 and loss.item() == pytest.approx(1 / (2 + MODE_SEEKING_EPS))
    # MSGAN's ratio is of mean absolute differences over every element, which a 2-d G on 3-d latents tells apart
    # from norms or sums: G pairs differ by (2, 1) and (0, 3) (mean |.| 6 / 4 = 1.5), latents by (1, 0, 0) and
    # (1, 0, 2) (4 / 6): ratio 2.25 (mean L2 norms would give 2.618 / 1.618 = 1.618; sums 6 / 4 = 1.5)
    fake = torch.tensor([[0.0, 0.0], [1.0, 3.0], [2.0, 1.0], [1.0, 0.0]])
    latent = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    loss, ratio = mode_seeking_loss(fake, latent)
    assert ratio.item() == pytest.approx(2.25) and loss.item() == pytest.approx(1 / (2.25 + MODE_SEEKING_EPS))


@pytest.mark.parametrize("name", ["GAN", "MGAN", "InfoGAN", "VEEGAN"])
def test_every_model_minimises_its_loss_minus_the_entropy_plus_the_mode_seeking_term(name):
    torch.manual_seed(0)
    model = tiny_model(name, entropy_weight=0.5, mode_seeking_weight=0.1)
    real = torch.randn(16, 2)
    latent = model.sample_latent(16)
    fake = model.generate(latent)
    plain, _ = model.generator_loss(real, fake, latent)
    total, logs = model.regularized_generator_loss(real, fake, latent)
    ms, ratio = mode_seeking_loss(fake, latent)
    assert total.item() == pytest.approx(plain.item() - 0.5 * knn_entropy(fake).item() + 0.1 * ms.item(), rel=1e-5)
    assert logs["entropy"].item() == pytest.approx(knn_entropy(fake).item()) and logs["mode_seeking_ratio"] == ratio
    model.entropy_weight = model.mode_seeking_weight = 0.0  # switched off (e.g. by a callback): the plain loss
    assert model.regularized_generator_loss(real, fake, latent)[0].item() == pytest.approx(plain.item())


def test_a_run_with_both_regularisers_trains_and_logs_them():
    torch.manual_seed(0)
    model = tiny_model("GAN", entropy_weight=0.1, mode_seeking_weight=0.1, entropy_space="features")
    trainer = quiet_trainer(max_steps=20, log_every_n_steps=1)
    trainer.fit(model, tiny_ring())
    assert model.g_steps == 10 and all(torch.isfinite(p).all() for p in model.parameters())
    assert {"train/entropy", "train/mode_seeking_ratio"} <= set(trainer.logged_metrics)


@pytest.mark.parametrize("kwargs, message", [
    ({"entropy_weight": -1.0}, "entropy_weight must be a finite number >= 0"),
    ({"mode_seeking_weight": float("inf")}, "mode_seeking_weight must be a finite number >= 0"),
    ({"entropy_space": "pixels"}, "entropy_space must be 'data' or 'features'"),
])
def test_bad_regulariser_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model("GAN", **kwargs)
