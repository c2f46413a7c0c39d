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
earlier runs does on a new one). Each signal is judged a second way too, by a rule that needs no healthy level of
it (none is known on a user's data): its *worsening*, how many times worse it is than its best value at the run's
earlier evaluations, past a factor (2, the best in-sample factor of at least 1, and held out).

Writes `<table>_collapse_detection.md` beside the table (in `--out`, default results/<table>).

`--from-samples` judges runs whose protocol did not log the signals (the PacGAN-protocol tables, where the baseline
loses modes): it reads the points `callbacks.SampleScatter` kept at each evaluation (`samples/scatter_g*.npz`, of
every run folder under `--out`/runs, finished or not) and computes there, on those points against the run's own
validation split, both the ground truth (modes captured, KL: `callbacks.ModeCoverage`'s rules) and the signals
(`callbacks.DiversityMetrics`' computation on data features, its defaults). Where the scatter draws the same points
as DiversityMetrics (one batch of the same size from the same evaluation stream) the figures are the ones the
callback logs. Writes `<table>_collapse_detection_from_samples.md`, and the computed curves (one row per
evaluation) as `.csv` beside it.
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
from callbacks.collapse_monitor import worsening  # noqa: E402
from experiments import cache  # noqa: E402
from experiments.configs import EXPERIMENTS, PROTOCOL, data_mode_count, resolve  # noqa: E402
from models.checkpoints import import_class  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# signal: (direction, the threshold a monitor config would use)
SIGNALS: dict[str, tuple[str, float]] = {
    "ndb_fraction": ("above", 0.5), "jsd": ("above", 0.1), "duplicate_rate": ("above", 0.5),
    "coverage": ("below", 0.3), "recall": ("below", 0.3),
}


# The relative rule, for data whose healthy level of a signal is unknown: a signal detects when it is worse than its
# best value so far in the run by more than a factor (above-signals: value / lowest earlier value; below-signals:
# highest earlier value / value), the factor a monitor would use shown beside the best and held-out ones.
RELATIVE_FACTOR = 2.0
WORSENING = " worsening"  # the suffix of a derived signal: its worsening ratio against its best so far


def worsening_ratios(curve: Sequence[dict], signal: str, direction: str) -> list[Optional[float]]:
    """Per evaluation of `curve`, how many times worse `signal` is than its best value at the run's earlier
    evaluations (1 = as good; None at the first evaluation with a value and where the value is missing or not
    finite). Above-signals (lower is healthier): value / min(earlier); below-signals: max(earlier) / value. A best of
    0 (above) or a value of 0 (below) makes any worsening infinite."""
    ratios: list[Optional[float]] = []
    best: Optional[float] = None
    for entry in curve:
        value = entry.get(signal)
        if value is None or not math.isfinite(value):
            ratios.append(None)
            continue
        ratios.append(worsening(value, best, direction))  # the monitor's own ratio (None without a best)
        best = value if best is None else (min(best, value) if direction == "above" else max(best, value))
    return ratios


def with_worsening(curves: Sequence[Sequence[dict]]) -> list[list[dict]]:
    """The curves with each signal's worsening ratio added as `<signal> worsening` (see worsening_ratios)."""
    out = []
    for curve in curves:
        entries = [dict(e) for e in curve]
        for signal, (direction, _) in SIGNALS.items():
            if any(e.get(signal) is not None for e in curve):
                for entry, ratio in zip(entries, worsening_ratios(curve, signal, direction)):
                    if ratio is not None:
                        entry[signal + WORSENING] = ratio
        out.append(entries)
    return out


def past(value: float, threshold: float, direction: str) -> bool:
    return value > threshold if direction == "above" else value < threshold


def collapsed(entry: dict, collapsed_below: float, kl_above: Optional[float] = None) -> Optional[bool]:
    """The ground truth of one evaluation: fewer than `collapsed_below` modes captured, or (with `kl_above`) a KL of
    the high-quality samples' mode histogram to the data's above it; None where the entry lacks what it needs."""
    modes = entry.get("modes")
    if modes is None:
        return None
    if kl_above is None:
        return modes < collapsed_below
    kl = entry.get("kl")
    if kl is None:
        return None
    return modes < collapsed_below or not kl <= kl_above  # a NaN KL (no high-quality sample) is collapsed


def detection_quality(runs: Sequence[Sequence[dict]], signal: str, threshold: float, direction: str,
                      collapsed_below: float, kl_above: Optional[float] = None) -> dict[str, float]:
    """Precision, recall and F1 of `signal` past `threshold` against the ground truth (`collapsed`: `modes` <
    collapsed_below, or KL > kl_above), over every evaluation of `runs` (each a list of {"g_step", "modes", signal,
    ...}) that has both; and the median over runs (that collapse and are detected) of first detection step - first
    collapsed step. Counts too."""
    tp = fp = fn = tn = 0
    lags = []
    for curve in runs:
        first_truth = first_alarm = None
        for entry in curve:
            value, truth = entry.get(signal), collapsed(entry, collapsed_below, kl_above)
            if value is None or truth is None or not math.isfinite(value):
                continue
            alarm = past(value, threshold, direction)
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


def best_threshold(runs: Sequence[Sequence[dict]], signal: str, direction: str, collapsed_below: float,
                   kl_above: Optional[float] = None, floor: Optional[float] = None
                   ) -> Optional[tuple[float, dict[str, float]]]:
    """The threshold among the signal's observed values (midpoints) with the best F1, and its quality; with `floor`,
    among the thresholds at or above it only (a worsening factor below 1 would fire at evaluations better than the
    run's best)."""
    values = sorted({e[signal] for curve in runs for e in curve if e.get(signal) is not None and math.isfinite(e[signal])
                     and (floor is None or e[signal] >= floor)})
    if floor is not None:
        values = sorted({floor, *values})
    if len(values) < 2:
        return None
    candidates = [(a + b) / 2 for a, b in zip(values, values[1:])]
    scored = [(detection_quality(runs, signal, t, direction, collapsed_below, kl_above), t) for t in candidates]
    quality, threshold = max(scored, key=lambda qt: (qt[0]["f1"], -abs(qt[1])))
    return threshold, quality


def held_out_quality(runs: Sequence[Sequence[dict]], signal: str, direction: str, collapsed_below: float,
                     kl_above: Optional[float] = None, floor: Optional[float] = None
                     ) -> Optional[tuple[list[float], dict[str, float]]]:
    """Leave one run out: each run judged at the best-F1 threshold of the others (runs without a threshold of the
    others are skipped); the thresholds used and the quality from the counts summed over the judged runs (the
    median lag over them). None with fewer than 2 runs or nothing judged."""
    if len(runs) < 2:
        return None
    thresholds, counts, lags = [], {"tp": 0, "fp": 0, "fn": 0, "tn": 0}, []
    for i, curve in enumerate(runs):
        best = best_threshold([c for j, c in enumerate(runs) if j != i], signal, direction, collapsed_below, kl_above,
                              floor)
        if best is None:
            continue
        thresholds.append(best[0])
        q = detection_quality([curve], signal, best[0], direction, collapsed_below, kl_above)
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
    count = data_mode_count(data.get("init_args") or {})
    if count is not None:
        return count
    raise SystemExit(f"{table}'s data ({data.get('class_path')}) has no known mode count: pass --collapsed-below")


def read_runs(folder: Path) -> dict[str, list[tuple[int, list[dict]]]]:
    """{model: [(seed, curve), ...]} from the finished runs' result.json under `folder`/runs (not --restamp's check
    runs, reruns of a seed already there)."""
    runs: dict[str, list[tuple[int, list[dict]]]] = {}
    for path in sorted(p for p in folder.glob("runs/*/*/result.json") if not cache.is_check_folder(p.parent)):
        result = json.loads(path.read_text())
        if result.get("status") == "ok" and result.get("curve"):
            runs.setdefault(result["model"], []).append((result["seed"], result["curve"]))
    return runs


def diversity_values(real, fake, num_bins: int = 50, significance: float = 0.05, duplicate_quantile: float = 0.01,
                     seed: int = 0, reference: Optional[tuple] = None) -> tuple[dict[str, float], tuple]:
    """The signals `callbacks.DiversityMetrics` logs for generated `fake` against the reference `real` (data
    features: the rows themselves), by the callback's own functions; and the reference's statistics (NDB's bins,
    the duplicate threshold, the k-NN radii), to pass back as `reference` for the next evaluation of the same
    reference."""
    from callbacks.diversity import diversity_signals, fit_reference

    real, fake = real.flatten(1).float(), fake.flatten(1).float()
    if reference is None:
        reference = fit_reference(real, min(real.shape[0], fake.shape[0]), num_bins, duplicate_quantile, seed)
    values = diversity_signals(real, fake, reference, significance, duplicate_quantile)
    return {name: float(value) for name, value in values.items()}, reference


def _run_reference(version: Path):
    """The validation split a run evaluated against, rebuilt from its config.yaml (data class and arguments, and
    seed_everything where the data has no seed of its own)."""
    import torch
    import yaml

    config = yaml.safe_load((version / "config.yaml").read_text())
    data = config["data"]
    args = dict(data.get("init_args") or {})
    if args.get("seed") is None:
        args["seed"] = config.get("seed_everything")
    if args["seed"] is None:
        raise SystemExit(f"{version / 'config.yaml'}: neither data.init_args.seed nor seed_everything is set, so its "
                         f"validation split cannot be rebuilt")
    datamodule = import_class(data["class_path"])(**args)
    if not hasattr(datamodule, "centers"):
        raise SystemExit(f"{version}: --from-samples needs a 2D mixture datamodule; {data['class_path']} is not one")
    (points,) = next(iter(datamodule.val_dataloader()))  # the whole split: one batch
    return points, torch.as_tensor(datamodule.weights)


def curve_from_samples(run_folder: Path, **diversity) -> list[dict]:
    """One entry per kept scatter (every attempt's version folder) of the run in `run_folder`: the generator step,
    modes / hq / kl from the points by ModeCoverage's rules, and the DiversityMetrics signals of the points."""
    import numpy as np
    import torch

    from callbacks.mode_coverage import ModeCoverageMetric

    entries: dict[int, dict] = {}
    reference = real = weights = None
    for version in sorted(p.parent for p in run_folder.glob("**/version_*/config.yaml")):
        scatters = sorted(version.glob("samples/scatter_g*.npz"))
        if not scatters:
            continue
        if real is None:
            real, weights = _run_reference(version)
        for path in scatters:
            step = int(path.stem.removeprefix("scatter_g"))
            with np.load(path) as kept:
                points, centres, std = (torch.from_numpy(kept[k]) for k in ("samples", "centers", "std"))
            truth = ModeCoverageMetric(centres, float(std), weights=weights)
            truth.update(points)
            entry = {"g_step": step, **{k: float(v) for k, v in truth.compute().items()}}
            values, reference = diversity_values(real, points, reference=reference, **diversity)
            entries[step] = entry | values  # a step evaluated by two attempts: the later one's points
    return [entries[step] for step in sorted(entries)]


def read_sample_runs(folder: Path, **diversity) -> dict[str, list[tuple[int, list[dict]]]]:
    """{model: [(seed, curve), ...]} of every run folder under `folder`/runs that kept scatter points (not --restamp's
    check runs, reruns of a seed already there)."""
    runs: dict[str, list[tuple[int, list[dict]]]] = {}
    for run_folder in sorted(p for p in folder.glob("runs/*/seed*") if p.is_dir() and not cache.is_check_folder(p)):
        curve = curve_from_samples(run_folder, **diversity)
        if curve:
            seed = int(run_folder.name.removeprefix("seed").split("-")[0])
            runs.setdefault(run_folder.parent.name, []).append((seed, curve))
    return runs


def write_curves(path: Path, runs: dict[str, list[tuple[int, list[dict]]]]) -> None:
    """Every evaluation of every run as one CSV row: model, seed, then the entry's values."""
    import csv

    names = list(dict.fromkeys(k for model_runs in runs.values() for _, curve in model_runs for e in curve for k in e))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "seed", *names])
        writer.writeheader()
        for model, model_runs in runs.items():
            for seed, curve in model_runs:
                for entry in curve:
                    writer.writerow({"model": model, "seed": seed, **entry})


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def report(table: str, runs: dict[str, list[tuple[int, list[dict]]]], collapsed_below: float,
           from_samples: bool = False, kl_above: Optional[float] = None) -> str:
    curves = [curve for model_runs in runs.values() for _, curve in model_runs]
    evaluations = sum(1 for curve in curves for e in curve if e.get("modes") is not None)
    collapsed_count = sum(1 for curve in curves for e in curve if collapsed(e, collapsed_below, kl_above))
    truth = f"fewer than {collapsed_below:g} modes captured" + (f", or KL above {kl_above:g}" if kl_above is not None
                                                                 else "")
    lines = [f"# {table}: how well the label-free signals see collapse", "",
             "Runs: " + "; ".join(f"{m} seeds {','.join(str(s) for s, _ in r)}" for m, r in runs.items())
             + f". Evaluations: {evaluations}, of which {collapsed_count} collapsed ({truth}). Command: "
             f"`python experiments/collapse_detection.py {table} --collapsed-below {collapsed_below:g}"
             + (f" --kl-above {kl_above:g}" if kl_above is not None else "")
             + f" --models {','.join(runs)}{' --from-samples' if from_samples else ''}`."]
    if from_samples:
        lines += ["", "Computed after training from the 2,500 points each run kept at each evaluation "
                  "(`samples/scatter_g*.npz`), against the run's validation split: the ground truth by ModeCoverage's "
                  "rules and the signals by DiversityMetrics' (data features, 50 bins, level 0.05, duplicate "
                  "quantile 0.01). Evaluations kept per run (generator steps): "
                  + "; ".join(f"{m} seed {s_}: {len(c)} ({c[0]['g_step']:,}–{c[-1]['g_step']:,})"
                              for m, r in runs.items() for s_, c in r) + "."]
    lines += ["", "| signal | detects when | threshold | precision | recall | F1 | detections (TP / FP) | "
              "missed (FN) | median lag, G steps (runs) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    curves = with_worsening(curves)
    rules = [(signal, direction, direction, default, "monitor default") for signal, (direction, default) in SIGNALS.items()]
    rules += [(signal + WORSENING, "above", f"{'above' if direction == 'above' else 'below'} its best so far, by more "
               f"than", RELATIVE_FACTOR, "a factor of 2") for signal, (direction, _) in SIGNALS.items()]
    for signal, direction, shown_direction, default, default_label in rules:
        if not any(e.get(signal) is not None for curve in curves for e in curve):
            continue
        rows = [(default_label, default, detection_quality(curves, signal, default, direction, collapsed_below,
                                                           kl_above))]
        floor = 1.0 if signal.endswith(WORSENING) else None
        best = best_threshold(curves, signal, direction, collapsed_below, kl_above, floor)
        if best is not None:
            rows.append(("best F1 (in-sample)", f"{best[0]:.3g}", best[1]))
        held_out = held_out_quality(curves, signal, direction, collapsed_below, kl_above, floor)
        if held_out is not None:
            low, high = min(held_out[0]), max(held_out[0])
            shown = f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}–{high:.3g}"
            rows.append(("held out: best F1 of the other runs", shown, held_out[1]))
        for label, threshold, q in rows:
            threshold = threshold if isinstance(threshold, str) else f"{threshold:.3g}"
            lines.append(f"| {signal} | {shown_direction} | {threshold} ({label}) | {_fmt(q['precision'])} | "
                         f"{_fmt(q['recall'])} | {_fmt(q['f1'])} | {q['tp']} / {q['fp']} | {q['fn']} | "
                         f"{_fmt(q['median_lag'], 0)} ({q['runs_with_lag']}) |")
    lines += ["", "Lag: generator steps from a run's first collapsed evaluation to its first detection (negative: "
              "the signal fired first), median over the runs that have both. Held out: each run judged at the "
              "threshold of best F1 on the other runs (the range of those thresholds shown), counts summed over "
              "the runs; the in-sample row is the optimistic one. Worsening rows (a rule that needs no healthy level "
              "of the signal, so no calibration on data with known modes): the signal detects when it is worse than "
              "its best value at the run's earlier evaluations by more than the factor shown (jsd 0.02 at best, "
              "then 0.05: a factor of 2.5; recall 0.9 at best, then 0.3: a factor of 3); a run's first evaluation "
              "has no earlier one and is not judged by these rows."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("--out", type=Path, default=None, help="the table's results folder (default results/<table>)")
    parser.add_argument("--collapsed-below", type=float, default=None,
                        help="an evaluation with fewer modes captured counts as collapsed (default: half the modes)")
    parser.add_argument("--kl-above", type=float, default=None,
                        help="an evaluation whose KL (high-quality samples' mode histogram to the data's) is above "
                             "this counts as collapsed too (default: modes alone)")
    parser.add_argument("--models", default=None,
                        help="comma-separated models whose runs to judge (default: every model with runs)")
    parser.add_argument("--from-samples", action="store_true",
                        help="compute the truth and the signals from the points the runs kept at each evaluation "
                             "(samples/scatter_g*.npz), for runs that did not log the signals; any run, finished or "
                             "not")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "results" / args.table
    runs = read_sample_runs(out) if args.from_samples else read_runs(out)
    what = ("runs with kept scatter points (samples/scatter_g*.npz)" if args.from_samples
            else "finished runs with curves")
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - set(runs))
        if unknown:
            raise SystemExit(f"--models {args.models}: no {what} of {unknown} under {out}/runs; "
                             f"there are runs of {sorted(runs)}")
        runs = {m: runs[m] for m in wanted}
    if not runs:
        raise SystemExit(f"no {what} under {out}/runs: train the table first "
                         f"(python experiments/reproduce.py {args.table})")
    collapsed_below = args.collapsed_below if args.collapsed_below is not None else data_modes(args.table) / 2
    text = report(args.table, runs, collapsed_below, from_samples=args.from_samples, kl_above=args.kl_above)
    name = f"{args.table}_collapse_detection{'_from_samples' if args.from_samples else ''}"
    (out / f"{name}.md").write_text(text)
    if args.from_samples:  # the computed curves, so the figures can be checked without the runs' folders
        write_curves(out / f"{name}.csv", runs)
    print(text)
    return text


if __name__ == "__main__":
    main()
