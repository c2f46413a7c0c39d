"""Generator regularisers against collapse, as pure functions; `GANBase` adds them to any variant's generator loss
(`entropy_weight`, `mode_seeking_weight`; see `GANBase.generator_regularization`).

- Entropy: G's loss minus lambda * H(batch), H the Kozachenko-Leonenko k-nearest-neighbour estimate of the
  differential entropy of the generated batch (Kozachenko & Leonenko 1987; in the form of Kraskov, Stoegbauer &
  Grassberger 2004, Eq. 20, with Euclidean balls):

      H = psi(N) - psi(k) + log V_d + (d / N) sum_i log r_i,   V_d = pi^(d/2) / Gamma(d/2 + 1),

  r_i the distance from sample i to its k-th nearest other sample. Differentiable in the samples: raising it
  pushes each sample away from its nearest neighbours, the direction a collapsing generator needs. MaEM-GAN (Liu
  et al., AAAI 2023) maximises a nearest-neighbour entropy estimate of the samples in a feature space; PresGAN
  (Dieng et al. 2019) instead adds noise to G's output and estimates the entropy of that noisy G with
  Hamiltonian Monte Carlo. This is the first kind, in data space or on D's features.
- Mode seeking (Mao, Lee, Tseng, Ma, Yang, CVPR 2019, MSGAN, Eq. 3-4, as their code computes it): for pairs of
  latents, ratio = mean |G(z1) - G(z2)| / mean |z1 - z2| (mean absolute differences over every coordinate of the
  pairs); G minimises lambda / (ratio + 1e-5), i.e. maximises the ratio. The pairs here are the first and second
  halves of the generated batch (MSGAN's code generates a second batch for them), and the latent distance is over
  the whole latent the model draws (InfoGAN's codes and MGAN's generator index included; MSGAN's conditional models
  take it over the noise alone).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

MODE_SEEKING_EPS = 1e-5  # MSGAN's code


def knn_entropy(x: Tensor, k: int = 1, eps: float = 1e-10) -> Tensor:
    """The Kozachenko-Leonenko estimate (nats) of the differential entropy of the distribution the rows of x (N, d)
    are drawn from (see the module docstring). Distances are sqrt(squared distance + eps^2), so exact duplicates give
    a large negative but finite value and finite gradients."""
    x = x.flatten(1)
    n, d = x.shape
    if not 1 <= k < n:
        raise ValueError(f"the k-NN entropy needs 1 <= k < N; got k {k} for {n} samples")
    # exact differences, not cdist's matrix-product shortcut: that loses the small distances between near-copies
    # (the regime the regulariser is for) to cancellation and clamps them to 0, with zero gradient
    squared = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    squared = squared + torch.diag(torch.full((n,), float("inf"), device=x.device, dtype=x.dtype))
    r = (squared.topk(k, dim=1, largest=False).values[:, k - 1] + eps * eps).sqrt()
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    digamma_difference = sum(1.0 / j for j in range(k, n))  # psi(N) - psi(k) for integers: 1/k + ... + 1/(N - 1)
    return digamma_difference + log_unit_ball + d * r.log().mean()


def mode_seeking_loss(fake: Tensor, latent: Tensor) -> tuple[Tensor, Tensor]:
    """MSGAN's term on the pairs (first half, second half) of a batch: 1 / (ratio + 1e-5), and the ratio
    mean |G(z1) - G(z2)| / mean |z1 - z2|."""
    half = fake.shape[0] // 2
    if half < 1:
        raise ValueError("mode seeking needs at least 2 samples a batch (it pairs the first half with the second)")
    ratio = (fake[:half] - fake[half: 2 * half]).abs().mean() / (latent[:half] - latent[half: 2 * half]).abs().mean()
    return 1.0 / (ratio + MODE_SEEKING_EPS), ratio
