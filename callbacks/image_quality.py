"""FID, KID, precision / recall and density / coverage of generated images against the
validation split, on the MNIST classifier's features (offline) or Inception's (definitions in
`callbacks.metrics`)."""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from .base import EvaluationCallback, local_sample_count
from .classifier import ChannelFeatures, load_classifier
from .metrics import frechet_distance, kernel_distance, precision_recall_density_coverage

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
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.net(((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)).reshape(x.shape[0], -1)


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
