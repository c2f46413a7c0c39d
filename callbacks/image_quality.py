"""FID, KID, precision / recall and density / coverage of generated images against the
validation split, on the MNIST classifier's features (offline) or Inception's (definitions in
`callbacks.metrics`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from .base import EvaluationCallback, local_sample_count
from .classifier import ChannelFeatures, load_classifier
from .metrics import (FeatureMoments, frechet_distance, frechet_distance_from_moments, inception_score,
                      kernel_distance, precision_recall_density_coverage)

FEATURE_EXTRACTORS = ("mnist_classifier", "inception")


class FeatureSet(Metric):
    """Collects features of real and fake images (cat states, gathered across DDP ranks)."""

    full_state_update = False

    def __init__(self, extractor: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.extractor = extractor
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    @torch.no_grad()
    def update(self, images: Tensor, real: bool) -> None:
        (self.real if real else self.fake).append(self.extractor(images.float()).double())

    def compute(self) -> tuple[Tensor, Tensor]:
        cat = lambda x: torch.cat(x) if isinstance(x, list) else x  # noqa: E731
        return cat(self.real), cat(self.fake)


def collect_features(metric: FeatureSet, trainer: L.Trainer, pl_module: L.LightningModule, num_samples: int,
                     batch_size: int) -> tuple[Tensor, Tensor]:
    """Features of the datamodule's validation split (every batch's rows dealt out across ranks, so each rank has
    some even when the split is one batch) and of `num_samples` generated samples (split across ranks, from the
    evaluation stream), gathered across ranks; the metric is reset after."""
    metric = metric.to(pl_module.device)
    for batch in trainer.datamodule.val_dataloader():
        real = pl_module.unpack_batch(batch)[trainer.global_rank:: trainer.world_size]  # each real sample on one rank
        if real.shape[0]:
            metric.update(real.to(pl_module.device), real=True)
    for samples in EvaluationCallback.sample_batches(pl_module, local_sample_count(num_samples, trainer), batch_size):
        metric.update(samples, real=False)
    real, fake = metric.compute()
    metric.reset()
    return real, fake


class InceptionFeatures(nn.Module):
    """The 2048-d pool features of torchmetrics' FID Inception network, for images in [-1, 1]
    (grey images repeated over three channels)."""

    num_features = 2048

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(inception_input(x)).reshape(x.shape[0], -1)


def inception_input(x: Tensor) -> Tensor:
    """Images in [-1, 1] as the Inception network takes them: uint8 in [0, 255], three channels."""
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return ((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)


def inception_features() -> InceptionFeatures:
    """torchmetrics' FID Inception network, or a clear error offline."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except Exception as err:  # noqa: BLE001 - missing torch-fidelity, or weights not downloadable
        raise RuntimeError(
            "Inception features need torch-fidelity and its Inception weights (downloaded on first use, so a "
            "network connection or a pre-filled torch hub cache): pip install torch-fidelity. Offline, use "
            "feature_extractor: mnist_classifier for the MNIST family."
        ) from err
    return InceptionFeatures(net)


