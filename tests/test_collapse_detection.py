"""experiments/collapse_detection.py: precision, recall, F1 and lag counted by hand on made-up curves, the best
threshold, and the report from result.json files."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments import collapse_detection as cd

# two runs, modes collapsing below 10 from step 3 (run a) and never (run b); the signal rises with the collapse in
# run a one step early, and once falsely in run b
RUN_A = [{"g_step": 1, "modes": 25, "ndb_fraction": 0.1}, {"g_step": 2, "modes": 20, "ndb_fraction": 0.6},
         {"g_step": 3, "modes": 5, "ndb_fraction": 0.9}, {"g_step": 4, "modes": 2, "ndb_fraction": 0.4}]
RUN_B = [{"g_step": 1, "modes": 25, "ndb_fraction": 0.2}, {"g_step": 2, "modes": 24, "ndb_fraction": 0.7},
         {"g_step": 3, "modes": 25, "ndb_fraction": float("nan")}]


def test_counts_precision_recall_and_lag_by_hand():
    q = cd.detection_quality([RUN_A, RUN_B], "ndb_fraction", 0.5, "above", collapsed_below=10)
    # alarms at a2, a3, b2; collapsed a3, a4; the NaN evaluation is left out
    assert (q["tp"], q["fp"], q["fn"], q["tn"]) == (1, 2, 1, 2)
    assert q["precision"] == pytest.approx(1 / 3) and q["recall"] == pytest.approx(1 / 2)
    assert q["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert q["median_lag"] == -1 and q["runs_with_lag"] == 1  # run a: first alarm at 2, first collapse at 3
    below = cd.detection_quality([RUN_A], "ndb_fraction", 0.5, "below", collapsed_below=10)
    assert (below["tp"], below["fp"]) == (1, 1)  # 0.1 (not collapsed) and 0.4 (collapsed) are below 0.5


def test_best_threshold_is_the_midpoint_with_the_best_f1():
    threshold, q = cd.best_threshold([RUN_A, RUN_B], "ndb_fraction", "above", collapsed_below=10)
    # only 0.9 and 0.4 are collapsed evaluations; thresholds between 0.7 and 0.9 catch 0.9 alone: F1 2/3;
    # 0.3 (between 0.2 and 0.4) catches both with 2 false alarms: F1 4/6 = 2/3, a tie broken by the smaller |t|
    assert q["f1"] == pytest.approx(2 / 3) and threshold == pytest.approx(0.3)


def test_held_out_thresholds_come_from_the_other_runs_worked_by_hand():
    # recall below the threshold detects; collapsed below 4 modes. (recall, modes) per run:
    # run 1: (0.1, 1) (0.9, 8); run 2: (0.3, 1) (0.5, 8); run 3: (0.6, 1) (0.95, 8)
    def run(*pairs):
        return [{"g_step": i + 1, "recall": r, "modes": m} for i, (r, m) in enumerate(pairs)]
    runs = [run((0.1, 1), (0.9, 8)), run((0.3, 1), (0.5, 8)), run((0.6, 1), (0.95, 8))]
    # without run 1: 0.3 c, 0.5 h, 0.6 c, 0.95 h -> best 0.775 (TP 2, FP 1: F1 0.8); run 1 at 0.775: TP, TN
    # without run 2: 0.1 c, 0.6 c, 0.9 h, 0.95 h -> best 0.75 (F1 1); run 2 at 0.75: TP (0.3), FP (0.5)
    # without run 3: 0.1 c, 0.3 c, 0.5 h, 0.9 h -> best 0.4 (F1 1); run 3 at 0.4: FN (0.6), TN
    thresholds, q = cd.held_out_quality(runs, "recall", "below", collapsed_below=4)
    assert thresholds == pytest.approx([0.775, 0.75, 0.4])
    assert (q["tp"], q["fp"], q["fn"], q["tn"]) == (2, 1, 1, 2)
    assert q["precision"] == pytest.approx(2 / 3) and q["recall"] == pytest.approx(2 / 3)
    assert q["f1"] == pytest.approx(2 / 3) and q["median_lag"] == 0 and q["runs_with_lag"] == 2
    # in-sample, the same data look better than held out: 0.75 on all three runs catches 0.1, 0.3, 0.6 and 0.5 (F1 0.857)
    assert cd.best_threshold(runs, "recall", "below", 4)[1]["f1"] > q["f1"]
    assert cd.held_out_quality(runs[:1], "recall", "below", 4) is None  # one run: nothing to hold out against


def test_report_from_result_files(tmp_path):
    # the last is --restamp's check run of gan seed 0 (a rerun beside it): not a run of its own, so not counted
    for model, seed, curve, name in (("gan", 0, RUN_A, "seed0-abc"), ("veegan", 0, RUN_B, "seed0-abc"),
                                     ("gan", 0, RUN_A, "seed0-abc-check-0123456789ab")):
        folder = tmp_path / "runs" / model / name
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps({"status": "ok", "model": model, "seed": seed, "curve": curve}))
    text = cd.main(["grid25_veegan", "--out", str(tmp_path), "--collapsed-below", "10"])
    assert "Evaluations: 7, of which 2 collapsed (fewer than 10 modes captured)" in text
    assert "| ndb_fraction | above | 0.5 (monitor default) | 0.33 | 0.50 | 0.40 | 1 / 2 | 1 | -1 (1) |" in text
    assert (tmp_path / "grid25_veegan_collapse_detection.md").read_text() == text
    assert cd.data_modes("grid25_veegan") == 25 and cd.data_modes("ring8") == 8
    assert math.isnan(cd.detection_quality([], "jsd", 0.1, "above", 10)["precision"])
    # the runs of chosen models only: run a alone has 4 evaluations, 2 collapsed, and the signal catches 1 of them
    only_gan = cd.main(["grid25_veegan", "--out", str(tmp_path), "--collapsed-below", "10", "--models", "gan"])
    assert "Runs: gan seeds 0. Evaluations: 4, of which 2 collapsed" in only_gan and "--models gan`" in only_gan
    assert "| ndb_fraction | above | 0.5 (monitor default) | 0.50 | 0.50 | 0.50 | 1 / 1 | 1 | -1 (1) |" in only_gan
    with pytest.raises(SystemExit, match=r"--models gan,mgan: no finished runs with curves of \['mgan'\]"):
        cd.main(["grid25_veegan", "--out", str(tmp_path), "--models", "gan,mgan"])


def test_the_truth_with_a_kl_bound_by_hand():
    assert cd.collapsed({"modes": 7, "kl": 0.01}, 8) is True and cd.collapsed({"modes": 8, "kl": 0.5}, 8) is False
    assert cd.collapsed({"modes": 8, "kl": 0.5}, 8, kl_above=0.2) is True
    assert cd.collapsed({"modes": 8, "kl": 0.1}, 8, kl_above=0.2) is False
    assert cd.collapsed({"modes": 8, "kl": float("nan")}, 8, kl_above=0.2) is True  # no high-quality sample at all
    assert cd.collapsed({"modes": 8}, 8, kl_above=0.2) is None and cd.collapsed({"kl": 0.1}, 8) is None
    # RUN_B's evaluations all have 24-25 modes; with a KL bound the one with KL 0.3 becomes collapsed
    curve = [dict(e, kl=k) for e, k in zip(RUN_B, (0.0, 0.3, 0.0))]
    q = cd.detection_quality([curve], "ndb_fraction", 0.5, "above", collapsed_below=10, kl_above=0.2)
    assert (q["tp"], q["fp"], q["fn"], q["tn"]) == (1, 0, 0, 1)  # 0.7 at the KL-0.3 evaluation; the NaN left out


def _scatter(folder, step, points, centres, std):
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    np.savez(folder / "samples" / f"scatter_g{step:07d}.npz", samples=np.asarray(points, np.float32),
             centers=np.asarray(centres, np.float32), std=np.float32(std))


def test_curves_from_kept_points_of_known_answers(tmp_path):
    """Points on 4 of the ring's 8 modes, in equal shares: 4 modes, KL log 2, every point high quality, and about
    half the validation split's neighbourhoods covered; points drawn from the data itself: 8 modes, recall and
    coverage near 1, NDB near its false-positive rate."""
    from datamodules import Ring

    data = Ring(num_modes=8, radius=1.0, std=0.01, val_size=1000, seed=3)
    (real,) = next(iter(data.val_dataloader()))
    version = tmp_path / "runs" / "gan" / "seed3-abc" / "runs" / "x" / "version_0"
    version.mkdir(parents=True)
    (version / "config.yaml").write_text(yaml.safe_dump({"seed_everything": 3, "data": {
        "class_path": "datamodules.Ring", "init_args": {"num_modes": 8, "radius": 1.0, "std": 0.01, "val_size": 1000,
                                                        "seed": None}}}))
    rng = np.random.default_rng(0)
    centres = data.centers.numpy()
    half = centres[np.arange(1000) % 4] + 0.01 * rng.standard_normal((1000, 2))
    same, _ = data.sample(1000, np.random.default_rng(7))
    _scatter(version, 2000, half, centres, 0.01)
    _scatter(version, 1000, same.numpy(), centres, 0.01)
    check = tmp_path / "runs" / "gan" / "seed3-abc-check-0123456789ab" / "runs" / "x" / "version_0"
    shutil.copytree(version, check)  # --restamp's rerun of the same seed: left out
    runs = cd.read_sample_runs(tmp_path, num_bins=20)
    assert list(runs) == ["gan"] and len(runs["gan"]) == 1 and runs["gan"][0][0] == 3
    first, second = runs["gan"][0][1]
    assert (first["g_step"], second["g_step"]) == (1000, 2000)
    assert first["modes"] == 8 and first["kl"] < 0.01 and first["hq"] > 98
    # KL of the high-quality points' mode shares to uniform over 8, counted here with numpy: near log 2
    own = np.linalg.norm(half - centres[np.arange(1000) % 4], axis=1) <= 0.03
    q = np.bincount((np.arange(1000) % 4)[own], minlength=4) / own.sum()
    assert second["modes"] == 4 and second["hq"] == pytest.approx(100 * own.mean())
    assert second["kl"] == pytest.approx(float((q * np.log(q * 8)).sum()), rel=1e-6)
    assert second["kl"] == pytest.approx(math.log(2), abs=1e-3)
    assert first["recall"] > 0.9 and first["coverage"] > 0.85 and first["ndb_fraction"] <= 0.15
    assert second["coverage"] == pytest.approx(0.5, abs=0.06)  # half the real points' neighbourhoods are empty
    assert second["ndb_fraction"] >= 0.5  # every bin of the 4 missing modes, at least, differs
    assert real.shape == (1000, 2)
    text = cd.main(["ring8", "--out", str(tmp_path), "--from-samples", "--collapsed-below", "8"])
    assert "Evaluations: 2, of which 1 collapsed (fewer than 8 modes captured)" in text
    assert "gan seed 3: 2 (1,000–2,000)" in text
    rows = list(csv.DictReader(open(tmp_path / "ring8_collapse_detection_from_samples.csv")))
    assert [(r["model"], r["seed"], r["g_step"], r["modes"]) for r in rows] == [("gan", "3", "1000", "8.0"),
                                                                                ("gan", "3", "2000", "4.0")]


def test_from_samples_gives_what_the_callbacks_logged_during_training(tmp_path, monkeypatch):
    """A short ring run with ModeCoverage, DiversityMetrics (one batch, so it draws the scatter's points) and
    SampleScatter: the curve rebuilt after training from the kept points and the run's config.yaml equals the
    values the callbacks logged at every evaluation."""
    import sys

    import train
    from experiments.configs import compose_args

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py"])
    root = Path(__file__).resolve().parents[1]
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({
        # wide modes, so that the young generator's points near the origin already count for some of them
        "data": {"init_args": {"batches_per_epoch": 5, "val_size": 400, "batch_size": 64, "std": 0.7}},
        "trainer": {"max_steps": 30, "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                 "init_args": {"save_dir": "runs", "name": "r"}}],
                    "callbacks": [{"class_path": "callbacks.ModeCoverage", "init_args": {"num_samples": 400}},
                                  {"class_path": "callbacks.DiversityMetrics",
                                   "init_args": {"num_samples": 400, "batch_size": 400, "num_bins": 10}},
                                  {"class_path": "callbacks.SampleScatter", "init_args": {"num_samples": 400}}]}}))
    train.main(args=["fit", *compose_args(root / "experiments" / "ring8" / "gan.yaml"), "--config", str(extra),
                     "--seed_everything", "5", "--trainer.accelerator", "cpu",
                     "--trainer.enable_progress_bar", "false"])
    run = tmp_path / "runs" / "gan" / "seed5-k"
    run.parent.mkdir()
    (tmp_path / "runs" / "r").rename(run)
    (curve,) = [c for _, c in cd.read_sample_runs(tmp_path, num_bins=10)["gan"]]
    logged = [row for row in csv.DictReader(open(next(run.glob("version_*/metrics.csv")))) if row.get("val/modes")]
    assert len(curve) == len(logged) == 3  # evaluations at generator steps 5, 10, 15
    assert [e["g_step"] for e in curve] == [5, 10, 15] and all(e["modes"] > 0 and e["recall"] > 0 for e in curve)
    for entry, row in zip(curve, logged):
        for name in ("modes", "hq", "kl", "ndb_fraction", "jsd", "duplicate_rate", "recall", "coverage"):
            assert entry[name] == pytest.approx(float(row[f"val/{name}"]), rel=1e-5, abs=1e-6, nan_ok=True), \
                (entry["g_step"], name)


def test_worsening_ratios_against_the_best_earlier_value_by_hand():
    jsd = [{"jsd": v} for v in (0.04, 0.02, 0.05, float("nan"), 0.01, 0.03)]
    # first: no earlier value; 0.02/0.04; 0.05/0.02; NaN skipped; 0.01/0.02; 0.03/0.01 (the best is now 0.01)
    assert cd.worsening_ratios(jsd, "jsd", "above") == pytest.approx([None, 0.5, 2.5, None, 0.5, 3.0], nan_ok=False)
    recall = [{"recall": v} for v in (0.5, 0.9, 0.3, 0.0)]
    # below-signal: best (highest) earlier / value: 0.5/0.9, 0.9/0.3, and a value of 0 is infinitely worse
    assert cd.worsening_ratios(recall, "recall", "below") == pytest.approx([None, 0.5 / 0.9, 3.0, math.inf])
    duplicates = [{"duplicate_rate": v} for v in (0.0, 0.0, 0.001)]  # a best of 0: equal is 1, any rise infinite
    assert cd.worsening_ratios(duplicates, "duplicate_rate", "above") == [None, 1.0, math.inf]


def test_worsening_rule_detects_a_rise_from_the_run_s_own_level():
    # run a's jsd doubles from its best as it loses modes; run b's stays flat at a level an absolute threshold of
    # 0.1 would call collapsed: the worsening rule calls b healthy and a collapsed, where the absolute rule cannot
    a = [{"g_step": s, "modes": m, "jsd": j} for s, m, j in ((1, 25, 0.03), (2, 24, 0.035), (3, 8, 0.08), (4, 5, 0.2))]
    b = [{"g_step": s, "modes": 25, "jsd": 0.15} for s in (1, 2, 3, 4)]
    curves = cd.with_worsening([a, b])
    assert [e.get("jsd worsening") for e in curves[0]] == pytest.approx([None, 35 / 30, 8 / 3, 20 / 3])
    q = cd.detection_quality(curves, "jsd worsening", 2.0, "above", collapsed_below=10)
    assert (q["tp"], q["fp"], q["fn"], q["tn"]) == (2, 0, 0, 4)  # a3, a4 detected; a2, b2-b4 not; a1, b1 unjudged
    assert q["median_lag"] == 0 and q["runs_with_lag"] == 1
    absolute = cd.detection_quality([a, b], "jsd", 0.1, "above", collapsed_below=10)
    assert (absolute["tp"], absolute["fp"], absolute["fn"]) == (1, 4, 1)
    text = cd.report("grid25", {"gan": [(0, a), (1, b)]}, collapsed_below=10)
    assert ("| jsd worsening | above its best so far, by more than | 2 (a factor of 2) | 1.00 | 1.00 | 1.00 | 2 / 0 "
            "| 0 | 0 (1) |") in text


def test_best_worsening_factor_is_searched_from_one_up():
    # ratios 0.5 (healthy), 1.5 (collapsed), 3 (collapsed): without a floor the best midpoint would be 1.0 or below
    # only by ties; with the floor the candidates are the midpoints of 1, 1.5, 3: 1.25 catches both collapsed ones
    curve = [{"g_step": i, "modes": m, "x": r} for i, (m, r) in enumerate(((25, 0.5), (5, 1.5), (4, 3.0)))]
    threshold, q = cd.best_threshold([curve], "x", "above", collapsed_below=10, floor=1.0)
    assert threshold == pytest.approx(1.25) and q["f1"] == 1.0
    only_low = [{"g_step": 0, "modes": 5, "x": 0.5}, {"g_step": 1, "modes": 5, "x": 0.8}]
    assert cd.best_threshold([only_low], "x", "above", collapsed_below=10, floor=1.0) is None  # nothing at or above 1
