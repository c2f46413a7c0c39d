"""Shared fixtures: tiny networks and data so each real training run takes a second or two."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("WANDB_SILENT", "true")

from datamodules import Ring  # noqa: E402
from models import GAN, MLPDiscriminator, MLPGenerator  # noqa: E402


def tiny_gan(latent_dim: int = 8, hidden: int = 16, **kwargs) -> GAN:
    return GAN(
        MLPGenerator(latent_dim=latent_dim, out_dim=2, hidden_dim=hidden),
        MLPDiscriminator(in_dim=2, hidden_dim=hidden),
        **kwargs,
    )


def tiny_ring(**kwargs) -> Ring:
    kwargs = {"batch_size": 32, "batches_per_epoch": 5, "val_size": 64, "seed": 0, **kwargs}
    return Ring(**kwargs)


def quiet_trainer(**kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def finish_wandb_runs():
    """A W&B run stays open in the process until finished; close it so tests do not share one."""
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()
