"""Stacked MNIST mode counting: modes captured (of 1,000) and KL to uniform (definitions in
`callbacks.metrics`)."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from datamodules.images import StackedMNIST

from .base import EvaluationCallback, local_sample_count
from .classifier import channel_digits, load_classifier
from .metrics import stacked_mnist_modes


class StackedMNISTModesMetric(Metric):
    """Modes captured (of 1,000) and KL(p_gen || uniform) of stacked samples; sum states (DDP)."""

    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.add_state("counts", default=torch.zeros(1000, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, samples: Tensor) -> None:
        if samples.dim() != 4 or samples.shape[1] != 3:
            raise ValueError(f"Stacked MNIST samples have shape (B, 3, 28, 28); got {tuple(samples.shape)}")
        modes = StackedMNIST.mode_of(channel_digits(self.classifier, samples))
        self.counts += torch.bincount(modes, minlength=1000)

    def compute(self) -> dict[str, Tensor]:
        return stacked_mnist_modes(self.counts)


class StackedMNISTModes(EvaluationCallback):
    """Logs `val/modes`, `val/kl` and `val/num_samples` of `num_samples` (26,000: VEEGAN's
    protocol) generated samples, split across DDP ranks, classified by the MNIST classifier at
    `classifier_path`."""

    def __init__(self, classifier_path: str = "checkpoints/mnist_classifier.pt", num_samples: int = 26000,
                 batch_size: int = 1000):
        super().__init__()
        self.classifier_path, self.num_samples, self.batch_size = classifier_path, num_samples, batch_size
        self.metric: Optional[StackedMNISTModesMetric] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.metric = StackedMNISTModesMetric(load_classifier(self.classifier_path))

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = self.metric.to(pl_module.device)
        for samples in self.sample_batches(pl_module, local_sample_count(self.num_samples, trainer), self.batch_size):
            metric.update(samples)
        values = metric.compute()
        metric.reset()
        self.log_values(pl_module, values)
