"""Label-free diversity signals at every validation, on any data: NDB / JSD, the near-duplicate rate and the
support size it implies, and recall / coverage (definitions in `callbacks.metrics`).

None of them needs to know the modes, so they watch for collapse where the mode-counting metrics cannot (a folder
of the user's images). Each is computed on features of the samples: the samples themselves ("data": 2D points,
or flattened pixels), the project's MNIST classifier per channel (the MNIST family, offline), Inception's pool
features (needs torch-fidelity and its weights), or the model's own discriminator trunk ("discriminator": any
data, offline; the features train with the model, so NDB's bins are refitted at every evaluation and the figures
of different steps are on different scales). `self.protocol` names the choice.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
from torch import Tensor, nn

from .base import EvaluationCallback
from .image_quality import FeatureSet, collect_features, inception_features
from .metrics import (bin_proportions, duplicate_rate, duplicate_threshold, kmeans_bins, ndb_jsd,
                      precision_recall_density_coverage, real_knn_radii)

DIVERSITY_FEATURES = ("data", "mnist_classifier", "inception", "discriminator")


def fit_reference(real: Tensor, n: int, num_bins: int, duplicate_quantile: float, seed: int) -> tuple:
    """What the signals need of the reference `real` alone: NDB's k-means centres and the reference's proportions
    in them (on all of `real`), the near-duplicate threshold and the k-NN radii (on real[:n])."""
    centres, proportions = kmeans_bins(real, num_bins, seed=seed)
    return centres, proportions, duplicate_threshold(real[:n], duplicate_quantile), real_knn_radii(real[:n])


def diversity_signals(real: Tensor, fake: Tensor, reference: tuple, significance: float,
                      duplicate_quantile: float) -> dict[str, Tensor]:
    """NDB / JSD over all of `real` and `fake`, and the duplicate rate, support size, recall and coverage on the
    first n = min(len(real), len(fake)) of each, with `reference` = fit_reference(real, n, ...)."""
    n = min(real.shape[0], fake.shape[0])
    centres, proportions, threshold, radii = reference
    values = ndb_jsd(proportions, real.shape[0], bin_proportions(fake, centres), fake.shape[0], significance)
    duplicates = duplicate_rate(real[:n], fake[:n], duplicate_quantile, threshold=threshold)
    pr = precision_recall_density_coverage(real[:n], fake[:n], real_radii=radii)
    return values | {"duplicate_rate": duplicates["duplicate_rate"], "support_size": duplicates["support_size"],
                     "recall": pr["recall"], "coverage": pr["coverage"]}


class DiscriminatorFeatures(nn.Module):
    """The model's discriminator trunk (`discriminator.features`) as the features, in eval mode. The model is held
    without being registered, so the metric does not own (or move, or save) the discriminator."""

    def __init__(self, model: L.LightningModule):
        super().__init__()
        discriminator = getattr(model, "discriminator", None)
        if not hasattr(discriminator, "features") or not hasattr(model, "discriminator_features"):
            raise ValueError(f"features 'discriminator' needs a discriminator with `features` (its trunk); "
                             f"{type(discriminator).__name__} has none: use features 'data'")
        object.__setattr__(self, "_model", model)

    def forward(self, x: Tensor) -> Tensor:
        from models.runtime import eval_mode

        model = self._model
        with eval_mode(*[m for m in (model.discriminator, getattr(model, "reconstructor", None)) if m is not None]):
            return model.discriminator_features(x).flatten(1)  # PacGAN packs, VEEGAN pairs: D's own input form


class DiversityMetrics(EvaluationCallback):
    """NDB / JSD, duplicate rate, support size, recall and coverage of `num_samples` generated samples against the
    datamodule's validation split (the reference) at every validation.

    Args:
        features: "data", "mnist_classifier", "inception" or "discriminator" (see the module docstring).
        num_bins: NDB's k-means bins, fitted once per datamodule on the reference's features (seeded, so a resumed
            run gets the same bins; the reference's nearest-neighbour radii are kept with them). The authors use 100 to 300 bins with tens of thousands of samples; keep the
            reference at tens of samples per bin or more.
        significance: the level of NDB's two-sided two-proportion test per bin.
        num_samples: generated samples per evaluation, split across ranks.
        duplicate_quantile: the quantile of the reference's nearest-neighbour distances below which two generated
            samples count as near-duplicates (`callbacks.metrics.duplicate_rate`); it uses as many generated
            samples as there are reference samples, as do recall and coverage (k 3 and 5).
        classifier_path: the MNIST classifier, for features "mnist_classifier".
        seed: k-means' seed.

    Logs `val/ndb`, `val/ndb_fraction`, `val/jsd`, `val/duplicate_rate`, `val/support_size`, `val/recall`,
    `val/coverage`; `self.protocol` says which features and samples.
    """

    def __init__(self, features: str = "data", num_bins: int = 50, significance: float = 0.05,
                 num_samples: int = 2500, duplicate_quantile: float = 0.01, batch_size: int = 500,
                 classifier_path: str = "checkpoints/mnist_classifier.pt", seed: int = 0):
        super().__init__()
        if features not in DIVERSITY_FEATURES:
            raise ValueError(f"features must be one of {list(DIVERSITY_FEATURES)}; got {features!r}")
        if not (isinstance(num_bins, int) and num_bins >= 2):
            raise ValueError(f"num_bins must be an integer >= 2; got {num_bins!r}")
        if not 0 < significance < 1:
            raise ValueError(f"significance must be in (0, 1), e.g. 0.05; got {significance!r}")
        if not 0 < duplicate_quantile < 1:
            raise ValueError(f"duplicate_quantile must be in (0, 1), e.g. 0.01; got {duplicate_quantile!r}")
        if num_samples < num_bins:
            raise ValueError(f"num_samples ({num_samples}) must be at least num_bins ({num_bins})")
        self.features, self.num_bins, self.significance = features, num_bins, significance
        self.num_samples, self.duplicate_quantile, self.batch_size = num_samples, duplicate_quantile, batch_size
        self.classifier_path, self.seed = classifier_path, seed
        self.metric: Optional[FeatureSet] = None
        # what depends on the reference alone, computed once per datamodule: (its id, NDB's centres and reference
        # proportions, the duplicate threshold and the real k-NN radii of the first n reference samples, n)
        self._reference: Optional[tuple] = None
        self.protocol = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.features == "inception":
            extractor = inception_features()
        elif self.features == "mnist_classifier":
            from .classifier import ChannelFeatures, load_classifier

            extractor = ChannelFeatures(load_classifier(self.classifier_path))
        elif self.features == "discriminator":
            extractor = DiscriminatorFeatures(pl_module)
        else:
            extractor = nn.Flatten()  # the samples themselves, one row each
        self.metric = FeatureSet(extractor.eval())

    def reference_statistics(self, trainer: L.Trainer, real: Tensor, n: int) -> tuple:
        """NDB's bins and reference proportions (k-means on all of `real`), the duplicate threshold and the k-NN
        radii of real[:n]: fitted at the first evaluation of each datamodule and kept (the reference is fixed)."""
        key = (id(trainer.datamodule), real.shape[0], n, float(real.double().sum()))  # the sum: the same reference
        if self.features == "discriminator":  # features that train with the model: the reference moves too
            key += (int(getattr(trainer, "global_step", 0)),)
        if self._reference is None or self._reference[0] != key:
            self._reference = (key, *fit_reference(real, n, self.num_bins, self.duplicate_quantile, self.seed))
        return self._reference[1:]

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        real, fake = collect_features(self.metric, trainer, pl_module, self.num_samples, self.batch_size)
        real, fake = real.cpu(), fake.cpu()
        n = min(real.shape[0], fake.shape[0])
        values = diversity_signals(real, fake, self.reference_statistics(trainer, real, n), self.significance,
                                   self.duplicate_quantile)
        self.protocol = (f"{self.features} features; NDB over {self.num_bins} k-means bins of {real.shape[0]} reference "
                         f"samples (the validation split) at level {self.significance}, {fake.shape[0]} generated; "
                         f"duplicates, recall and coverage on {n} of each")
        self.log_values(pl_module, values)
