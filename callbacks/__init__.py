"""Metric and visualisation callbacks shared by every model; metrics are torchmetrics Metrics."""

from .images import (
    ImageQuality,
    MNISTClassifier,
    SampleGrid,
    StackedMNISTModes,
    StackedMNISTModesMetric,
    load_classifier,
)
from .mode_coverage import ModeCoverage, ModeCoverageMetric
from .progress import ProgressFile
from .scatter import SampleScatter
from .structure import CodeModeAccuracy, GeneratorModeShares, LatentTraversal, matched_accuracy
from .wandb_logger import WandbLogger

__all__ = [
    "ModeCoverage",
    "ModeCoverageMetric",
    "SampleScatter",
    "ProgressFile",
    "WandbLogger",
    "GeneratorModeShares",
    "CodeModeAccuracy",
    "LatentTraversal",
    "matched_accuracy",
    "StackedMNISTModes",
    "StackedMNISTModesMetric",
    "ImageQuality",
    "SampleGrid",
    "MNISTClassifier",
    "load_classifier",
]
