"""GAN variants (one file each), their shared base, pure losses and networks."""

from . import losses
from .base import GANBase
from .runtime import NonFiniteLossError
from .d2gan import D2GAN
from .gan import GAN
from .infogan import InfoGAN
from .mdgan import MDGAN
from .mgan import MGAN
from .minibatch_discrimination import MinibatchDiscriminationGAN
from .pacgan import PacGAN
from .pacgan_networks import BatchNormMLPGenerator, BlocksBatchNorm1d, Maxout, MaxoutDiscriminator
from .networks import (
    DCGANDiscriminator,
    DCGANEncoder,
    DCGANGenerator,
    DCGANPairDiscriminator,
    MinibatchDiscrimination,
    MLPDiscriminator,
    MLPGenerator,
    PerGeneratorLinear,
)
from .unrolled_gan import UnrolledGAN
from .veegan import VEEGAN
from .wgan_gp import WGANGP

__all__ = [
    "GANBase",
    "GAN",
    "WGANGP",
    "UnrolledGAN",
    "MinibatchDiscriminationGAN",
    "MGAN",
    "MDGAN",
    "InfoGAN",
    "D2GAN",
    "PacGAN",
    "VEEGAN",
    "BatchNormMLPGenerator",
    "BlocksBatchNorm1d",
    "Maxout",
    "MaxoutDiscriminator",
    "PerGeneratorLinear",
    "MinibatchDiscrimination",
    "NonFiniteLossError",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "DCGANEncoder",
    "DCGANPairDiscriminator",
    "losses",
]