class ImageQuality(EvaluationCallback):
    """FID, KID, precision / recall (k 3) and density / coverage (k 5) at every validation.

    Real features: the datamodule's validation split (its `val_size` images, the reference);
    fake: `num_samples` generated images split across ranks. Features from `feature_extractor`:
    "mnist_classifier" (the project's classifier at `classifier_path`, per channel; offline) or
    "inception" (2048-d pool features; needs torch-fidelity and its weights). FID and KID use all
    samples; precision / recall / density / coverage use as many fakes as there are reals. Logs `val/fid`,
    `val/kid`, `val/precision`, `val/recall`, `val/density`, `val/coverage`, with
    `val/quality_num_real` and `val/quality_num_fake`; `self.protocol` says which features and
    which reference split, and train.py prints it with the final figures.
    """

    def __init__(self, feature_extractor: str = "mnist_classifier", classifier_path: str = "checkpoints/mnist_classifier.pt",
                 num_samples: int = 10000, batch_size: int = 500, kid_subset_size: int = 1000):
        super().__init__()
        if feature_extractor not in FEATURE_EXTRACTORS:
            raise ValueError(f"feature_extractor must be mnist_classifier or inception; got {feature_extractor!r}")
        self.feature_extractor, self.classifier_path = feature_extractor, classifier_path
        self.num_samples, self.batch_size, self.kid_subset_size = num_samples, batch_size, kid_subset_size
        self.metric: Optional[FeatureSet] = None
        self.protocol = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.feature_extractor == "inception":
            extractor = inception_features()
        else:
            shape = tuple(getattr(trainer.datamodule, "image_shape", (1, 28, 28)))
            if shape[1:] != (28, 28):
                raise ValueError(f"mnist_classifier features need 28 x 28 images (the MNIST family); the data are "
                                 f"{shape}: use feature_extractor: inception")
            extractor = ChannelFeatures(load_classifier(self.classifier_path))
        self.metric = FeatureSet(extractor.eval())

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        real, fake = collect_features(self.metric, trainer, pl_module, self.num_samples, self.batch_size)
        # precision / recall / density / coverage compare k-NN radii within each set, which shrink
        # as a set grows: they use as many fakes as reals (Kynkaanniemi et al. and Naeem et al. do)
        n_pr = min(real.shape[0], fake.shape[0])
        values = {"fid": frechet_distance(real, fake), "kid": kernel_distance(real, fake, subset_size=self.kid_subset_size),
                  **precision_recall_density_coverage(real[:n_pr], fake[:n_pr]),
                  "quality_num_real": torch.tensor(float(real.shape[0])),
                  "quality_num_fake": torch.tensor(float(fake.shape[0]))}
        self.protocol = (f"{self.feature_extractor} features, {fake.shape[0]} generated vs {real.shape[0]} real images "
                         f"(the datamodule's validation split)")
        self.log_values(pl_module, values)


