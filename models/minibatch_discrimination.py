"""`MinibatchDiscriminationGAN`: the discriminator sees similarities within its batch.

Salimans et al. 2016, "Improved Techniques for Training GANs", Section 3.2. The mechanism
lives in the discriminator network (`models.networks.MinibatchDiscrimination`, enabled with
`minibatch_kernels > 0` in `MLPDiscriminator` and `DCGANDiscriminator`): a collapsed batch of
near-identical fakes has large minibatch features, which real batches do not, so D can reject
it and G is pushed to spread out. Real and fake batches go through D separately (as in the
paper's code), never mixed, so the features compare fakes with fakes and reals with reals. The
losses are the baseline's (non-saturating by default).
"""

from __future__ import annotations

from torch import nn

from .gan import GAN
from .networks import MinibatchDiscrimination


class MinibatchDiscriminationGAN(GAN):
    """A GAN whose discriminator must contain a `MinibatchDiscrimination` layer. Args as `GAN`."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, **kwargs):
        if not any(isinstance(m, MinibatchDiscrimination) for m in discriminator.modules()):
            raise ValueError(
                "MinibatchDiscriminationGAN needs a discriminator with a MinibatchDiscrimination layer: "
                "set minibatch_kernels > 0 on MLPDiscriminator or DCGANDiscriminator (e.g. "
                "--model.init_args.discriminator.init_args.minibatch_kernels 100)"
            )
        super().__init__(generator, discriminator, **kwargs)
