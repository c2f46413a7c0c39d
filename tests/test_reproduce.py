"""The table runner: aggregation and rendering, the run cache, and a tiny real table end to end."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import reproduce  # noqa: E402


def fake_result(model, seed, status="ok", **metrics):
    return {"model": model, "seed": seed, "status": status, "wall_s": 10.0 + seed, "log": f"{model}-{seed}.log",
            "metrics": metrics, "error": "boom" if status != "ok" else None}


def test_aggregate_mean_and_sample_std_over_seeds_and_failed_runs_reported():
    results = [fake_result("gan", 0, modes=8, hq=90.0, kl=0.01), fake_result("gan", 1, modes=6, hq=80.0, kl=0.03),
               fake_result("gan", 2, modes=7, hq=85.0, kl=float("nan")), fake_result("mgan", 0, status="failed"),
               fake_result("mgan", 1, modes=8, hq=99.0, kl=0.001)]
    rows = reproduce.aggregate(results, ["modes", "hq", "kl"])
    gan, mgan = rows
    assert gan["model"] == "gan" and gan["seeds"] == 3 and gan["failed"] == []
    assert gan["modes"] == (7.0, 1.0) and gan["hq"] == (85.0, 5.0)
    assert gan["kl"][0] == pytest.approx(0.02) and gan["kl"][1] == pytest.approx(math.sqrt(2) * 0.01)  # NaN ignored
    assert gan["wall_s"] == 11.0
    assert mgan["seeds"] == 1 and mgan["failed"] == [0] and mgan["modes"] == (8.0, 0.0)
    text = reproduce.render_markdown("ring8", rows, ["modes", "hq", "kl"],
                                     [{"method": "GAN", "modes": 1, "hq": 99.3, "kl": None, "source": "VEEGAN Table 1"}])
    assert "| GAN (ours) | 3 | 7.0 ± 1.0 | 85.0 ± 5.0 | 0.020 ± 0.014 | 11 | this repository, seeds 0,1,2 |" in text
    assert "| MGAN (ours) | 1 | 8.0 | 99.0 | 0.0010 | 11 |" in text and "failed seeds [0] (logs: mgan-0.log)" in text
    assert "| GAN |  | 1 | 99.3 | – |  | VEEGAN Table 1 |" in text


def test_mean_std_edge_cases():
    assert reproduce.mean_std([3.0]) == (3.0, 0.0)
    assert all(math.isnan(x) for x in reproduce.mean_std([float("nan")]))
    assert reproduce.mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(1.2909944))


def test_published_numbers_are_data_with_sources():
    import yaml

    published = yaml.safe_load((ROOT / "experiments" / "published.yaml").read_text())
    assert {"ring8", "grid25", "stacked_mnist", "cifar10"} <= set(published)
    for table in published.values():
        assert table["rows"] and all(row["source"] for row in table["rows"])
    ring = {(r["method"], r["source"]): r for r in published["ring8"]["rows"]}
    assert ring[("GAN", "VEEGAN Table 1 (5 runs)")]["modes"] == 1


@pytest.fixture
def fake_experiments(tmp_path, monkeypatch):
    """A copy of the ring8 configs, and `execute` replaced by a recorder (no training)."""
    folder = tmp_path / "experiments" / "ring8"
    folder.mkdir(parents=True)
    for model in ("gan", "mgan"):
        shutil.copy(ROOT / "experiments" / "ring8" / f"{model}.yaml", folder)
    shutil.copy(ROOT / "experiments" / "published.yaml", tmp_path / "experiments")
    monkeypatch.setattr(reproduce, "EXPERIMENTS", tmp_path / "experiments")
    calls, attempts = [], {}

    def execute(run, out, env):
        calls.append(run.name)
        attempts[run.name] = attempts.get(run.name, 0) + 1
        status = "failed" if run.name == "mgan/seed1" and attempts[run.name] == 1 else "ok"  # fails once
        result = fake_result(run.model, run.seed, status, modes=8, hq=90.0, kl=0.01)
        run.folder(out).mkdir(parents=True, exist_ok=True)
        (run.folder(out) / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(reproduce, "execute", execute)
    return folder, calls


def test_finished_runs_are_cached_and_a_config_change_reruns(tmp_path, fake_experiments):
    folder, calls = fake_experiments
    kwargs = dict(table="ring8", seeds=[0, 1], models=["gan", "mgan"], out=tmp_path / "out", overrides=[],
                  jobs=1, progress_every=1000, echo=lambda *a: None)
    first = reproduce.reproduce(**kwargs)
    assert sorted(calls) == ["gan/seed0", "gan/seed1", "mgan/seed0", "mgan/seed1"] and first["trained"] == 4
    assert first["rows"][1]["failed"] == [1]  # reported, not dropped
    assert "failed seeds [1]" in (tmp_path / "out" / "ring8.md").read_text()
    calls.clear()
    second = reproduce.reproduce(**kwargs)
    assert calls == ["mgan/seed1"] and second["trained"] == 1  # only the failed run is retried
    assert second["rows"][1]["seeds"] == 2
    calls.clear()
    (folder / "gan.yaml").write_text((folder / "gan.yaml").read_text().replace("g_lr: 1.0e-3", "g_lr: 5.0e-4"))
    reproduce.reproduce(**kwargs)
    assert sorted(calls) == ["gan/seed0", "gan/seed1"]  # the changed config reruns, the other is cached
    calls.clear()
    reproduce.reproduce(**{**kwargs, "overrides": ["--trainer.max_steps", "10"]})
    assert len(calls) == 4  # so do changed overrides
    out = tmp_path / "out"  # not the default folder, so the header's command names it
    assert f"reproduce.py ring8 --seeds 2 --models gan,mgan --out {out.resolve()} --set trainer.max_steps=10`" in (out / "ring8.md").read_text()
    reproduce.reproduce(**{**kwargs, "seeds": [3, 5]})
    assert f"reproduce.py ring8 --seed-list 3,5 --models gan,mgan --out {out.resolve()}`" in (out / "ring8.md").read_text()


def test_report_only_trains_nothing_and_lists_the_missing_runs(tmp_path, fake_experiments):
    folder, calls = fake_experiments
    kwargs = dict(table="ring8", models=["gan", "mgan"], out=tmp_path / "out", overrides=[], jobs=1,
                  progress_every=1000, echo=lambda *a: None)
    reproduce.reproduce(**kwargs, seeds=[0])  # trains gan/seed0 and mgan/seed0
    calls.clear()
    summary = reproduce.reproduce(**kwargs, seeds=[0, 1], report_only=True)
    assert calls == [] and summary["trained"] == 0
    assert sorted((r["model"], r["seed"]) for r in summary["results"]) == [("gan", 0), ("mgan", 0)]
    text = (tmp_path / "out" / "ring8.md").read_text()
    assert f"--seeds 2 --models gan,mgan --out {(tmp_path / 'out').resolve()} --report-only`" in text
    assert "Not run yet (2): gan/seed1, mgan/seed1." in text and "| GAN (ours) | 1 | 8.0 | 90.0 |" in text


def test_time_left_is_estimated_per_model_and_shrinks_as_runs_progress():
    left = reproduce.seconds_left
    assert math.isnan(left([("gan", 5.0, None)], ["gan"], [], slots=2))  # nothing to go on yet
    assert left([], [], [("gan", 100.0)], slots=2) == 0.0
    # models differ 10x in cost: each pending run is costed by its own model's finished runs
    assert left([], ["gan", "wgan_gp"], [("gan", 100.0), ("wgan_gp", 1000.0)], slots=2) == 1000.0  # the longest bounds it
    assert left([], ["gan"] * 4, [("gan", 100.0), ("gan", 300.0)], slots=2) == 400.0  # 4 x 200 s over 2 slots
    # a running run is extrapolated from its own pace, and the estimate shrinks as it advances
    assert left([("mbd", 300.0, 0.25)], [], [], slots=2) == pytest.approx(900.0)
    finished = [("unrolled", 1200.0)]
    early = left([("unrolled", 300.0, 0.25)], ["unrolled"], finished, slots=1)
    late = left([("unrolled", 900.0, 0.75)], ["unrolled"], finished, slots=1)
    assert early == pytest.approx(900.0 + 1200.0) and late == pytest.approx(300.0 + 1200.0)
    # the extrapolation also costs the same model's pending runs, when none has finished
    assert left([("mbd", 300.0, 0.25)], ["mbd"], [], slots=2) == pytest.approx(1200.0)
    # without progress, a run is costed by cached walls of its model (minus its elapsed time), then by the mean
    assert left([("unrolled", 100.0, None)], [], [], slots=2, known={"unrolled": [1500.0]}) == pytest.approx(1400.0)
    assert left([], ["infogan"], [("gan", 100.0), ("wgan_gp", 500.0)], slots=1) == pytest.approx(300.0)


def test_progress_lines_count_finished_runs_and_estimate_time_left(tmp_path, fake_experiments, monkeypatch):
    import time as time_module

    inner = reproduce.execute

    def slow(run, out, env):
        time_module.sleep(0.4)
        return inner(run, out, env)

    monkeypatch.setattr(reproduce, "execute", slow)
    lines = []
    reproduce.reproduce(table="ring8", seeds=[0, 1], models=["gan"], out=tmp_path / "out", overrides=[], jobs=1,
                        progress_every=0.1, echo=lines.append)
    progress = [line for line in lines if " done, about " in line]
    counts = [int(line.split("] ")[1].split("/")[0]) for line in progress]
    assert counts == sorted(counts) and counts[0] == 0 and 1 in counts, lines
    after_first = [line for line, n in zip(progress, counts) if n == 1]
    assert all("about unknown left" not in line for line in after_first), after_first  # one finished run costs the next
    assert all("/2 done" in line for line in progress)


def test_unknown_table_or_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no table 'ring9'"):
        reproduce.plan("ring9", ["gan"], [0], [])
    with pytest.raises(SystemExit, match=r"has no config for \['vae'\]"):
        reproduce.plan("ring8", ["gan", "vae"], [0], [])


def test_a_two_model_two_seed_ring_table_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # a relative --out: each run trains inside its own folder, paths must still hold
    lines = []
    summary = reproduce.main(["ring8", "--seeds", "2", "--models", "gan,mdgan", "--out", "out",
                              "--set", "trainer.max_steps=20", "--set", "data.init_args.batches_per_epoch=10",
                              "--set", "data.init_args.batch_size=64", "--jobs", "2", "--progress-every", "1000"])
    assert [r["status"] for r in summary["results"]] == ["ok"] * 4, summary["results"]
    assert all(r["g_steps"] == 10 for r in summary["results"])
    for r in summary["results"]:  # progress comes from the file train.py's ProgressFile callback writes
        folder = tmp_path / "out" / "runs" / r["model"] / f"seed{r['seed']}-{r['key']}"
        record = json.loads((folder / "progress.json").read_text())
        assert record["global_step"] == record["max_steps"] == 20 and reproduce._current_step(folder) == 20
    assert [(row["model"], row["seeds"]) for row in summary["rows"]] == [("gan", 2), ("mdgan", 2)]
    out = tmp_path / "out"
    text = (out / "ring8.md").read_text()
    assert "| GAN (ours) | 2 |" in text and "| MD-GAN (ours) | 2 |" in text and "PacGAN Table 1" in text
    assert (out / "ring8.csv").read_text().startswith("model,seeds,failed_seeds,modes_mean,modes_std,hq_mean")
    assert (out / "ring8_samples.png").exists() and (out / "ring8_modes.png").exists()
    # the grid really shows the runs' scatter plots (blue samples), not empty panels
    import matplotlib.image as mpimg

    grid = mpimg.imread(out / "ring8_samples.png")[..., :3]
    blue = (grid[..., 2] > 0.5) & (grid[..., 0] < 0.35)
    assert blue.mean() > 0.002, "the samples figure has no scatter plots in it"
    # the same command again trains nothing
    again = reproduce.main(["ring8", "--seeds", "2", "--models", "gan,mdgan", "--out", str(out),
                            "--set", "trainer.max_steps=20", "--set", "data.init_args.batches_per_epoch=10",
                            "--set", "data.init_args.batch_size=64", "--progress-every", "1000"])
    assert again["trained"] == 0 and again["rows"][0]["modes"] == summary["rows"][0]["modes"]
    commit = reproduce._commit()
    assert all(r["commit"] == commit for r in again["results"])  # each run records the code it was trained with
    assert f"Runs trained at commit {commit}; table written at commit {commit}" in (out / "ring8.md").read_text()
    # each run keeps a copy of its final sample plot beside result.json (committable), so the figure survives
    # the loss of the run's log folders (a fresh clone, another session)
    for r in again["results"]:
        folder = out / "runs" / r["model"] / f"seed{r['seed']}-{r['key']}"
        assert r["sample_plot"] == "samples.png" and (folder / "samples.png").exists()
        shutil.rmtree(folder / "runs")
    (out / "ring8_samples.png").unlink()
    reproduce.main(["ring8", "--seeds", "2", "--models", "gan,mdgan", "--out", str(out),
                    "--set", "trainer.max_steps=20", "--set", "data.init_args.batches_per_epoch=10",
                    "--set", "data.init_args.batch_size=64", "--progress-every", "1000"])
    grid = mpimg.imread(out / "ring8_samples.png")[..., :3]
    assert ((grid[..., 2] > 0.5) & (grid[..., 0] < 0.35)).mean() > 0.002, "the rebuilt figure lost the scatter plots"


def test_samples_figure_shows_the_seeds_whose_plots_exist_and_only_those():
    runs = [fake_result("mgan", seed) for seed in (4, 0, 3, 1, 2)]
    kept = {3, 4}  # e.g. seeds 0-2 trained before plots were kept beside result.json
    chosen = reproduce.figure_runs(runs, 3, lambda r: r["seed"] in kept)
    assert [r["seed"] for r in chosen] == [3, 4]  # no "plot not found" panel beside real ones
    assert [r["seed"] for r in reproduce.figure_runs(runs, 3, lambda r: True)] == [0, 1, 2]
    assert [r["seed"] for r in reproduce.figure_runs(runs, 2, lambda r: False)] == [0, 1]  # none at hand: say so


def test_a_failed_run_is_reported_with_its_exception_not_the_loggers_last_words():
    log = """Traceback (most recent call last):
  File "train.py", line 3, in <module>
    open("x/progress.json.tmp", "w")
