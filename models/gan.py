"""`GAN`: the vanilla GAN / DCGAN baseline.

Goodfellow et al. 2014, "Generative Adversarial Nets", Eq. 1 and Section 3 (non-saturating
generator loss); with the DCGAN networks, Radford et al. 2016. The loss is selectable by name
from `models.losses.GAN_LOSSES`: "nonsaturating" (default), "minimax" (Eq. 1 as written),
"hinge", "least_squares", "wasserstein" (without a Lipschitz constraint; see WGANGP for one).
"""

from typing import Optional

from torch import Tensor, nn

from .base import GANBase
from .losses import DECISION_THRESHOLDS, discriminator_accuracy, get_gan_loss
from .arguments import GANLossName, PositiveFloat, PositiveInt


class GAN(GANBase):
    """The baseline: one generator, one discriminator, an adversarial loss chosen by name.

    Args:
        loss: name of the adversarial objective (see `models.losses.GAN_LOSSES`).
        Other arguments: see `GANBase`.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLossName = "nonsaturating",
        latent_dim: Optional[PositiveInt] = None,
        n_critic: PositiveInt = 1,
        g_lr: PositiveFloat = 2e-4,
        d_lr: PositiveFloat = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        **kwargs,
    ):
        loss_fns = get_gan_loss(loss)  # fails fast on an unknown name
        super().__init__(generator, discriminator, latent_dim=latent_dim, n_critic=n_critic, g_lr=g_lr,
                         d_lr=d_lr, betas=betas, **kwargs)
        self.loss_fns = loss_fns

    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_scores, fake_scores = self.discriminate(real), self.discriminate(fake)
        loss = self.loss_fns.discriminator(real_scores, fake_scores)
        logs = {"d_real": real_scores.detach().float().mean(), "d_fake": fake_scores.detach().float().mean()}
        threshold = DECISION_THRESHOLDS[self.hparams.loss]
        if threshold is not None:
            logs["d_accuracy"] = discriminator_accuracy(real_scores, fake_scores, threshold)
        return loss, logs

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss_fns.generator(self.discriminate(fake)), {}

    def discriminator_loss_nonnegative(self) -> bool:
        return self.hparams.loss != "wasserstein"

    def reports_discriminator_accuracy(self) -> bool:
        return type(self).discriminator_loss is GAN.discriminator_loss and DECISION_THRESHOLDS[self.hparams.loss] is not None
