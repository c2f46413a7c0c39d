"""GAN losses as pure functions of discriminator outputs.

Every function takes the discriminator's raw outputs (logits for the logistic losses, critic
values for the Wasserstein and hinge losses), shape (B,), and returns a scalar to *minimise*.
Half-precision inputs (fp16, bf16) are upcast to float32 first, so under mixed precision a
loss is never reduced in half precision; float32 and float64 inputs keep their dtype.

Notation: D(x) = sigmoid(logit(x)). The identities used below:
    -log D(x)      = softplus(-logit(x))
    -log(1 - D(x)) = softplus(logit(x))
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.element_size() < 4 else x


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator's binary cross-entropy: -E[log D(x)] - E[log(1 - D(G(z)))].

    Goodfellow et al. 2014, Eq. 1 (the discriminator maximises V(D, G)).
    """
    return F.softplus(-_upcast(real_logits)).mean() + F.softplus(_upcast(fake_logits)).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: -E[log D(G(z))].

    Goodfellow et al. 2014, Section 3: "train G to maximize log D(G(z))", which gives strong
    gradients early in training when D rejects the fakes confidently.
    """
    return F.softplus(-_upcast(fake_logits)).mean()


def g_minimax_loss(fake_logits: Tensor) -> Tensor:
    """Minimax generator loss: E[log(1 - D(G(z)))], the generator's side of Eq. 1."""
    return -F.softplus(_upcast(fake_logits)).mean()


def d_wasserstein_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Critic's loss E[D(G(z))] - E[D(x)] (Arjovsky et al. 2017; Gulrajani et al. 2017, Eq. 3)."""
    return _upcast(fake_scores).mean() - _upcast(real_scores).mean()


def g_wasserstein_loss(fake_scores: Tensor) -> Tensor:
    """Generator's Wasserstein loss -E[D(G(z))]."""
    return -_upcast(fake_scores).mean()


def d_hinge_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Hinge loss E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1.0 - _upcast(real_scores)).mean() + F.relu(1.0 + _upcast(fake_scores)).mean()


def g_hinge_loss(fake_scores: Tensor) -> Tensor:
    """Generator's side of the hinge loss: -E[D(G(z))]."""
    return -_upcast(fake_scores).mean()


def d_least_squares_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """LSGAN discriminator loss with targets a=0 (fake), b=1 (real) (Mao et al. 2017, Eq. 2)."""
    return 0.5 * (_upcast(real_scores) - 1.0).pow(2).mean() + 0.5 * _upcast(fake_scores).pow(2).mean()


def g_least_squares_loss(fake_scores: Tensor) -> Tensor:
    """LSGAN generator loss with target c=1 (Mao et al. 2017, Eq. 2)."""
    return 0.5 * (_upcast(fake_scores) - 1.0).pow(2).mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, alpha: Tensor
) -> Tensor:
    """WGAN-GP penalty E[(||grad_x D(x_hat)||_2 - 1)^2] (Gulrajani et al. 2017, Eq. 3).

    x_hat = alpha * real + (1 - alpha) * fake, one alpha ~ U[0, 1] per sample, shape (B,).
    The norm is taken per sample over all non-batch dimensions. `create_graph=True` so the
    penalty is differentiable with respect to the critic's parameters. The gradient is taken
    in float32; callers under fp16 autocast should call this outside autocast.
    """
    if alpha.shape != real.shape[:1]:
        raise ValueError(f"alpha must have shape ({real.shape[0]},), one per sample; got {tuple(alpha.shape)}")
    a = alpha.view(-1, *([1] * (real.dim() - 1))).to(real.dtype)
    x_hat = (a * real.detach() + (1.0 - a) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(_upcast(scores).sum(), x_hat, create_graph=True)
    grad_norm = _upcast(grad.flatten(1)).norm(2, dim=1)
    return (grad_norm - 1.0).pow(2).mean()


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy -E[log softmax(logits)[label]], logits (B, K), integer labels (B,).

    MGAN's classifier term (Hoang et al. 2018, Eq. 2: -beta * sum_k pi_k E[log C_k(x)] over
    fakes x from generator k), and InfoGAN's categorical-code term (Chen et al. 2016, Eq. 4-5).
    """
    return F.cross_entropy(_upcast(logits), labels)


def gaussian_nll(mean: Tensor, log_std: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of `target` under a factored Gaussian, summed over dimensions and
    averaged over the batch: E[sum_j log(sigma_j) + (c_j - mu_j)^2 / (2 sigma_j^2) + log(2 pi) / 2].

    InfoGAN's term for continuous codes: Q(c | x) is a factored Gaussian (Chen et al. 2016,
    Section 6). Shapes (B, J).
    """
    mean, log_std, target = _upcast(mean), _upcast(log_std), _upcast(target)
    per_dim = log_std + 0.5 * ((target - mean) * torch.exp(-log_std)).pow(2) + 0.5 * math.log(2 * math.pi)
    return per_dim.sum(1).mean()


