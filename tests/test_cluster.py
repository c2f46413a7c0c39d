"""Cluster scale on one machine: a 2-node torchrun job, the SLURM template, the W&B sweeps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import train
from experiments.configs import table_models

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_job_on_the_loopback_trains_in_sync(tmp_path):
    """Two torchrun launchers, one per "node" (1 process each), joined over 127.0.0.1."""
    dump = tmp_path / "dump"
    dump.mkdir()
    port = _free_port()
    env = {**os.environ, "GAN_TEST_DUMP_DIR": str(dump), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "NNODES": "2", "GPUS_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "ACCELERATOR": "cpu"}
    args = [str(ROOT / "experiments/ring8/protocol.yaml"), str(ROOT / "experiments/ring8/gan.yaml"), "--trainer.max_steps", "40",
            "--data.init_args.batches_per_epoch", "10", "--data.init_args.batch_size", "64",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.callbacks+=tests.ddp_helpers.DumpRankState"]
    nodes = [subprocess.Popen(["bash", str(ROOT / "experiments/cluster/torchrun.sh"), *args], cwd=tmp_path,
                              env={**env, "NODE_RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in (0, 1)]
    outputs = [p.communicate(timeout=900)[0] for p in nodes]
    assert all(p.returncode == 0 for p in nodes), "\n".join(o[-3000:] for o in outputs)
    ranks = [torch.load(dump / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["g_steps"] == ranks[1]["g_steps"] == 20
    assert not torch.equal(ranks[0]["last_batch"], ranks[1]["last_batch"])  # each node its own data
    for name, value in ranks[0]["state_dict"].items():
        assert torch.equal(value, ranks[1]["state_dict"][name]), f"{name} differs across nodes"
    for metric in ("val/modes", "val/hq", "val/kl"):  # synced metrics: one value on every rank
        a, b = ranks[0]["metrics"][metric], ranks[1]["metrics"][metric]
        assert a == b or (a != a and b != b), metric


def test_slurm_template_passes_the_allocation_to_lightning():
    text = (ROOT / "experiments/cluster/train.sbatch").read_text()
    assert "srun python train.py fit" in text and "--signal=SIGUSR1@90" in text and "--requeue" in text
    assert "--ckpt_path last" in text  # a requeued job resumes from its latest epoch-end checkpoint
    assert '--trainer.num_nodes "$SLURM_NNODES"' in text and '--trainer.devices "$SLURM_NTASKS_PER_NODE"' in text
    assert subprocess.run(["bash", "-n", str(ROOT / "experiments/cluster/train.sbatch")]).returncode == 0


@pytest.mark.parametrize("table", ["ring8", "grid25"])
def test_sweep_covers_every_model_and_its_runs_parse(table, capsys, monkeypatch):
    sweep = yaml.safe_load((ROOT / f"experiments/sweeps/{table}.yaml").read_text())
    configs = sweep["parameters"]["config"]["values"]
    assert configs == [f"experiments/{table}/{model}.yaml" for model in table_models(table)]  # the one model list
    assert sweep["command"][4] == f"--config=experiments/{table}/protocol.yaml"  # each model composed on its protocol
    assert sweep["parameters"]["seed_everything"]["values"] == list(range(10))
    assert sweep["command"][3] == "fit" and sweep["program"] == "train.py"
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    # W&B's ${args} expands to --key=value pairs
    with pytest.raises(SystemExit):
        train.main(args=["fit", sweep["command"][4], f"--config={configs[-1]}", "--seed_everything=7", "--trainer.enable_progress_bar=false",
                         "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 7
