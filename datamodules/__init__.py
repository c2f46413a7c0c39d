"""LightningDataModules shared by every model. Each describes its data (shape, modes, classes)."""

from .gaussian_mixture import GaussianMixture2D, Grid, Ring

__all__ = ["GaussianMixture2D", "Ring", "Grid"]
