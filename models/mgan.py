"""`MGAN`: a mixture of generators with a classifier that pushes them apart.

Hoang, Nguyen, Le, Phung, "MGAN: Training Generative Adversarial Nets with Multiple
Generators", ICLR 2018, Eq. 2 and Section 3.2:

    min_{G_1..G_K, C} max_D  E_x[log D(x)] + E_{x ~ p_model}[log(1 - D(x))]
                             - beta * sum_k pi_k E_{x ~ p_Gk}[log C_k(x)],

with p_model the uniform mixture (pi_k = 1/K) of the K generators. In practice:
- D: binary cross-entropy, real against the mixture's fakes;
- C: cross-entropy on which generator made each fake (C's minimiser does not depend on beta;
  it is trained on the unweighted cross-entropy, together with D, as they share a trunk);
- G_k: the non-saturating loss plus beta times the same cross-entropy, so each generator is
  rewarded for making samples the classifier can tell apart from the other generators'.

Parameter sharing (Section 3.2): the generators share every layer but the first
(`MLPGenerator(num_generators=K)` / `DCGANGenerator(num_generators=K)`, whose first layer is a
`PerGeneratorLinear`), and D and C share every layer but the last: C is a linear head on
`discriminator.features(x)`, D's own head is `discriminator.score`. beta = 0.01 and K = 10 are
the paper's defaults.

Latents: z = [noise, one_hot(k)], so `sample(n, z=...)` and the fixed `val_z` carry the
generator index. Training batches assign generators in equal numbers (a random permutation of
0..K-1 repeated), as the authors' code draws the same number of fakes from every generator;
`sample(n, generator_index=k)` draws from one generator.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GANBase
from .losses import classification_loss, d_logistic_loss, g_nonsaturating_loss
from .networks import require_trunk
from .arguments import NonNegativeFloat, PositiveFloat


class MGAN(GANBase):
    """MGAN. Args as `GANBase`, plus:

    Args:
        generator: a mixture generator with `num_generators = K > 1`, `latent_dim` (the noise
            size) and `forward(noise, index)`.
        discriminator: a `TrunkDiscriminator` (`features(x)`, `score(features)`, `feature_dim`).
        beta: weight of the classifier's cross-entropy in the generators' loss.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        beta: NonNegativeFloat = 0.01,
        g_lr: PositiveFloat = 2e-4,
        d_lr: PositiveFloat = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        **kwargs,
    ):
        num_generators = getattr(generator, "num_generators", 1)
        if num_generators < 2:
            raise ValueError(
                "MGAN needs a mixture generator: set num_generators = K >= 2 on the generator (e.g. "
                "--model.init_args.generator.init_args.num_generators 10)"
            )
        require_trunk(discriminator, "MGAN", "the classifier")
        if beta < 0:
            raise ValueError(f"beta must be >= 0; got {beta}")
        self.num_generators = num_generators
        self.noise_dim = generator.latent_dim
        # latent_dim is noise + K; a checkpoint's hyperparameters hold that value, which is accepted
        if kwargs.pop("latent_dim", None) not in (None, self.noise_dim + num_generators):
            raise ValueError("MGAN's latent is the generator's noise plus a one-hot generator index; set the "
                             "generator's latent_dim (the noise size) instead of the model's latent_dim")
        super().__init__(generator, discriminator, latent_dim=self.noise_dim + num_generators, g_lr=g_lr,
                         d_lr=d_lr, betas=betas, **kwargs)
        self.beta = beta

    def configure_networks(self) -> None:
        # C and D share every layer but the last: C is a linear K-way head on D's features
        self.classifier = nn.Linear(self.discriminator.feature_dim, self.num_generators)

    def discriminator_modules(self) -> list[nn.Module]:
        return [self.discriminator, self.classifier]

    # ------------------------------------------------------------------ latents
    def sample_latent(self, n: int, rng: Optional[torch.Generator] = None,
                      generator_index: Optional[int] = None) -> Tensor:
        noise = torch.randn(n, self.noise_dim, device=self.device, generator=rng)
        if generator_index is None:  # every generator equally often, in random order
            index = torch.randperm(n, device=self.device, generator=rng) % self.num_generators
        else:
            if not 0 <= generator_index < self.num_generators:
                raise ValueError(f"generator_index must be in [0, {self.num_generators}); got {generator_index}")
            index = torch.full((n,), generator_index, device=self.device, dtype=torch.long)
        return torch.cat([noise, F.one_hot(index, self.num_generators).to(noise.dtype)], dim=1)

    def generator_index(self, z: Tensor) -> Tensor:
        """Which generator each latent goes to, (B,) integers."""
        return z[:, self.noise_dim :].argmax(1)

    def generate(self, z: Tensor) -> Tensor:
        return self.generator(z[:, : self.noise_dim], self.generator_index(z))

    @torch.no_grad()
    def sample(self, n: int, z: Optional[Tensor] = None, rng: Optional[torch.Generator] = None,
               generator_index: Optional[int] = None) -> Tensor:
        """n samples from the mixture, or from generator `generator_index` alone."""
        if z is None:
            z = self.sample_latent(n, rng=rng, generator_index=generator_index)
        return super().sample(n, z=z)

    # ------------------------------------------------------------------ losses
    def discriminator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        index = self.generator_index(latent)
        real_scores = self.discriminator(real)
        fake_features = self.discriminator.features(fake)
        fake_scores = self.discriminator.score(fake_features)
        logits = self.classifier(fake_features)
        adversarial = d_logistic_loss(real_scores, fake_scores)
        classifier = classification_loss(logits, index)
        logs = {
            "d_adversarial": adversarial.detach(),
            "classifier_loss": classifier.detach(),
            "classifier_acc": (logits.detach().argmax(1) == index).float().mean(),
            "d_real": real_scores.detach().float().mean(),
            "d_fake": fake_scores.detach().float().mean(),
        }
        return adversarial + classifier, logs

    def generator_loss(self, real: Tensor, fake: Tensor, latent: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        index = self.generator_index(latent)
        features = self.discriminator.features(fake)
        adversarial = g_nonsaturating_loss(self.discriminator.score(features))
        classifier = classification_loss(self.classifier(features), index)
        return adversarial + self.beta * classifier, {"g_adversarial": adversarial.detach(), "g_classifier": classifier.detach()}
