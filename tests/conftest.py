"""Shared fixtures. Tiny models, data and trainers: tests/factories.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_SILENT", "true")


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
