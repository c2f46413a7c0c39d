"""Metric and visualisation callbacks shared by every model; metrics are torchmetrics Metrics."""

from .mode_coverage import ModeCoverage, ModeCoverageMetric
from .scatter import SampleScatter
from .structure import CodeModeAccuracy, GeneratorModeShares, LatentTraversal, matched_accuracy
from .wandb_logger import WandbLogger

__all__ = [
    "ModeCoverage",
    "ModeCoverageMetric",
    "SampleScatter",
    "WandbLogger",
    "GeneratorModeShares",
    "CodeModeAccuracy",
    "LatentTraversal",
    "matched_accuracy",
]
