"""GAN variants (one file each), their shared base, pure losses and networks."""

from . import losses
from .base import GANBase, NonFiniteLossError
from .gan import GAN
from .minibatch_gan import MinibatchDiscriminationGAN
from .networks import DCGANDiscriminator, DCGANGenerator, MinibatchDiscrimination, MLPDiscriminator, MLPGenerator
from .unrolled_gan import UnrolledGAN
from .wgan_gp import WGANGP

__all__ = [
    "GANBase",
    "GAN",
    "WGANGP",
    "UnrolledGAN",
    "MinibatchDiscriminationGAN",
    "MinibatchDiscrimination",
    "NonFiniteLossError",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "losses",
]
