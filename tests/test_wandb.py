"""W&B: never prompts; offline without credentials, with a real offline run on disk (not mocked)."""

from __future__ import annotations

import logging

import lightning as L
import pytest

from callbacks import WandbLogger
from callbacks.wandb_logger import resolve_wandb_mode
from tests.factories import quiet_trainer, tiny_model, tiny_ring


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))


def test_mode_resolution(no_credentials, monkeypatch, tmp_path):
    assert resolve_wandb_mode("auto") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment wins
    assert resolve_wandb_mode("online") == "offline"
    with pytest.raises(ValueError, match="W&B mode must be one of"):
        resolve_wandb_mode("cloud")


def test_netrc_credentials_count(no_credentials, tmp_path, monkeypatch):
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert resolve_wandb_mode("auto") == "online"


def test_training_logs_offline_run_to_disk_and_says_how_to_sync(no_credentials, tmp_path, caplog):
    import wandb

    L.seed_everything(0)
    logger = WandbLogger(project="gan-tests", save_dir=str(tmp_path), mode="auto")
    assert logger.mode == "offline"
    trainer = quiet_trainer(max_epochs=1, logger=logger, log_every_n_steps=1)
    lightning_log = logging.getLogger("lightning.pytorch")  # does not propagate to the root logger
    lightning_log.addHandler(caplog.handler)
    try:
        trainer.fit(tiny_model(), datamodule=tiny_ring())
    finally:
        lightning_log.removeHandler(caplog.handler)
    run_dir = logger.experiment.dir
    wandb.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert list(runs[0].glob("run-*.wandb")), "no W&B run file written"
    assert str(runs[0]) in run_dir
    assert f"wandb sync {runs[0]}" in caplog.text
