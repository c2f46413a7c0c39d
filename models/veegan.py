"""`VEEGAN`: a reconstructor network maps data back to noise, and the discriminator judges (noise, data) pairs.

Srivastava, Valkov, Russell, Gutmann, Sutton 2017, "VEEGAN: Reducing Mode Collapse in GANs using Implicit
Variational Learning", Algorithm 1, as the authors' 2D code (akashgit/VEEGAN, VEEGAN_2D_RING.ipynb) trains it:

    z ~ N(0, I) (code_dim), eps ~ N(0, I) (extra_noise_dim; G's input, never reconstructed), x_fake = G([z, eps])
    F(x): the mean of the reconstructor's Normal(F(x), reconstructor_std^2 I) over z
    D step:  minimise mean(softplus(-D([z, x_fake]))) + mean(softplus(D([z_r, x_real]))),  z_r ~ Normal(F(x_real), s^2)
             (sigmoid cross-entropy: generated pairs labelled 1, data pairs 0)
    G and F: minimise mean(D([z, x_fake])) + mean(0.5 * sum_j (z_j - F(x_fake)_j)^2)
             (the raw logit, an estimate of log q(z, x) / p(z, x) for the generated pair, plus the negative
             log-likelihood of z under F's unit-variance Normal, its constant dropped)

A generator that collapses maps many z to one x; F cannot then reconstruct them, so the reconstruction term
rises and pushes G to spread its codes over the data (the paper's Section 3). The generator's optimiser steps G
and F together; F learns from the reconstruction term only (D's data pairs enter the discriminator's loss alone).
The authors' code uses one Adam object for both updates and runs them simultaneously (both gradients at one point);
here each player has its own Adam (same settings) and `simultaneous: true` gives the simultaneous update: D's data
pairs are drawn from F before G and F step, so both gradients are taken at the same parameters.

The discriminator is a network on the pair flattened and concatenated, noise first, that states its `in_dim`: an
MLP or maxout network for vectors (in_dim = code_dim + the data's size), `DCGANPairDiscriminator` for images (a
DCGAN trunk on the image, joined with an embedding of z). The reconstructor is any network from data (flattened)
to code_dim outputs: an MLP for vectors, `DCGANEncoder` for images.
"""

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import GANBase
from .losses import discriminator_accuracy
from .arguments import NonNegativeFloat, NonNegativeInt, PositiveInt


