"""experiments/collapse_detection.py: precision, recall, F1 and lag counted by hand on made-up curves, the best
threshold, and the report from result.json files."""

from __future__ import annotations

import json
import math

import pytest

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
    for model, seed, curve in (("gan", 0, RUN_A), ("veegan", 0, RUN_B)):
        folder = tmp_path / "runs" / model / f"seed{seed}-abc"
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