def inception_logits_and_features() -> nn.Module:
    """torchmetrics' Inception network (torch-fidelity's weights) giving, for images in [-1, 1], the 1008 logits the
    Inception Score uses and the 2048-d pool features FID uses, in one pass; or a clear error offline."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["logits_unbiased", "2048"])
    except Exception as err:  # noqa: BLE001 - missing torch-fidelity, or weights not downloadable
        raise RuntimeError(
            "InceptionScores needs torch-fidelity and its Inception weights (downloaded on first use, so a network "
            "connection or a pre-filled torch hub cache): pip install torch-fidelity, then run once with network; "
            f"or leave callbacks.InceptionScores out of the config ({type(err).__name__}: {err})"
        ) from err
    return _UInt8Images(net)


class _UInt8Images(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, features = self.net(inception_input(x))
        return logits, features.reshape(x.shape[0], -1)


class InceptionStatistics(Metric):
    """The logits (gathered) and the pool features' moments (summed) of a set of images, across DDP ranks."""

    full_state_update = False

    def __init__(self, network: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", default=torch.zeros(0, dtype=torch.float64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: Tensor, keep_logits: bool = True) -> None:
        logits, features = self.network(images.float())
        if keep_logits:
            self.logits.append(logits.double())
        moments = FeatureMoments()
        moments.update(features)
        if self.total.numel() == 0:
            self.total = torch.zeros_like(moments.total)
            self.outer = torch.zeros_like(moments.outer)
        self.count += moments.count
        self.total += moments.total
        self.outer += moments.outer

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        """(logits (N, classes), feature mean, feature covariance)."""
        moments = FeatureMoments()
        moments.count, moments.total, moments.outer = int(self.count), self.total, self.outer
        logits = self.logits if not isinstance(self.logits, list) else (
            torch.cat(self.logits) if self.logits else torch.zeros(0, 0, dtype=torch.float64))
        return (logits, *moments.mean_and_covariance())


def is_final_evaluation(trainer: L.Trainer) -> bool:
    """Whether this validation evaluates a run's final weights: a `validate` call (train.py's evaluation of the final
    weights, or of a checkpoint), or the validation at the last step or epoch of a fit."""
    from lightning.pytorch.trainer.states import TrainerFn

    if trainer.state.fn == TrainerFn.VALIDATING:
        return True
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    return trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch >= trainer.max_epochs - 1


class InceptionScores(EvaluationCallback):
    """The CIFAR-10 papers' figures, at the evaluation of a run's final weights: the Inception Score (Salimans et al.
    2016) of `num_samples` generated images in `splits` parts (mean and std over the parts; the papers: 50,000 in
    10), and the FID of those images against the Inception statistics of the datamodule's whole training set
    (`train_set`: 50,000 images for CIFAR-10), computed once and kept in `cache_dir`. Logs `val/inception_score`,
    `val/inception_score_std`, `val/fid_train`, `val/inception_num_fake`. Needs torch-fidelity and its Inception
    weights (a clear error at setup when they cannot be had); `every_evaluation` measures at every validation.
    """

    def __init__(self, num_samples: int = 50000, batch_size: int = 250, splits: int = 10,
                 cache_dir: str = "checkpoints/inception_statistics", every_evaluation: bool = False):
        super().__init__()
        if not 1 <= splits <= num_samples:
            raise ValueError(f"need 1 <= splits <= num_samples; got splits {splits}, num_samples {num_samples}")
        self.num_samples, self.batch_size, self.splits = num_samples, batch_size, splits
        self.cache_dir, self.every_evaluation = Path(cache_dir), every_evaluation
        self.network: Optional[nn.Module] = None
        self.protocol = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.network is None:
            self.network = inception_logits_and_features().eval()

    def reference_statistics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[Tensor, Tensor]:
        """Mean and covariance of the training set's Inception features, from the cache or computed (rank-sharded)."""
        dm = trainer.datamodule
        train_set = getattr(dm, "train_set", None)
        if train_set is None:
            raise ValueError(f"InceptionScores needs the datamodule's training set (train_set); "
                             f"{type(dm).__name__} has none")
        name = f"{type(dm).__name__}-{getattr(dm, 'split', 'train')}-{len(train_set)}.pt"
        path = self.cache_dir / name
        if path.is_file():
            cached = torch.load(path, map_location=pl_module.device)
            return cached["mean"], cached["covariance"]
        stats = InceptionStatistics(self.network).to(pl_module.device)
        shard = torch.utils.data.Subset(train_set, range(trainer.global_rank, len(train_set), trainer.world_size))
        for batch in torch.utils.data.DataLoader(shard, batch_size=self.batch_size):
            stats.update(pl_module.unpack_batch(batch).to(pl_module.device), keep_logits=False)
        _, mean, covariance = stats.compute()
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"mean": mean.cpu(), "covariance": covariance.cpu(), "count": len(train_set)}, path)
        return mean, covariance

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.every_evaluation or is_final_evaluation(trainer)):
            return
        real_mean, real_covariance = self.reference_statistics(trainer, pl_module)
        stats = InceptionStatistics(self.network).to(pl_module.device)
        for samples in self.sample_batches(pl_module, local_sample_count(self.num_samples, trainer), self.batch_size):
            stats.update(samples)
        logits, mean, covariance = stats.compute()
        score, score_std = inception_score(logits, self.splits)
        values = {"inception_score": score, "inception_score_std": score_std,
                  "fid_train": frechet_distance_from_moments(real_mean, real_covariance, mean, covariance),
                  "inception_num_fake": torch.tensor(float(logits.shape[0]))}
        self.protocol = (f"Inception Score of {logits.shape[0]} generated images in {self.splits} splits; FID against "
                         f"the Inception statistics of the training set")
        self.log_values(pl_module, values)