AGGREGATIONS = ("mean", "max", "softmax")


def aggregate_losses(losses: Tensor, mode: str = "mean", temperature: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """Combines K generator losses (K,) into one, and returns it with the weights used (K,).

    - "mean": the average (Hardy et al. 2019's MD-GAN);
    - "max": the largest, i.e. the harshest discriminator (GMAN, Durugkar et al. 2017);
    - "softmax": sum_i w_i L_i with w = softmax(temperature * L) (GMAN's soft-mean with lambda =
      `temperature`): temperature 0 gives the mean, a large one the max. The weights are part of
      the graph, as in GMAN, so a learned temperature receives a gradient.
    """
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"need a 1-d tensor of K >= 1 losses; got shape {tuple(losses.shape)}")
    losses = _upcast(losses)
    if mode == "mean":
        weights = torch.full_like(losses, 1.0 / losses.numel())
    elif mode == "max":
        weights = F.one_hot(losses.detach().argmax(), losses.numel()).to(losses.dtype)
    elif mode == "softmax":
        weights = torch.softmax(temperature * losses, dim=0)
    else:
        raise ValueError(f"unknown aggregation {mode!r}; choose one of {AGGREGATIONS}")
    return (weights * losses).sum(), weights


class GANLoss(NamedTuple):
    """A discriminator loss, the generator loss it is paired with, and the discriminator loss's
    real-data part.

    Every discriminator loss here is a sum of a real part and a fake part,
    discriminator(r, f) = discriminator_real(r) + (a function of f alone); `discriminator_real`
    is the first. Losses that look at the discriminator's response to real data from the
    generator's side (Unrolled GAN: the real term of the value function at the unrolled
    discriminator depends on G) need it.
    """

    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    discriminator_real: Callable[[Tensor], Tensor]


def d_logistic_real(real_logits: Tensor) -> Tensor:
    """The real part of `d_logistic_loss`: -E[log D(x)]."""
    return F.softplus(-_upcast(real_logits)).mean()


def d_wasserstein_real(real_scores: Tensor) -> Tensor:
    """The real part of `d_wasserstein_loss`: -E[D(x)]."""
    return -_upcast(real_scores).mean()


def d_hinge_real(real_scores: Tensor) -> Tensor:
    """The real part of `d_hinge_loss`: E[relu(1 - D(x))]."""
    return F.relu(1.0 - _upcast(real_scores)).mean()


def d_least_squares_real(real_scores: Tensor) -> Tensor:
    """The real part of `d_least_squares_loss`: E[(D(x) - 1)^2] / 2."""
    return 0.5 * (_upcast(real_scores) - 1.0).pow(2).mean()


# The adversarial objectives a model can select by name (e.g. `GAN(loss="minimax")`).
GAN_LOSSES: dict[str, GANLoss] = {
    "nonsaturating": GANLoss(d_logistic_loss, g_nonsaturating_loss, d_logistic_real),
    "minimax": GANLoss(d_logistic_loss, g_minimax_loss, d_logistic_real),
    "wasserstein": GANLoss(d_wasserstein_loss, g_wasserstein_loss, d_wasserstein_real),
    "hinge": GANLoss(d_hinge_loss, g_hinge_loss, d_hinge_real),
    "least_squares": GANLoss(d_least_squares_loss, g_least_squares_loss, d_least_squares_real),
}


# The score at which each objective's discriminator is undecided between real and fake (its accuracy counts real
# scores above it and fake scores below it); none for the Wasserstein critic, whose scores have no such point.
DECISION_THRESHOLDS: dict[str, float | None] = {"nonsaturating": 0.0, "minimax": 0.0, "hinge": 0.0,
                                                "least_squares": 0.5, "wasserstein": None}


def discriminator_accuracy(real_scores: Tensor, fake_scores: Tensor, threshold: float = 0.0) -> Tensor:
    """The share of a batch's real and fake samples the discriminator classifies right: real scores above
    `threshold`, fake scores at or below it, over both sets together (float32, no gradient)."""
    right = torch.cat([(real_scores.detach() > threshold).flatten(), (fake_scores.detach() <= threshold).flatten()])
    return right.float().mean()


def get_gan_loss(name: str) -> GANLoss:
    """Looks up an adversarial objective by name, with an error that lists the valid names."""
    try:
        return GAN_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(GAN_LOSSES)}") from None
