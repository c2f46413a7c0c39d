"""experiments/benchmark.py end to end on tiny budgets: the table it writes, on a 2D config and
on the offline 32-px image config (random PNGs through the CIFAR-10 configs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from experiments.benchmark import main, parse_spec, random_image_folder

ROOT = Path(__file__).resolve().parents[1]


def test_ring8_table_with_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bench.md"
    rows = main([str(ROOT / "experiments/ring8/gan.yaml"),
                 f"{ROOT / 'experiments/ring8/unrolled_gan.yaml'}@model.init_args.unrolled_steps=1",
                 "--chunks", "2", "--chunk", "3", "--warmup", "2", "--out", str(out)])
    assert [r["model"] for r in rows] == ["GAN", "UnrolledGAN"]
    for r in rows:
        assert r["chunks"] == 2 and r["lightning_ms_batch"] > 0 and r["plain_ms_batch"] > 0
        assert math.isfinite(r["eval_pct"]) and r["eval_every"] == 2500  # ring8 evaluates every 2,500 batches
    text = out.read_text()
    assert text.startswith("Command: `python experiments/benchmark.py") and "| UnrolledGAN |" in text


def test_parse_spec_rejects_a_pair_without_equals():
    assert parse_spec("a.yaml@x.y=1,z=2") == ("a.yaml", ["--x.y", "1", "--z", "2"])
    with pytest.raises(SystemExit, match="not key=value"):
        parse_spec("a.yaml@x.y")


def test_offline_32px_image_benchmark(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = random_image_folder(tmp_path / "png", count=80)
    assert len(list((tmp_path / "png").glob("*.png"))) == 80 and "datamodules.ImageFolder" in args
    rows = main([str(ROOT / "experiments/cifar10/gan.yaml"), "--random-images", str(tmp_path / "png"),
                 "--chunks", "1", "--chunk", "2", "--warmup", "1", "--eval-every", "7810", "--precision", "bf16-mixed"])
    assert rows[0]["model"] == "GAN" and rows[0]["lightning_ms_batch"] > 0 and rows[0]["eval_every"] == 7810
    # Inception FID needs weights that an offline machine cannot download: the row says so
    assert math.isfinite(rows[0]["eval_pct"]) or "Inception" in rows[0]["eval_note"]


def test_the_gpu_check_script_runs_its_steps_and_sums_up_on_cpu(tmp_path):
    """experiments/gpu_check.sh, the one script for a lent GPU, as a CPU dry run: two runs sharing the device
    finish and its summary gives their generator updates per second (per run and summed)."""
    import json
    import os
    import re
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path / "check"), "ACCELERATOR": "cpu", "BENCH": "0", "COUNTS": "2",
           "STEPS": "20", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = re.search(r"^\| 2 \| 2 of 2 \| ([0-9.]+) \| ([0-9.]+) \|$", (tmp_path / "check" / "summary.md").read_text(), re.M)
    assert row, done.stdout
    results = [json.loads(p.read_text()) for p in (tmp_path / "check" / "shared_2").glob("runs/gan/*/result.json")]
    assert sorted(r["seed"] for r in results) == [0, 1] and all(r["g_steps"] == 20 for r in results)
    rates = [r["g_steps"] / r["wall_s"] for r in results]
    assert float(row.group(1)) == pytest.approx(sum(rates) / 2, abs=0.05)
    assert float(row.group(2)) == pytest.approx(sum(rates), abs=0.05)
