"""experiments/batchnorm_refresh.py: the figures of known samples by hand, the refresh moving G's running statistics
and nothing else, and the record a finished run's result.json gets."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from datamodules import Ring
from experiments import batchnorm_refresh as bnr

CONFIGS = [bnr.EXPERIMENTS / "ring8_pacgan" / bnr.PROTOCOL, bnr.EXPERIMENTS / "ring8_pacgan" / "gan.yaml"]


def fixed(points):
    """A model stand-in whose sample i is points[i % len(points)]."""
    points = torch.tensor(points)
    return SimpleNamespace(generate=lambda z: points[torch.arange(len(z)) % len(points)])


def test_figures_of_known_samples_by_hand():
    data = Ring(num_modes=8, radius=1.0, std=0.01)
    # half the samples on mode 0 (1, 0), half 0.02 off mode 2 (0, 1): both within 3 std, 2 modes, KL = log 8 - log 2
    out = bnr.figures(fixed([[1.0, 0.0], [0.02, 1.0]]), data, torch.zeros(100, 2))
    assert (out["modes"], out["hq"]) == (2.0, 100.0) and out["kl"] == pytest.approx(math.log(4))
    assert out["spread"] == pytest.approx(0.0, abs=1e-5)  # every mode's samples on one point (float32 rounding)
    # 0.04 off: outside 3 std (0.03), so only mode 0's half is high quality
    out = bnr.figures(fixed([[1.0, 0.0], [0.04, 1.0]]), data, torch.zeros(100, 2))
    assert (out["modes"], out["hq"]) == (1.0, 50.0)


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    model = bnr.build(bnr.resolve(CONFIGS)["model"])
    folder = tmp_path / "run"
    path = folder / "runs" / "ring8_pacgan-gan" / "version_0" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 399, "global_step": 800000, "state_dict": model.state_dict()}, path)
    return model, folder, path


def test_refresh_moves_only_the_generators_running_statistics(tmp_path):
    saved, _, path = _checkpoint(tmp_path)
    model, data, _ = bnr.load(CONFIGS, path)
    z = torch.randn(500, 2)
    assert torch.equal(model.generate(z), saved.eval().generate(z))  # the checkpoint's model as saved
    assert torch.equal(bnr.refreshed_copy(model, 0, 100).generate(z), model.generate(z))  # no update: the same
    refreshed = bnr.refreshed_copy(model, 5, 100)
    # at initialisation the running statistics are (0, 1), far from a batch's: 5 updates move them, not the weights
    assert not torch.allclose(refreshed.generate(z), model.generate(z))
    params = dict(refreshed.named_parameters())
    assert all(torch.equal(value, params[name]) for name, value in model.named_parameters())
    buffers = dict(refreshed.named_buffers())
    moved = [name for name, value in model.named_buffers() if not torch.equal(value, buffers[name])]
    assert moved and all(name.startswith("generator.") for name in moved)
    assert not model.generator.training and not refreshed.generator.training


def test_a_finished_run_records_the_comparison_once(tmp_path):
    _, folder, _ = _checkpoint(tmp_path)
    run = SimpleNamespace(configs=CONFIGS, overrides=[])
    result = {"status": "ok", "model": "gan", "seed": 0, "metrics": {"modes": 1.0}}
    (folder / "result.json").write_text(json.dumps(result))
    settings = {"updates": 3, "batch": 100, "latent_seed": 7, "samples": 200}
    assert bnr.record(run, folder, result, settings)
    saved = json.loads((folder / "result.json").read_text())
    entry = saved["batchnorm_refresh"]
    assert (entry["updates"], entry["latent_seed"], entry["samples"], entry["epoch"]) == (3, 7, 200, 399)
    assert set(entry["metrics"]) == set(entry["metrics_left"]) == {"modes", "hq", "kl", "spread"}
    assert saved["metrics"] == {"modes": 1.0}  # the run's own figures are kept as they were
    assert not bnr.record(run, folder, saved, settings)  # recorded already
    assert not bnr.record(run, tmp_path / "empty", {"status": "ok"}, settings)  # no checkpoint left
    assert not bnr.record(run, folder, {"status": "failed"}, settings)


def test_a_pacgans_refresh_takes_the_batch_size_per_block():
    # PacGAN2's generator normalises each of its 2 blocks on its own; the authors' refresh calls G twice on 100
    # latents, so each update here passes 2 x 100 latents (a hook on the model is copied with it)
    config = bnr.resolve([CONFIGS[0], bnr.EXPERIMENTS / "ring8_pacgan" / "pacgan2.yaml"])
    torch.manual_seed(0)
    model = bnr.build(config["model"]).eval()
    norm = next(m for m in model.generator.modules() if type(m).__name__ == "BlocksBatchNorm1d")
    sizes = []
    norm.register_forward_hook(lambda module, inputs, output: sizes.append((inputs[0].shape[0], module.training)))
    bnr.refreshed_copy(model, 3, 100)
    assert norm.groups == 2 and sizes == [(200, True)] * 3