FileNotFoundError: [Errno 2] No such file or directory: 'x/progress.json.tmp'
\x1b[1;34mwandb\x1b[0m: You can sync this run to the cloud by running:
\x1b[1;34mwandb\x1b[0m: \x1b[1mwandb sync runs/wandb/offline-run-1\x1b[0m
"""
    assert reproduce.failure_reason(log) == "FileNotFoundError: [Errno 2] No such file or directory: 'x/progress.json.tmp'"
    chained = "ValueError: inner\n\nThe above exception was the direct cause of:\nmodels.base.NonFiniteLossError: g_loss is nan\n"
    assert reproduce.failure_reason(chained) == "models.base.NonFiniteLossError: g_loss is nan"  # the last one
    usage = "usage: train.py [-h] ...\ntrain.py: error: Parser key \"model\": unexpected option 'foo'\n"
    assert reproduce.failure_reason(usage).startswith("train.py: error: Parser key")
    assert reproduce.failure_reason("Killed\n\n") == "Killed" and reproduce.failure_reason("") is None


def test_imported_seeds_are_labelled_in_the_table():
    results = [fake_result("gan", 0, modes=8, hq=90.0, kl=0.01), fake_result("gan", 1, modes=8, hq=92.0, kl=0.01)]
    results[0]["imported"] = "trained with train.py at commit abc"
    results[0]["wall_s"] = None
    rows = reproduce.aggregate(results, ["modes", "hq", "kl"])
    assert rows[0]["imported"] == [0] and rows[0]["wall_s"] == 11.0  # unknown wall time ignored, not zero
    text = reproduce.render_markdown("ring8", rows, ["modes", "hq", "kl"], [])
    assert "this repository, seeds 0,1 (imported from train.py runs: seeds 0; see their result.json)" in text
