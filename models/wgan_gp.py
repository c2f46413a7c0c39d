"""`WGANGP`: Wasserstein GAN with gradient penalty.

Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", Algorithm 1 and Eq. 3:

    L_D = E[D(G(z))] - E[D(x)] + lambda * E[(||grad_x_hat D(x_hat)||_2 - 1)^2],
    x_hat = eps * x + (1 - eps) * G(z),  eps ~ U[0, 1] per sample,
    L_G = -E[D(G(z))],

with n_critic = 5 critic steps per generator step, lambda = 10, Adam lr 1e-4 and betas (0, 0.9)
(the paper) or (0.5, 0.9) (its DCGAN code). The critic has no sigmoid: pass a discriminator
whose output is a raw score (all networks in models.networks are). The authors' 2D toy code
used lambda = 0.1; the 2D configs say which they use.

Mixed precision: the penalty is computed in float32 with autocast off (critic forward on the
interpolates and the input gradient), so under 16-mixed the gradient of D(x_hat) cannot
underflow or overflow in half precision, and no loss scale enters `autograd.grad`; the total
loss is then scaled by Lightning's GradScaler in `manual_backward` as usual. Under bf16-mixed
the same code runs unchanged.

The generator step draws its own z (Algorithm 1, line 11: a fresh batch of latents, not the
critic step's fakes): `fresh_generator_latents` defaults to True here.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from .base import GANBase
from .losses import d_wasserstein_loss, g_wasserstein_loss, gradient_penalty
from .arguments import NonNegativeFloat, PositiveFloat, PositiveInt


class WGANGP(GANBase):
    """WGAN-GP. Args as `GANBase`, plus `gp_weight` (lambda, the penalty's weight)."""

    double_backward_through_discriminator = True  # the penalty differentiates grad_x D(x)

    def discriminator_loss_nonnegative(self) -> bool:  # a critic's loss is E[D(G(z))] - E[D(x)] + penalty: any sign
        return False

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        gp_weight: NonNegativeFloat = 10.0,
        latent_dim: Optional[PositiveInt] = None,
        n_critic: PositiveInt = 5,
        g_lr: PositiveFloat = 1e-4,
        d_lr: PositiveFloat = 1e-4,
        betas: tuple[float, float] = (0.0, 0.9),
        fresh_generator_latents: bool = True,
        **kwargs,
    ):
        if gp_weight < 0:
            raise ValueError(f"gp_weight (lambda) must be >= 0; got {gp_weight}")
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
            # Gulrajani et al. 2017, Section 4: batch norm makes D(x_i) depend on the other
            # samples, so the per-sample gradient penalty is no longer per sample.
            raise ValueError(
                "WGANGP's critic must not use BatchNorm (the gradient penalty is per sample); use "
                "DCGANDiscriminator(norm='layer') or norm='none'"
            )
        super().__init__(generator, discriminator, latent_dim=latent_dim, n_critic=n_critic, g_lr=g_lr,
                         d_lr=d_lr, betas=betas, fresh_generator_latents=fresh_generator_latents, **kwargs)
        self.gp_weight = gp_weight

    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        real_scores, fake_scores = self.discriminator(real), self.discriminator(fake)
        wasserstein = d_wasserstein_loss(real_scores, fake_scores)
        alpha = torch.rand(real.shape[0], device=self.device, generator=self.noise)
        with torch.autocast(device_type=self.device.type, enabled=False):
            penalty = gradient_penalty(lambda x: self.discriminator(x), real.float(), fake.float(), alpha)
        logs = {"wasserstein_distance": -wasserstein.detach(), "gradient_penalty": penalty.detach()}
        return wasserstein + self.gp_weight * penalty, logs

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return g_wasserstein_loss(self.discriminator(fake)), {}
