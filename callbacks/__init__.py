"""Evaluation and visualisation callbacks shared by every model.

`metrics` holds the metrics as pure functions; the callbacks (on `base.EvaluationCallback`)
draw samples, merge counts or features across ranks, and log and write what they compute.
"""

from .base import EvaluationCallback
from .classifier import MNISTClassifier, load_classifier, save_classifier
from .collapse_monitor import CollapseMonitor
from .diversity import DiversityMetrics
from .diagnostics import CodeModeAccuracy, GeneratorModeShares, LatentTraversal
from .image_quality import ImageQuality, InceptionScores
from .metrics import matched_accuracy
from .mode_coverage import ModeCoverage, ModeCoverageMetric
from .plots import SampleGrid, SampleScatter
from .progress import ProgressBar
from .run_record import RunRecord, read_record
from .stacked_mnist import StackedMNISTModes, StackedMNISTModesMetric
from .wandb_logger import WandbLogger

__all__ = [
    "EvaluationCallback",
    "ModeCoverage",
    "ModeCoverageMetric",
    "SampleScatter",
    "RunRecord",
    "ProgressBar",
    "read_record",
    "WandbLogger",
    "GeneratorModeShares",
    "CodeModeAccuracy",
    "LatentTraversal",
    "matched_accuracy",
    "StackedMNISTModes",
    "StackedMNISTModesMetric",
    "ImageQuality",
    "InceptionScores",
    "DiversityMetrics",
    "CollapseMonitor",
    "SampleGrid",
    "MNISTClassifier",
    "load_classifier",
    "save_classifier",
]
