"""GAN variants (one file each), their shared base, pure losses and networks."""

from . import losses
from .base import GANBase, NonFiniteLossError
from .gan import GAN
from .networks import DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator

__all__ = [
    "GANBase",
    "GAN",
    "NonFiniteLossError",
    "MLPGenerator",
    "MLPDiscriminator",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "losses",
]
