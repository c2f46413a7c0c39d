"""How well the label-free diversity signals see mode collapse, measured on a table's finished runs.

    python experiments/collapse_detection.py grid25_veegan
    python experiments/collapse_detection.py grid25_veegan --collapsed-below 12.5 --out results/grid25_veegan

Every run of a table whose protocol logs both the mode counts (callbacks.ModeCoverage) and the label-free signals
(callbacks.DiversityMetrics) records, at each evaluation, the ground truth and the signals (its result.json
"curve"). Each evaluation is labelled *collapsed* when fewer than `--collapsed-below` modes are captured (default:
half the data's modes). A signal *detects* at an evaluation when it is past its threshold, as
callbacks.CollapseMonitor decides with patience 1. Over all evaluations of all runs this gives, per signal and
threshold, the precision (of the detections, the share at collapsed evaluations) and the recall (of the collapsed
evaluations, the share detected), and per run the generator steps from the first collapsed evaluation to the
first detection (negative: the signal fired first). Each signal is shown at the threshold CollapseMonitor's
configs use, at the threshold of best F1 on these same runs (in-sample: an optimistic figure), and held out: each
run judged at the best-F1 threshold of the other runs, the counts summed over runs (what a threshold chosen on
earlier runs does on a new one).

Writes `<table>_collapse_detection.md` beside the table (in `--out`, default results/<table>).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments.configs import EXPERIMENTS, PROTOCOL, resolve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# signal: (direction, the threshold a monitor config would use)
SIGNALS: dict[str, tuple[str, float]] = {
    "ndb_fraction": ("above", 0.5), "jsd": ("above", 0.1), "duplicate_rate": ("above", 0.5),
    "coverage": ("below", 0.3), "recall": ("below", 0.3),
}


def past(value: float, threshold: float, direction: str) -> bool:
    return value > threshold if direction == "above" else value < threshold


def detection_quality(runs: Sequence[Sequence[dict]], signal: str, threshold: float, direction: str,
                      collapsed_below: float) -> dict[str, float]:
    """Precision, recall and F1 of `signal` past `threshold` against `modes` < collapsed_below, over every evaluation
    of `runs` (each a list of {"g_step", "modes", signal, ...}) that has both; and the median over runs (that collapse
    and are detected) of first detection step - first collapsed step. Counts too."""
    tp = fp = fn = tn = 0
    lags = []
    for curve in runs:
        first_truth = first_alarm = None
        for entry in curve:
            value, modes = entry.get(signal), entry.get("modes")
            if value is None or modes is None or not math.isfinite(value):
                continue
            truth, alarm = modes < collapsed_below, past(value, threshold, direction)
            tp, fp, fn, tn = tp + (truth and alarm), fp + (alarm and not truth), fn + (truth and not alarm), \
                tn + (not truth and not alarm)
            if truth and first_truth is None:
                first_truth = entry["g_step"]
            if alarm and first_alarm is None:
                first_alarm = entry["g_step"]
        if first_truth is not None and first_alarm is not None:
            lags.append(first_alarm - first_truth)
    return _quality(tp, fp, fn, tn, lags)


def _quality(tp: int, fp: int, fn: int, tn: int, lags: Sequence[float]) -> dict[str, float]:
    """Precision, recall and F1 from the counts, the counts, and the median of the runs' lags."""
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    median = statistics.median(lags) if lags else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "median_lag": median, "runs_with_lag": len(lags)}


def best_threshold(runs: Sequence[Sequence[dict]], signal: str, direction: str, collapsed_below: float
                   ) -> Optional[tuple[float, dict[str, float]]]:
    """The threshold among the signal's observed values (midpoints) with the best F1, and its quality."""
    values = sorted({e[signal] for curve in runs for e in curve if e.get(signal) is not None and math.isfinite(e[signal])})
    if len(values) < 2:
        return None
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])]
    scored = [(detection_quality(runs, signal, t, direction, collapsed_below), t) for t in candidates]
    quality, threshold = max(scored, key=lambda qt: (qt[0]["f1"], -abs(qt[1])))
    return threshold, quality


def held_out_quality(runs: Sequence[Sequence[dict]], signal: str, direction: str, collapsed_below: float
                     ) -> Optional[tuple[list[float], dict[str, float]]]:
    """Leave one run out: each run judged at the best-F1 threshold of the others (runs without a threshold of the
    others are skipped); the thresholds used and the quality from the counts summed over the judged runs (the
    median lag over them). None with fewer than 2 runs or nothing judged."""
    if len(runs) < 2:
        return None
    thresholds, counts, lags = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}, []
    for i, curve in enumerate(runs):
        best = best_threshold([c for j, c in enumerate(runs) if j != i], signal, direction, collapsed_below)
        if best is None:
            continue
        thresholds.append(best[0])
        q = detection_quality([curve], signal, best[0], direction, collapsed_below)
        for key in counts:
            counts[key] += q[key]
        if q["runs_with_lag"]:
            lags.append(q["median_lag"])
    if not thresholds:
        return None
    return thresholds, _quality(counts["tp"], counts["fp"], counts["fn"], counts["tn"], lags)


