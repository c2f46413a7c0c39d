"""LightningDataModules shared by every model. Each describes its data (shape, modes, classes)."""

from .gaussian_mixture import GaussianMixture2D, Grid, Ring
from .images import CIFAR10, MNIST, ImageFolder, StackedMNIST, read_idx, write_idx

__all__ = ["GaussianMixture2D", "Ring", "Grid", "MNIST", "StackedMNIST", "CIFAR10", "ImageFolder", "read_idx", "write_idx"]
