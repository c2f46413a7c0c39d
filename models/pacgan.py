"""`PacGAN`: the discriminator judges m samples at once.

Lin, Khetan, Fanti, Oh 2018, "PacGAN: The power of two samples in generative adversarial networks",
Section 3: with packing m, D maps m samples, all real or all generated, to one score; G and the loss are the
GAN's (any loss of `models.losses.GAN_LOSSES`). A generator that drops modes makes packed fakes whose joint
distribution differs from the real one far more than single samples do, so D sees the collapse.

Packing here: a batch of m * B samples is m consecutive blocks of B (block j holds the j-th sample of each
group); group i is [x_i, x_{B+i}, ..., x_{(m-1)B+i}], concatenated along features (MLP: width m * D) or stacked
on channels (images: m * C channels). The authors' code makes its fakes the same way (G called m times on B
latents each, the outputs concatenated column-wise); with the 2D networks of `models.pacgan_networks` each of
the m blocks is normalised by its own BatchNorm statistics, as those m calls were. m = 1 is the GAN exactly.

The real batch must hold m * B samples: a PacGAN m protocol sets the data's batch_size to m times the GAN's.
"""

from typing import Optional

from torch import Tensor, nn

from .gan import GAN
from .pacgan_networks import BlocksBatchNorm1d
from .arguments import GANLossName, PositiveInt


def pack(x: Tensor, m: int) -> Tensor:
    """(m * B, *shape) -> (B, m * shape[0], *shape[1:]): group i holds samples i, B + i, ..., (m - 1) B + i."""
    if x.shape[0] % m:
        raise ValueError(f"a batch of {x.shape[0]} samples cannot be packed in groups of {m}: make the data's "
                         f"batch_size (data.init_args.batch_size) a multiple of the packing {m}")
    return x.unflatten(0, (m, -1)).transpose(0, 1).flatten(1, 2)


class PacGAN(GAN):
    """A GAN whose discriminator scores groups of `packing` samples.

    Args:
        packing: m, the samples per discriminator score (PacGAN2, 3, 4: 2, 3, 4). The discriminator's input
            must be m samples wide (MLP: in_dim = m * data dim; convolutional: m * channels).
        Other arguments: see `GAN` and `GANBase`.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, packing: PositiveInt = 2,
                 loss: GANLossName = "nonsaturating", latent_dim: Optional[PositiveInt] = None, **kwargs):
        if not isinstance(packing, int) or isinstance(packing, bool) or packing < 1:
            raise ValueError(f"packing must be an integer >= 1 (samples per discriminator score); got {packing!r}")
        super().__init__(generator, discriminator, loss=loss, latent_dim=latent_dim, **kwargs)
        self.packing = packing
        for module in self.generator.modules():  # m blocks of a batch: m calls of the authors' G
            if isinstance(module, BlocksBatchNorm1d):
                module.groups = packing

    def discriminate(self, x: Tensor) -> Tensor:
        return self.discriminator(pack(x, self.packing))

    def discriminator_features(self, x: Tensor) -> Tensor:
        """D's trunk features of the packed groups: one row per group of `packing` samples."""
        return self.discriminator.features(pack(x, self.packing))