class VEEGAN(GANBase):
    """VEEGAN. Args as `GANBase`, plus:

    Args:
        reconstructor: F, data (B, *data_shape), flattened, -> the mean of z (B, code_dim).
        extra_noise_dim: the generator's latents that F does not reconstruct (the last ones; the authors' 2D
            code: 1 of 255). code_dim = latent_dim - extra_noise_dim.
        reconstructor_std: the std of F's Normal over z, from which the data pairs' z are drawn (the authors'
            code: 1); 0 pairs data with F's mean.
    """

    network_arguments = ("generator", "discriminator", "reconstructor")

    def __init__(self, generator: nn.Module, discriminator: nn.Module, reconstructor: nn.Module,
                 extra_noise_dim: NonNegativeInt = 0, reconstructor_std: NonNegativeFloat = 1.0,
                 latent_dim: Optional[PositiveInt] = None,
                 **kwargs: Any):
        if not isinstance(extra_noise_dim, int) or isinstance(extra_noise_dim, bool) or extra_noise_dim < 0:
            raise ValueError(f"extra_noise_dim must be an integer >= 0 (latents F does not reconstruct); "
                             f"got {extra_noise_dim!r}")
        if not (isinstance(reconstructor_std, (int, float)) and math.isfinite(reconstructor_std)
                and reconstructor_std >= 0):
            raise ValueError(f"reconstructor_std must be a finite number >= 0; got {reconstructor_std!r}")
        # a plain attribute until nn.Module is set up; configure_networks registers it
        object.__setattr__(self, "_pending_reconstructor", reconstructor)
        super().__init__(generator, discriminator, latent_dim=latent_dim, **kwargs)
        self.record_network_configs(reconstructor=reconstructor)
        self.extra_noise_dim, self.reconstructor_std = extra_noise_dim, float(reconstructor_std)
        self.code_dim = self.latent_dim - extra_noise_dim
        if self.code_dim < 1:
            raise ValueError(f"extra_noise_dim {extra_noise_dim} leaves no latent to reconstruct: the generator's "
                             f"latent_dim is {self.latent_dim}; make extra_noise_dim smaller")
        # F outputs the reconstructed latents; an image pair D splits its input after them
        for role, network, key in (("reconstructor", reconstructor, "out_dim"), ("discriminator", discriminator, "code_dim")):
            value = getattr(network, key, None)
            if value is not None and value != self.code_dim:
                raise ValueError(f"the {role}'s {key} is {value}, but VEEGAN reconstructs {self.code_dim} latents "
                                 f"(latent_dim {self.latent_dim} - extra_noise_dim {extra_noise_dim}): set "
                                 f"{role}.init_args.{key} to {self.code_dim}")
        in_dim = getattr(discriminator, "in_dim", None)
        if in_dim is None:
            raise ValueError(f"VEEGAN's discriminator judges flat (z, x) pairs and needs an `in_dim` (an MLP or maxout "
                             f"network, in_dim = {self.code_dim} + the data's size, or models.DCGANPairDiscriminator for "
                             f"images); {type(discriminator).__name__} has none")
        if in_dim <= self.code_dim:
            raise ValueError(f"the discriminator judges (z, x) pairs: its in_dim must be {self.code_dim} (z) plus "
                             f"the data's size; got in_dim {in_dim}")

    def configure_networks(self) -> None:
        self.reconstructor = self.__dict__.pop("_pending_reconstructor")

    def generator_parameters(self) -> list[nn.Parameter]:
        return [*self.generator.parameters(), *self.reconstructor.parameters()]

    # ------------------------------------------------------------------ the pair and its parts
    def code(self, latent: Tensor) -> Tensor:
        """The reconstructed part z of G's latents (the first code_dim)."""
        return latent[:, : self.code_dim]

    def reconstruct(self, x: Tensor) -> Tensor:
        """F(x): the mean of z given x, (B, code_dim)."""
        return self.reconstructor(x.flatten(1))

    def pair_scores(self, z: Tensor, x: Tensor) -> Tensor:
        """D's logits (B,) for the pairs (z, x), concatenated noise first: > 0 says 'generated'."""
        return self.discriminator(torch.cat([z, x.flatten(1)], dim=1))

    def data_codes(self, x: Tensor, rng: Optional[torch.Generator] = None) -> Tensor:
        """z for data x: a draw from Normal(F(x), reconstructor_std^2 I) (F's mean when the std is 0)."""
        mean = self.reconstruct(x)
        if self.reconstructor_std == 0:
            return mean
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=rng)
        return mean + self.reconstructor_std * noise

    # ------------------------------------------------------------------ losses
    def generator_step(self, optimizer, real: Tensor, fake: Tensor, latent: Tensor) -> dict[str, Tensor]:
        if self.generator_steps_first():  # simultaneous: D's data pairs come from F before G and F step
            with torch.no_grad():
                self._data_codes = self.data_codes(real, rng=self.noise)
        return super().generator_step(optimizer, real, fake, latent)

    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        fake_scores = self.pair_scores(self.code(latent), fake)
        codes = self.__dict__.pop("_data_codes", None)  # drawn before a simultaneous G step, else now
        real_scores = self.pair_scores(codes if codes is not None else self.data_codes(real, rng=self.noise), real)
        loss = F.softplus(-fake_scores).mean() + F.softplus(real_scores).mean()
        # D says "generated" with a positive logit: it is right on data pairs below 0 and generated pairs above
        return loss, {"d_real": real_scores.detach().float().mean(), "d_fake": fake_scores.detach().float().mean(),
                      "d_accuracy": discriminator_accuracy(-real_scores, -fake_scores)}

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.code(latent)
        adversarial = self.pair_scores(z, fake).mean()
        reconstruction = 0.5 * (z - self.reconstruct(fake)).pow(2).sum(dim=1).mean()
        return adversarial + reconstruction, {"adversarial": adversarial.detach(),
                                              "reconstruction": reconstruction.detach()}

    def reports_discriminator_accuracy(self) -> bool:
        return True

    def discriminator_features(self, x: Tensor) -> Tensor:
        """D's trunk features of the pairs (F(x), x), x paired with its reconstruction's mean."""
        return self.discriminator.features(torch.cat([self.reconstruct(x), x.flatten(1)], dim=1))

    def discriminate(self, x: Tensor) -> Tensor:
        """D's logits for data x paired with F's mean for it (the pairing used to check shapes)."""
        return self.pair_scores(self.reconstruct(x), x)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Mean D logit on held-out data pairs (z drawn from F) and on generated pairs (z, G(z))."""
        real = self.unpack_batch(batch)
        rng = self.evaluation_rng()
        latent = self.sample_latent(real.shape[0], rng=rng)
        fake = self.sample(real.shape[0], z=latent)
        self.log("val/d_real", self.pair_scores(self.data_codes(real, rng=rng), real).float().mean(), sync_dist=True)
        self.log("val/d_fake", self.pair_scores(self.code(latent), fake).float().mean(), sync_dist=True)
