"""`D2GAN`: two discriminators, one rewarding data (KL) and one rewarding samples (reverse KL).

Nguyen, Le, Vu, Phung 2017, "Dual Discriminator Generative Adversarial Nets", Eq. 1, as the authors' code
(tund/D2GAN, models.py) trains it. D1 and D2 have positive outputs (softplus of the network's score):

    D1 loss: mean(-alpha log D1(x) + D1(G(z)))     D2 loss: mean(D2(x) - beta log D2(G(z)))
    D step:  minimise D1 loss + D2 loss (one optimiser over both)
    G loss:  mean(-D1(G(z)) + beta log D2(G(z)))

At the optimal discriminators G minimises alpha KL(P_data || P_G) + beta KL(P_G || P_data) (the paper's
Theorem 2): the KL term spreads G over every mode of the data, the reverse-KL term keeps it on them. The code's
defaults are alpha = beta = 1; Adam 2e-4, beta1 0.5 for both; a fresh z for the generator step.

D2 is a copy of the configured discriminator with its own initial weights.
"""

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import GANBase
from .networks import reinitialise
from .arguments import PositiveFloat


def log_softplus(a: Tensor) -> Tensor:
    """log(softplus(a)), finite for every finite a (softplus underflows to 0 below about -88 in float32, where
    log(softplus(a)) = a - e^a / 2 + ... = a to float precision)."""
    return torch.where(a < -20, a, F.softplus(a.clamp(min=-20)).log())  # the clamp keeps the unused branch's
    # gradient finite (0 * inf would be NaN)


class D2GAN(GANBase):
    """D2GAN. Args as `GANBase`, plus:

    Args:
        alpha: weight of log D1 on data (the KL term).
        beta: weight of log D2 on samples (the reverse-KL term).
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, alpha: PositiveFloat = 1.0, beta: PositiveFloat = 1.0,
                 **kwargs):
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 (a weight of the D2GAN objective); got {value!r}")
        super().__init__(generator, discriminator, **kwargs)
        self.alpha, self.beta = float(alpha), float(beta)

    def configure_networks(self) -> None:
        self.discriminator2 = copy.deepcopy(self.discriminator)
        reinitialise(self.discriminator2)  # its own initial weights, drawn as D1's were

    def discriminator_modules(self) -> list[nn.Module]:
        return [self.discriminator, self.discriminator2]

    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        a1_real, a1_fake = self.discriminator(real), self.discriminator(fake)
        a2_real, a2_fake = self.discriminator2(real), self.discriminator2(fake)
        d1 = (-self.alpha * log_softplus(a1_real) + F.softplus(a1_fake)).mean()
        d2 = (F.softplus(a2_real) - self.beta * log_softplus(a2_fake)).mean()
        return d1 + d2, {"d1_loss": d1.detach(), "d2_loss": d2.detach(),
                         "d_real": a1_real.detach().float().mean(), "d_fake": a1_fake.detach().float().mean()}

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = (-F.softplus(self.discriminator(fake)) + self.beta * log_softplus(self.discriminator2(fake))).mean()
        return loss, {}

    def discriminator_loss_nonnegative(self) -> bool:  # -alpha log D1(x) and -beta log D2(G(z)) go below 0
        return False
