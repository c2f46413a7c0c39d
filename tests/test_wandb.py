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


def test_training_logs_offline_run_to_disk_and_says_where(no_credentials, tmp_path, caplog):
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
    assert f"W&B logged offline (no credentials found) to {runs[0]}" in caplog.text
    assert f"wandb sync {runs[0]}" in caplog.text


def test_a_train_py_run_names_its_wandb_run_logs_the_whole_config_and_records_the_id(no_credentials, tmp_path,
                                                                                      monkeypatch):
    import json
    import sys
    from pathlib import Path

    import wandb

    import train
    from experiments.configs import compose_args

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    cli = train.main(args=["fit", *compose_args(root / "experiments" / "ring8" / "gan.yaml"), "--seed_everything", "7",
                           "--data.init_args.batches_per_epoch", "4", "--data.init_args.batch_size", "32",
                           "--data.init_args.std", "0.03", "--trainer.max_steps", "8",
                           "--trainer.enable_progress_bar", "false"])
    run = next(logger for logger in cli.trainer.loggers if isinstance(logger, WandbLogger)).experiment
    assert run.name == "ring8-gan-s7"  # <group>-s<seed>
    resolved = run.config["resolved_config"]
    assert resolved["seed_everything"] == 7 and resolved["data"]["init_args"]["std"] == 0.03
    assert resolved["trainer"]["max_steps"] == 8
    assert resolved["model"]["init_args"]["generator"]["class_path"] == "models.MLPGenerator"
    record = json.loads((Path(cli.trainer.log_dir) / "run.json").read_text())
    assert record["wandb"]["id"] == run.id and record["wandb"]["name"] == "ring8-gan-s7"
    assert record["wandb"]["mode"] == "offline" and record["wandb"]["url"] is None
    wandb.finish()


def test_the_upload_hint_is_printed_once(no_credentials, tmp_path):
    # as a user sees it: train.py in its own process, W&B offline; the fit's end and the evaluation of the final
    # weights both finalize the logger, and W&B's own closing lines would say it again
    import os
    import subprocess
    import sys
    from pathlib import Path

    from experiments.configs import compose_args

    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, str(root / "train.py"), "fit", *compose_args(root / "experiments" / "ring8" / "gan.yaml"),
            "--data.init_args.batches_per_epoch", "4", "--data.init_args.batch_size", "32",
            "--trainer.max_steps", "8", "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert output.count("W&B logged offline (no credentials found)") == 1
    assert output.count("wandb sync") == 1, output[-3000:]
