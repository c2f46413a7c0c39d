"""Metric and visualisation callbacks shared by every model; metrics are torchmetrics Metrics."""

from .mode_coverage import ModeCoverage, ModeCoverageMetric
from .scatter import SampleScatter
from .wandb_logger import WandbLogger

__all__ = ["ModeCoverage", "ModeCoverageMetric", "SampleScatter", "WandbLogger"]
