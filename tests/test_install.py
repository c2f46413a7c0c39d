"""The installed torch / torchvision pair works (a mismatched pair fails at import or on first op)."""

import torch


def test_torchvision_imports_and_runs_an_op():
    import torchvision
    from torchvision.ops import nms

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.01], [5.0, 5.0, 6.0, 6.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torchvision.__version__.split("+")[0].startswith("0.")


def test_project_packages_import():
    from callbacks import ModeCoverage, SampleScatter, WandbLogger  # noqa: F401
    from datamodules import GaussianMixture2D, Grid, Ring  # noqa: F401
    from models import GAN, GANBase  # noqa: F401
