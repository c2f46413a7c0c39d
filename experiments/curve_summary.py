"""Summarise the per-evaluation curve of runs over a window of generator steps, finished or still training.

    python experiments/curve_summary.py results/ring8_pacgan/runs/gan/seed0-* --to-step 61000
    python experiments/curve_summary.py results/ring8_pacgan*/runs/*/seed0-* --from-step 300000

A table's figures read each run's last evaluation (as the papers do); a generator that wanders between collapsed
and not, or a run still training, is better described by its whole curve. For each run folder (a reproduce.py run:
`result.json` once finished, else the run record `runs/*/version_*/run.json` written at every evaluation) this
prints, over the evaluations whose generator step lies in [--from-step, --to-step]: how many there are, the mean
modes captured, the share of evaluations that captured every mode of the data, the mean and median KL and the mean
HQ %, and the last evaluation's figures. The data's mode count comes from the run's config (a Ring's num_modes, a
Grid's side squared), or for a committed result without its log folder, from its table's configs where they still
give the run's key.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Optional

import yaml

if __package__ in (None, ""):  # run as a script: the project root holds the experiments package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import configs  # noqa: E402


def run_curve(folder: Path) -> tuple[list[dict], str]:
    """The run's evaluations (dicts with g_step, modes, kl, hq, ...) and where they were read: the finished run's
    result.json curve, else the newest run record's history."""
    result = folder / "result.json"
    if result.exists():
        data = json.loads(result.read_text())
        if data.get("status") == "ok" and data.get("curve"):
            return data["curve"], "finished"
    records = sorted(folder.glob("runs/*/version_*/run.json"), key=lambda p: p.stat().st_mtime)
    if not records:
        raise SystemExit(f"{folder}: neither a finished result.json with a curve nor a run record "
                         f"(runs/*/version_*/run.json): is it a reproduce.py run folder?")
    record = json.loads(records[-1].read_text())
    return record.get("history") or [], f"training, at generator step {record.get('g_steps', '?'):,}"


def data_modes(folder: Path) -> Optional[int]:
    """The mode count of the run's data (num_modes, or side squared) from its config.yaml, else, for a finished run
    whose log folder is not kept (a committed result in another clone), from its table's configs of its model
    when they resolve to the run's key (the config it trained with); None otherwise."""
    written = sorted(folder.glob("runs/*/version_*/config.yaml"))
    if written:
        config = yaml.safe_load(written[-1].read_text())
        return configs.data_mode_count((config.get("data") or {}).get("init_args") or {})
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if not (result.get("table") and result.get("model") and result.get("key")):
        return None
    from experiments.runner import Run  # imports Lightning: only where a run's config must be resolved

    run = Run(result["table"], result["model"], int(result.get("seed", 0)),
              configs.EXPERIMENTS / result["table"] / f"{result['model']}.yaml")
    if not all(f.is_file() for f in run.configs) or run.key != result["key"]:  # changed since, or had overrides
        return None
    resolved = configs.resolve(run.configs, run.train_args())
    return configs.data_mode_count((resolved.get("data") or {}).get("init_args") or {})


def summarise(curve: list[dict], modes: Optional[int], first: int = 0, last: Optional[int] = None) -> dict:
    """The window's figures (see the module docstring); `evaluations` 0 and nothing else when it is empty."""
    window = [e for e in curve if e["g_step"] >= first and (last is None or e["g_step"] <= last)]
    if not window:
        return {"evaluations": 0}
    counts = [e["modes"] for e in window]
    kls = [e["kl"] for e in window if e.get("kl") is not None and math.isfinite(e["kl"])]
    return {"evaluations": len(window), "from": window[0]["g_step"], "to": window[-1]["g_step"],
            "modes_mean": statistics.fmean(counts),
            "all_modes_share": (sum(c >= modes for c in counts) / len(counts)) if modes else None,
            "kl_mean": statistics.fmean(kls) if kls else None, "kl_median": statistics.median(kls) if kls else None,
            "hq_mean": statistics.fmean(e["hq"] for e in window), "last": window[-1]}


def _f(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def main(argv: Optional[list[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (results/<table>/runs/<model>/seed<s>-<key>)")
    parser.add_argument("--from-step", type=int, default=0, help="first generator step of the window (default 0)")
    parser.add_argument("--to-step", type=int, default=None, help="last generator step of the window (default: "
                                                                   "the last evaluation)")
    args = parser.parse_args(argv)
    if args.to_step is not None and args.to_step < args.from_step:
        raise SystemExit(f"--to-step {args.to_step} is before --from-step {args.from_step}: give a window whose end "
                         f"is at or after its start")
    missing = [str(p) for p in args.runs if not p.is_dir()]
    if missing:
        raise SystemExit(f"not run folders: {', '.join(missing)}")
    window = f"generator steps {args.from_step:,} to {'the end' if args.to_step is None else f'{args.to_step:,}'}"
    lines = [f"Window: {window}. Command: `python experiments/curve_summary.py "
             + " ".join(str(p) for p in args.runs)
             + (f" --from-step {args.from_step}" if args.from_step else "")
             + (f" --to-step {args.to_step}" if args.to_step is not None else "") + "`", "",
             "| run | state | evaluations (steps) | mean modes | evaluations with every mode | KL mean (median) | "
             "mean HQ % | last: modes / HQ % / KL |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for folder in args.runs:
        curve, state = run_curve(folder)
        modes = data_modes(folder)
        s = summarise(curve, modes, args.from_step, args.to_step)
        name = f"{folder.parent.name}/{folder.name}"
        if not s["evaluations"]:
            lines.append(f"| {name} | {state} | 0 | – | – | – | – | – |")
            continue
        last = s["last"]
        share = "–" if s["all_modes_share"] is None else f"{100 * s['all_modes_share']:.0f} % (of {modes})"
        lines.append(f"| {name} | {state} | {s['evaluations']} ({s['from']:,}–{s['to']:,}) | {s['modes_mean']:.2f} | "
                     f"{share} | {_f(s['kl_mean'], '.3f')} ({_f(s['kl_median'], '.3f')}) | {s['hq_mean']:.1f} | "
                     f"{last['modes']:g} / {last['hq']:.1f} / {_f(last.get('kl'), '.4g')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    return text


if __name__ == "__main__":
    main()
