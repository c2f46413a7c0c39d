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