def data_modes(table: str) -> int:
    """How many modes the table's data has (Ring: num_modes; Grid: side^2), from its resolved protocol."""
    data = resolve([EXPERIMENTS / table / PROTOCOL])["data"]
    args = data.get("init_args", {})
    if "num_modes" in args:
        return int(args["num_modes"])
    if "side" in args:
        return int(args["side"]) ** 2
    raise SystemExit(f"{table}'s data ({data.get('class_path')}) has no known mode count: pass --collapsed-below")


def read_runs(folder: Path) -> dict[str, list[tuple[int, list[dict]]]]:
    """{model: [(seed, curve), ...]} from the finished runs' result.json under `folder`/runs."""
    runs: dict[str, list[tuple[int, list[dict]]]] = {}
    for path in sorted(folder.glob("runs/*/*/result.json")):
        result = json.loads(path.read_text())
        if result.get("status") == "ok" and result.get("curve"):
            runs.setdefault(result["model"], []).append((result["seed"], result["curve"]))
    return runs


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report(table: str, runs: dict[str, list[tuple[int, list[dict]]]], collapsed_below: float) -> str:
    curves = [curve for model_runs in runs.values() for _, curve in model_runs]
    evaluations = sum(1 for curve in curves for e in curve if e.get("modes") is not None)
    collapsed = sum(1 for curve in curves for e in curve if e.get("modes") is not None and e["modes"] < collapsed_below)
    lines = [f"# {table}: how well the label-free signals see collapse", "",
             "Runs: " + "; ".join(f"{m} seeds {','.join(str(s) for s, _ in r)}" for m, r in runs.items())
             + f". Evaluations: {evaluations}, of which {collapsed} collapsed (fewer than {collapsed_below:g} modes "
             f"captured). Command: `python experiments/collapse_detection.py {table} --collapsed-below {collapsed_below:g}"
             f" --models {','.join(runs)}`.",
             "", "| signal | detects when | threshold | precision | recall | F1 | detections (TP / FP) | missed (FN) | "
             "median lag, G steps (runs) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for signal, (direction, default) in SIGNALS.items():
        if not any(e.get(signal) is not None for curve in curves for e in curve):
            continue
        rows = [("monitor default", default, detection_quality(curves, signal, default, direction, collapsed_below))]
        best = best_threshold(curves, signal, direction, collapsed_below)
        if best is not None:
            rows.append(("best F1 (in-sample)", f"{best[0]:.3g}", best[1]))
        held_out = held_out_quality(curves, signal, direction, collapsed_below)
        if held_out is not None:
            low, high = min(held_out[0]), max(held_out[0])
            shown = f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}–{high:.3g}"
            rows.append(("held out: best F1 of the other runs", shown, held_out[1]))
        for label, threshold, q in rows:
            threshold = threshold if isinstance(threshold, str) else f"{threshold:.3g}"
            lines.append(f"| {signal} | {direction} | {threshold} ({label}) | {_fmt(q['precision'])} | "
                         f"{_fmt(q['recall'])} | {_fmt(q['f1'])} | {q['tp']} / {q['fp']} | {q['fn']} | "
                         f"{_fmt(q['median_lag'], 0)} ({q['runs_with_lag']}) |")
    lines += ["", "Lag: generator steps from a run's first collapsed evaluation to its first detection (negative: "
              "the signal fired first), median over the runs that have both. Held out: each run judged at the "
              "threshold of best F1 on the other runs (the range of those thresholds shown), counts summed over "
              "the runs; the in-sample row is the optimistic one."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("--out", type=Path, default=None, help="the table's results folder (default results/<table>)")
    parser.add_argument("--collapsed-below", type=float, default=None,
                        help="an evaluation with fewer modes captured counts as collapsed (default: half the modes)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models whose runs to judge (default: every model with runs)")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "results" / args.table
    runs = read_runs(out)
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - set(runs))
        if unknown:
            raise SystemExit(f"--models {args.models}: no finished runs with curves of {unknown} under {out}/runs; "
                             f"there are runs of {sorted(runs)}")
        runs = {m: runs[m] for m in wanted}
    if not runs:
        raise SystemExit(f"no finished runs with curves under {out}/runs: train the table first "
                         f"(python experiments/reproduce.py {args.table})")
    collapsed_below = args.collapsed_below if args.collapsed_below is not None else data_modes(args.table) / 2
    text = report(args.table, runs, collapsed_below)
    (out / f"{args.table}_collapse_detection.md").write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
