"""Reproduce a comparison table: every model of a benchmark, every seed, one command.

    python experiments/reproduce.py ring8 --seeds 10
    python experiments/reproduce.py grid25 --seeds 5 --models gan,mgan --jobs 2
    python experiments/reproduce.py ring8 --seeds 2 --set trainer.max_steps=200   # any config override

For table T it trains `experiments/T/<model>.yaml` composed on the table's `experiments/T/protocol.yaml`
(baseline and variants, in the order of MODELS) with `python train.py fit` once per seed, each run in its own folder under
`--out` (default `results/T`), and writes there
- `T.md` and `T.csv`: one row per model, mean and sample std over the seeds of every metric
  (modes, HQ %, KL for 2D), the number of seeds, failed runs, wall time per run, and the
  published rows of `experiments/published.yaml` with their sources;
- `T_samples.png`: the final scatter plot (or sample grid) of the first seeds, rows = models;
- `T_modes.png`: a bar chart of modes captured (mean and std over seeds).

Runs are cached: a run whose resolved config (the config file with the overrides, as
`train.py fit --print_config` prints it; see experiments/configs.py) and seed did not change since it last
finished is read back, not rerun (`--force` reruns everything), so an interrupted table resumes
where it stopped. A failed run is retried on the next invocation and reported in the table
(with its log) until then. Independent runs go in parallel: `--jobs` of them (default: the CPU
cores divided by `--threads`, or the GPUs divided by `--gpus-per-run` when GPUs are present,
each run then seeing only its own GPUs through CUDA_VISIBLE_DEVICES). Progress (generator step
of each running run, runs done, estimated time left) is printed every `--progress-every` seconds.
`--wandb` also logs the final table to W&B as a Table (group = the table's name; each run is
already a W&B run grouped by table and model, seeds as members).

Code: each run's result.json records `code_hash`, a hash of the code that trains and evaluates
it, taken when the run starts: every *.py file under models/, datamodules/ and callbacks/, and
train.py (it builds the trainer and adds callbacks), by path relative to the project root, in
sorted order (see `code_hash`). Not included: the configs (already in the cache key), this
runner, tests, documentation, and the installed libraries. A cached run whose hash differs from
the current tree's is *stale*; one without a hash (written before hashes were recorded) is
*code unknown* and counts as stale too. A plain invocation still reuses stale runs but the table's
"code" column marks them; `--rerun-stale` retrains exactly the stale runs (and any not yet
trained); `--restamp 0` (seeds) is for a refactor that should change no figure. It trains nothing
else: it groups the stale runs by model and old code (the recorded hash; for runs without one, the
commit they record, or the run alone when that commit is not clean), reruns the runs of the given
seeds in each group (into `<run folder>-check-<hash>`, leaving the cached run as it is), and only
if every rerun records exactly the cached metrics and generator steps, stamps the current hash on
every run of each group that had a check, recording how in its result.json (`restamped`: old hash
and commit, the check runs and their figures). Groups without a run of those seeds stay stale and
are listed. If any figure differs, nothing is re-stamped and the command names the metric.

Threads: results on CPU depend on the thread count. Each run gets OMP_NUM_THREADS=`--threads`
(default 1); result.json records it and torch.get_num_threads() of a Python process started with
the run's environment; the table's header says which thread counts its runs used.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

if __package__ in (None, ""):  # run as a script: the project root holds the experiments package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import configs  # noqa: E402
from experiments.configs import LABELS, MODELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
PROGRESS_FILE = "progress.json"  # written by callbacks.ProgressFile while the run trains (GAN_PROGRESS_FILE)
METRIC_LABELS = {"modes": "modes", "hq": "HQ %", "kl": "KL", "fid": "FID", "inception_score": "IS"}
# The code a run's figures depend on (besides its config and the installed libraries); see code_hash.
CODE_DIRS = ("models", "datamodules", "callbacks")
CODE_FILES = ("train.py",)
CODE_ROOT = ROOT  # the tree whose code is hashed (tests point it at a copy)


# ---------------------------------------------------------------------------------- code
def code_files(root: Optional[Path] = None) -> list[Path]:
    """The files whose contents make the code hash: *.py under CODE_DIRS (recursively) and CODE_FILES."""
    root = Path(root or CODE_ROOT)
    missing = [name for name in (*CODE_DIRS, *CODE_FILES) if not (root / name).exists()]
    if missing:
        raise SystemExit(f"cannot hash the training code: {', '.join(missing)} not found under {root}")
    files = [p for d in CODE_DIRS for p in (root / d).rglob("*.py") if p.is_file()]
    files += [root / name for name in CODE_FILES]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def code_hash(root: Optional[Path] = None) -> str:
    """12 hex digits of SHA-256 over (relative path, size, bytes) of each of `code_files`, in path order.

    Paths are part of the hash, so renaming or adding a module changes it; files elsewhere
    (README, tests, configs, this runner) do not. It hashes the working tree as it is, uncommitted
    edits included, which is what a run started now would import."""
    root = Path(root or CODE_ROOT)
    h = hashlib.sha256()
    for path in code_files(root):
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def code_state(result: dict, current: str) -> str:
    """'current', 'stale' (trained by other code) or 'unknown' (no hash recorded: counts as stale)."""
    recorded = result.get("code_hash")
    if not recorded:
        return "unknown"
    return "current" if recorded == current else "stale"


_OMP_IN_COMMAND = re.compile(r"(?:^|\s)OMP_NUM_THREADS=(\d+)\s")


def run_threads(result: dict) -> Optional[str]:
    """The thread count a run used, as recorded: "OMP_NUM_THREADS=1, torch 1"; from the recorded
    command when only that names it (runs imported from train.py commands); None if not recorded."""
    threads = result.get("threads")
    if threads:
        return f"OMP_NUM_THREADS={threads.get('OMP_NUM_THREADS') or 'unset'}, torch {threads.get('torch_num_threads', '?')}"
    match = _OMP_IN_COMMAND.search(" " + (result.get("command") or ""))
    return f"OMP_NUM_THREADS={match.group(1)} (in its recorded command)" if match else None


_TORCH_THREADS: dict[tuple, Optional[int]] = {}


def torch_threads(env: dict[str, str]) -> Optional[int]:
    """torch.get_num_threads() in a fresh Python process with environment `env` (what a run started with it
    gets: torch reads OMP_NUM_THREADS at start-up); cached per thread-related environment."""
    key = tuple(sorted((k, v) for k, v in env.items() if k.endswith("_NUM_THREADS")))
    if key not in _TORCH_THREADS:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                               capture_output=True, text=True)
        _TORCH_THREADS[key] = int(probe.stdout.strip()) if probe.returncode == 0 and probe.stdout.strip().isdigit() else None
    return _TORCH_THREADS[key]


# ---------------------------------------------------------------------------------- runs
@dataclass
class Run:
    table: str
    model: str
    seed: int
    config: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def configs(self) -> list[Path]:
        """The config files the run composes: its table's protocol, then the model's file."""
        return configs.with_protocol(self.config)

    @property
    def key(self) -> str:
        """Changes when what the run trains changes: its resolved config, seed aside (see experiments.configs)."""
        return configs.run_key(configs.resolve(self.configs, self.train_args()))

    def train_args(self) -> list[str]:
        """The arguments after the config and the seed in the run's train.py command."""
        return ["--trainer.enable_progress_bar", "false", *self.overrides]

    @property
    def name(self) -> str:
        return f"{self.model}/seed{self.seed}"

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.model / f"seed{self.seed}-{self.key}"

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "train.py"), "fit", *configs.config_args(self.configs),
                "--seed_everything", str(self.seed), *self.train_args()]

    def max_steps(self) -> Optional[int]:
        steps = None
        for config in self.configs:  # a later file overrides an earlier one
            steps = ((yaml.safe_load(config.read_text()) or {}).get("trainer") or {}).get("max_steps", steps)
        for i, arg in enumerate(self.overrides):
            if arg == "--trainer.max_steps" and i + 1 < len(self.overrides):
                steps = self.overrides[i + 1]
            elif arg.startswith("--trainer.max_steps="):
                steps = arg.split("=", 1)[1]
        return int(steps) if steps is not None and int(steps) > 0 else None  # -1: bounded by epochs instead


def cli_overrides(pairs: list[str]) -> list[str]:
    """["trainer.max_steps=200", ...] -> ["--trainer.max_steps", "200", ...]."""
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set takes key=value (e.g. trainer.max_steps=200); got {pair!r}")
        key, value = pair.split("=", 1)
        out += [f"--{key.lstrip('-')}", value]
    return out


def plan(table: str, models: list[str], seeds: list[int], overrides: list[str]) -> list[Run]:
    folder = EXPERIMENTS / table
    if not folder.is_dir():
        tables = sorted(p.name for p in EXPERIMENTS.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
        raise SystemExit(f"no table {table!r}: experiments/{table}/ does not exist; tables with configs: {tables}")
    missing = [m for m in models if not (folder / f"{m}.yaml").exists()]
    if missing:
        raise SystemExit(f"experiments/{table}/ has no config for {missing}; it has "
                         f"{sorted(p.stem for p in folder.glob('*.yaml') if p.name != configs.PROTOCOL)}")
    return [Run(table, m, s, folder / f"{m}.yaml", overrides) for m in models for s in seeds]


def read_result(run: Run, out: Path) -> Optional[dict]:
    """The cached result of a finished run, or None."""
    path = run.folder(out) / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("status") == "ok" else None


def _current_step(folder: Path) -> Optional[int]:
    """The run's latest global step (for progress): from its progress file, else its metrics.csv, if any."""
    try:
        return int(json.loads((folder / PROGRESS_FILE).read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    files = sorted(folder.glob("runs/*/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    try:
        lines = files[-1].read_text().strip().splitlines()
        header = lines[0].split(",")
        return int(float(lines[-1].split(",")[header.index("step")]))
    except (ValueError, IndexError, OSError):
        return None


def seconds_left(running: list[tuple[str, float, Optional[float]]], pending: list[str],
                 finished: list[tuple[str, float]], slots: int, known: Optional[dict[str, list[float]]] = None) -> float:
    """Estimated wall seconds until every run is done; NaN when there is nothing to estimate from.

    `running`: (model, seconds elapsed, fraction of its steps done or None); `pending`: models of the
    runs not started; `finished`: (model, wall seconds) of the runs done in this invocation; `known`:
    wall seconds of earlier runs per model (cached results), used only where nothing newer exists.
    Models differ by 10x in cost, so a run's duration is estimated from its own model: this
    invocation's finished runs, else the extrapolation of its running runs, else `known`, else the
    mean over all models; a running run past 2 % of its steps is extrapolated from its own pace.
    The work left is spread over the slots, but never finishes before the longest single run left.
    """
    if not running and not pending:
        return 0.0

    def far_enough(frac: Optional[float]) -> bool:
        return frac is not None and frac > 0.02  # below that, start-up time dominates

    per_model: dict[str, list[float]] = {}
    for model, wall in finished:
        per_model.setdefault(model, []).append(wall)
    for model, elapsed, frac in running:
        if model not in {m for m, _ in finished} and far_enough(frac):
            per_model.setdefault(model, []).append(elapsed / frac)
    for model, walls in (known or {}).items():
        if model not in per_model and walls:
            per_model[model] = list(walls)
    if not per_model:
        return float("nan")
    overall = sum(sum(w) / len(w) for w in per_model.values()) / len(per_model)

    def duration(model: str) -> float:
        walls = per_model.get(model)
        return sum(walls) / len(walls) if walls else overall

    left = []
    for model, elapsed, frac in running:
        if far_enough(frac):
            left.append(elapsed / frac - elapsed)  # its own pace is the best guess for it
        else:
            left.append(max(duration(model) - elapsed, 0.0))
    left += [duration(model) for model in pending]
    return max(sum(left) / max(slots, 1), max(left))


def execute(run: Run, out: Path, env: dict[str, str], folder: Optional[Path] = None) -> dict:
    """Trains one run in its folder (`folder`, default run.folder(out)) and returns its result (status ok or
    failed), stamped with the code hash, commit and thread count at its start."""
    folder = folder or run.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "train.log"
    env = {**os.environ, **env, "GAN_PROGRESS_FILE": str(folder / PROGRESS_FILE)}
    stamp = {"code_hash": code_hash(), "commit": _commit(),
             "threads": {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"), "torch_num_threads": torch_threads(env)}}
    start = time.time()
    with open(log_path, "w") as log:
        (folder / PROGRESS_FILE).unlink(missing_ok=True)
        rc = subprocess.run(run.command(), cwd=folder, env=env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    wall = time.time() - start
    finals = sorted(folder.glob("runs/*/version_*/final_metrics.json"), key=lambda p: p.stat().st_mtime)
    result = {"table": run.table, "model": run.model, "seed": run.seed, "key": run.key, "returncode": rc,
              "wall_s": round(wall, 1), "log": str(log_path), "command": " ".join(run.command()), **stamp}
    if rc == 0 and finals:
        final = json.loads(finals[-1].read_text())
        metrics = {k.removeprefix("val/"): v for k, v in final["metrics"].items()}
        result |= {"status": "ok", "metrics": metrics, "g_steps": final.get("g_steps"), "plots": final.get("plots", [])}
        keep_sample_plot(result, folder)
    else:
        reason = failure_reason(log_path.read_text(errors="replace")) if log_path.exists() else None
        result |= {"status": "failed", "error": reason or f"exit code {rc}"}
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    return result


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b|: error: ")


def failure_reason(log: str) -> Optional[str]:
    """The line of a failed run's log that says why: its last exception (or argument error) line, else its
    last line. Loggers print after the exception (e.g. W&B's offline sync hint), so the last line alone
    often says nothing."""
    lines = [_ANSI.sub("", line).strip() for line in log.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if _EXCEPTION.search(line):
            return line
    return lines[-1] if lines else None


def _sample_plot(result: dict) -> Optional[str]:
    """The run's final sample plot (not e.g. InfoGAN's traversal), relative to its folder, if it logged one."""
    plots = result.get("plots") or []
    samples = [p for p in plots if "samples" in Path(p).parts]
    return (samples or plots)[-1] if plots else None


def keep_sample_plot(result: dict, folder: Path) -> bool:
    """Copies the final sample plot next to result.json as ``samples.<ext>``, a file the repository keeps.

    The run's own log folder (checkpoints, metrics, every plot) is not committed, so without this copy a
    table rebuilt from committed results, in another clone or session, has no samples to show.
    Returns whether the copy exists afterwards.
    """
    if result.get("sample_plot") and (folder / result["sample_plot"]).exists():
        return True
    plot = _sample_plot(result)
    if plot is None:
        return False
    source = Path(plot) if Path(plot).is_absolute() else folder / plot
    if not source.exists():
        return False
    target = folder / f"samples{source.suffix}"
    shutil.copyfile(source, target)
    result["sample_plot"] = target.name
    return True


# ---------------------------------------------------------------------------------- tables
def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value); NaNs are ignored."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(results: list[dict], metrics: list[str]) -> list[dict]:
    """One row per model (in MODELS order): per-metric mean/std over its successful seeds."""
    rows = []
    order = {m: i for i, m in enumerate(MODELS)}
    for model in sorted({r["model"] for r in results}, key=lambda m: order.get(m, len(order))):
        runs = [r for r in results if r["model"] == model]
        ok = [r for r in runs if r["status"] == "ok"]
        row = {"model": model, "label": LABELS.get(model, model), "seeds": len(ok),
               "seed_list": sorted(r["seed"] for r in ok), "failed": sorted(r["seed"] for r in runs if r["status"] != "ok"),
               "failed_logs": [r["log"] for r in runs if r["status"] != "ok"],
               "imported": sorted(r["seed"] for r in ok if r.get("imported")),
               "code": [{k: r.get(k) for k in ("seed", "code_hash", "commit", "restamped")} for r in ok]}
        for metric in metrics:
            row[metric] = mean_std([r["metrics"].get(metric, float("nan")) for r in ok])
        row["wall_s"] = mean_std([r["wall_s"] for r in ok])[0]
        rows.append(row)
    return rows


def _fmt(mean: float, std: float, seeds: int, metric: str) -> str:
    if math.isnan(mean):
        return "–"
    digits = {"modes": 1, "hq": 1, "kl": 3}.get(metric, 3)
    if metric == "kl" and 0 < abs(mean) < 0.01:
        digits = 4
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def restamp_note(record: dict) -> str:
    """One sentence on how a run was re-stamped (the table's footnote)."""
    old = f"code {record['from_code_hash']}" if record.get("from_code_hash") else \
        f"unknown code (commit {record.get('from_commit') or 'not recorded'})"
    checks = ", ".join(f"seed {c['seed']} ({c['folder']})" for c in record.get("checks", []))
    return (f"re-stamped from {old} to {record['to_code_hash']} at commit {record.get('at_commit')}: rerun with that code, "
            f"{checks} recorded metrics identical to the cached ones")


def code_cell(code: list[dict], current: str, notes: Optional[list[str]] = None) -> str:
    """Which code trained a row's runs, against the current tree's hash `current`: "current", "stale (code
    <hash>)", "stale (code unknown; commit <c>)", "current, re-stamped [n]", or "mixed: ..." with the seeds of
    each. With `notes`, re-stamp details become numbered footnotes appended to it; without, they are inline."""
    parts: dict[str, list[int]] = {}
    for entry in sorted(code, key=lambda e: e["seed"]):
        state = code_state(entry, current)
        if state == "current":
            record = entry.get("restamped")
            if record and record.get("to_code_hash") == current:
                note = restamp_note(record)
                if notes is not None:
                    if note not in notes:
                        notes.append(note)
                    label = f"current, re-stamped [{notes.index(note) + 1}]"
                else:
                    label = "current, re-stamped from " + (f"code {record['from_code_hash']}" if record.get("from_code_hash")
                                                           else f"unknown code (commit {record.get('from_commit')})")
            else:
                label = "current"
        elif state == "stale":
            label = f"stale (code {entry['code_hash']})"
        else:
            label = f"stale (code unknown; commit {entry.get('commit') or 'not recorded'})"
        parts.setdefault(label, []).append(entry["seed"])
    if not parts:
        return "–"
    if len(parts) == 1:
        return next(iter(parts))
    return "mixed: " + "; ".join(f"{label} seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"
                                 for label, seeds in parts.items())


def render_markdown(table: str, rows: list[dict], metrics: list[str], published: list[dict], header: str = "",
                    current_code: Optional[str] = None) -> str:
    """The table; with `current_code` (the tree's code hash) a "code" column marks the runs trained by other code."""
    cols = ["model", "seeds", *[METRIC_LABELS.get(m, m) for m in metrics], "wall s / run",
            *(["code"] if current_code else []), "source"]
    lines = [f"# {table}", "", header, "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    notes: list[str] = []
    for row in rows:
        cells = [row["label"] + " (ours)", str(row["seeds"])]
        cells += [_fmt(*row[m], row["seeds"], m) for m in metrics]
        cells += ["–" if math.isnan(row["wall_s"]) else f"{row['wall_s']:.0f}"]
        if current_code:
            cells.append(code_cell(row.get("code", []), current_code, notes))
        cells += ["this repository, seeds " + ",".join(map(str, row["seed_list"])) if row["seeds"] else "no finished run"]
        if row.get("imported"):
            cells[-1] += f" (imported from train.py runs: seeds {','.join(map(str, row['imported']))}; see their result.json)"
        if row["failed"]:
            cells[-1] += f"; failed seeds {row['failed']} (logs: {', '.join(row['failed_logs'])})"
        lines.append("| " + " | ".join(cells) + " |")
    for pub in published:
        cells = [pub["method"], "", *[("–" if pub.get(m) is None else str(pub.get(m))) for m in metrics], "",
                 *([""] if current_code else []), pub["source"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Ours: mean ± sample standard deviation over seeds of the final evaluation. Published rows as "
                  "their sources report them (see experiments/published.yaml)."]
    if current_code:
        lines += ["", f"Code: \"current\" = trained (or re-stamped) with the code of the tree that wrote this table, hash "
                      f"{current_code} (the *.py files of {', '.join(d + '/' for d in CODE_DIRS)} and "
                      f"{', '.join(CODE_FILES)}); \"stale\" = trained by other code (its hash shown), or by code not "
                      "recorded (runs from before code hashes were recorded; the commit they record is shown). "
                      "`--rerun-stale` retrains the stale runs."]
        lines += [f"[{i}] {note}." for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], metrics: list[str], published: list[dict],
              current_code: Optional[str] = None) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "seeds", "failed_seeds", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")],
                    "wall_s_per_run", "source", *(["code"] if current_code else [])])
        for row in rows:
            w.writerow([row["label"], row["seeds"], " ".join(map(str, row["failed"])),
                        *[v for m in metrics for v in row[m]], row["wall_s"], "ours",
                        *([code_cell(row.get("code", []), current_code)] if current_code else [])])
        for pub in published:
            w.writerow([pub["method"], "", "", *[x for m in metrics for x in (pub.get(m), "")], "", pub["source"],
                        *([""] if current_code else [])])


def figure_runs(runs: list[dict], columns: int, has_plot) -> list[dict]:
    """The runs of one model shown in the samples figure, by seed: those whose plot is at hand (imported
    or older runs may have none), up to `columns`; only when no plot is at hand, the first seeds (their
    panels then say the plot was not found)."""
    by_seed = sorted(runs, key=lambda r: r["seed"])
    plotted = [r for r in by_seed if has_plot(r)]
    return (plotted or by_seed)[:columns]


def write_figures(out: Path, table: str, results: list[dict], rows: list[dict], columns: int = 3) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    written = []
    ok = [r for r in results if r["status"] == "ok" and r.get("plots")]

    def last_plot(r: dict) -> Path:  # plots are recorded relative to the run's own folder
        folder = out / "runs" / r["model"] / f"seed{r['seed']}-{r['key']}"
        if r.get("sample_plot") and (folder / r["sample_plot"]).exists():  # the committed copy
            return folder / r["sample_plot"]
        plot = Path(_sample_plot(r))
        return plot if plot.is_absolute() else folder / plot

    models = [row["model"] for row in rows if any(r["model"] == row["model"] for r in ok)]
    if models:
        shown = {m: figure_runs([r for r in ok if r["model"] == m], columns, lambda r: last_plot(r).exists()) for m in models}
        columns = max(len(runs) for runs in shown.values())  # no empty column when fewer plots are at hand
        fig, axes = plt.subplots(len(models), columns, figsize=(3 * columns, 3 * len(models)), squeeze=False)
        for i, model in enumerate(models):
            runs = shown[model]
            for j in range(columns):
                ax = axes[i][j]
                ax.axis("off")
                if j >= len(runs):
                    continue
                ax.set_title(f"{LABELS.get(model, model)}, seed {runs[j]['seed']}", fontsize=8)
                if last_plot(runs[j]).exists():
                    ax.imshow(mpimg.imread(last_plot(runs[j])))
                else:  # e.g. a table rebuilt from committed results without the run folders
                    ax.text(0.5, 0.5, f"plot not found:\n{_sample_plot(runs[j])}", ha="center", va="center", fontsize=6,
                            transform=ax.transAxes, wrap=True)
        fig.tight_layout()
        path = out / f"{table}_samples.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    with_modes = [row for row in rows if "modes" in row and not math.isnan(row["modes"][0])]
    if with_modes:
        fig, ax = plt.subplots(figsize=(1.2 * len(with_modes) + 2, 3.5))
        ax.bar([r["label"] for r in with_modes], [r["modes"][0] for r in with_modes],
               yerr=[r["modes"][1] for r in with_modes], capsize=4)
        ax.set_ylabel("modes captured")
        ax.set_title(f"{table}: modes captured (mean ± std over seeds)")
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
        fig.tight_layout()
        path = out / f"{table}_modes.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def log_table_to_wandb(table: str, rows: list[dict], metrics: list[str], out: Path) -> None:
    import wandb

    sys.path.insert(0, str(ROOT))
    from callbacks.wandb_logger import resolve_wandb_mode

    columns = ["model", "seeds", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")], "wall_s_per_run"]
    data = [[r["label"], r["seeds"], *[v for m in metrics for v in r[m]], r["wall_s"]] for r in rows]
    run = wandb.init(project="gan-mode-collapse", group=table, job_type="table", name=f"{table}-table",
                     mode=resolve_wandb_mode("auto"), dir=str(out))
    run.log({f"{table}/table": wandb.Table(columns=columns, data=data)})
    run.finish()


# ---------------------------------------------------------------------------------- main
def default_jobs(threads: int, gpus_per_run: int) -> tuple[int, list[dict[str, str]]]:
    """Number of parallel runs and each slot's environment."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or no driver: CPU only
        gpus = 0
    if gpus:
        n = max(1, gpus // gpus_per_run)
        return n, [{"CUDA_VISIBLE_DEVICES": ",".join(str(i * gpus_per_run + g) for g in range(gpus_per_run))}
                   for i in range(n)]
    n = max(1, (os.cpu_count() or 1) // threads)
    return n, [{} for _ in range(n)]


def check_folder(run: Run, out: Path, current: str) -> Path:
    """Where --restamp reruns a cached run to compare figures (beside it, so its folder stays as it was)."""
    folder = run.folder(out)
    return folder.with_name(f"{folder.name}-check-{current}")


def old_code_group(result: dict) -> tuple[str, str]:
    """What a stale run's code is known by, for --restamp: a check on one run vouches for the runs of the same
    model with the same key. ("code", hash) when a hash is recorded; else ("commit", c) when the run records a
    clean commit (runners before code hashes recorded the commit at the end of a run: an approximation, said in
    the re-stamp record); else ("run", seed): nothing identifies its code, only its own rerun can check it."""
    if result.get("code_hash"):
        return "code", result["code_hash"]
    commit = result.get("commit") or ""
    if re.fullmatch(r"[0-9a-f]{7,40}", commit):
        return "commit", commit
    return "run", str(result["seed"])


def _recorded_omp(result: dict) -> Optional[str]:
    threads = result.get("threads") or {}
    if threads.get("OMP_NUM_THREADS"):
        return str(threads["OMP_NUM_THREADS"])
    match = _OMP_IN_COMMAND.search(" " + (result.get("command") or ""))
    return match.group(1) if match else None


def metric_differences(cached: dict, fresh: dict) -> list[str]:
    """Where two results' recorded figures differ (exact equality; NaN equals NaN): every metric either records,
    and the generator steps when both record them."""
    a, b = cached.get("metrics") or {}, fresh.get("metrics") or {}
    pairs = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))]
    if cached.get("g_steps") is not None and fresh.get("g_steps") is not None:
        pairs.append(("g_steps", cached["g_steps"], fresh["g_steps"]))

    def same(x, y) -> bool:
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        return x == y or both_nan

    return [f"{k}: cached {x!r}, rerun {y!r}" for k, x, y in pairs if not same(x, y)]


def reproduce(table: str, seeds: list[int], models: list[str], out: Path, overrides: list[str], jobs: Optional[int] = None,
              threads: int = 1, gpus_per_run: int = 1, force: bool = False, progress_every: float = 60.0,
              use_wandb: bool = False, report_only: bool = False, rerun_stale: bool = False,
              restamp: Optional[list[int]] = None, echo=print) -> dict:
    """Trains what the table needs and writes it. `rerun_stale`: also retrain the cached runs trained by other code
    than the current tree's. `restamp` (seeds): train nothing but, for the stale runs, rerun those seeds as a check
    and re-stamp the stale runs the check covers if every figure is identical; SystemExit (nothing re-stamped)
    naming the differing metric otherwise."""
    chosen = [flag for flag, on in (("--force", force), ("--rerun-stale", rerun_stale),
                                    ("--restamp", restamp is not None), ("--report-only", report_only)) if on]
    if len(chosen) > 1:
        raise SystemExit(f"{' and '.join(chosen)} do not go together: choose one")
    if restamp is not None and not restamp:
        raise SystemExit("--restamp needs the seeds to rerun as the check, e.g. --restamp 0")
    runs = plan(table, models, seeds, overrides)
    out = Path(out).resolve()  # each run trains inside its own folder, so relative paths would break
    out.mkdir(parents=True, exist_ok=True)
    current = code_hash()
    n_slots, slot_envs = default_jobs(threads, gpus_per_run)
    if jobs:
        slot_envs = [slot_envs[i % len(slot_envs)] for i in range(jobs)]
    slots: queue.Queue = queue.Queue()
    for env in slot_envs:
        slots.put({**env, "OMP_NUM_THREADS": str(threads)})

    results: dict[str, dict] = {}
    todo = []
    for run in runs:
        cached = None if force else read_result(run, out)
        if cached:
            if not cached.get("sample_plot") and keep_sample_plot(cached, run.folder(out)):
                (run.folder(out) / "result.json").write_text(json.dumps(cached, indent=1))
            results[run.name] = cached
            if rerun_stale and code_state(cached, current) != "current":
                todo.append(run)
        else:
            todo.append(run)
    stale = [run for run in runs if run.name in results and code_state(results[run.name], current) != "current"]
    missing = []
    if report_only or restamp is not None:  # a table of what has finished, e.g. while the rest trains elsewhere
        missing, todo = [run.name for run in todo], []
    groups: dict[tuple, list[Run]] = {}
    checks: list[Run] = []
    unchecked: list[Run] = []
    if restamp is not None:
        for run in stale:
            groups.setdefault((run.model, *old_code_group(results[run.name])), []).append(run)
        for key in list(groups):
            sample = [run for run in groups[key] if run.seed in restamp]
            if sample:
                checks += sample
            else:
                unchecked += groups.pop(key)
        wrong_threads = [f"{run.name} (OMP_NUM_THREADS={_recorded_omp(results[run.name])})" for run in checks
                         if _recorded_omp(results[run.name]) not in (None, str(threads))]
        if wrong_threads:
            raise SystemExit(f"--restamp: the check would run with --threads {threads}, but these runs were trained "
                             f"with another thread count, so their figures need not match: {', '.join(wrong_threads)}; "
                             "pass their --threads")
    echo(f"{table}: {len(runs)} runs ({len(models)} models x {len(seeds)} seeds), {len(results)} cached"
         + (f" ({len(stale)} stale: trained by other code than this tree's, hash {current}, or code not recorded)"
            if stale else "")
         + f", {len(todo)} to train" + (f" ({sum(run.name in results for run in todo)} of them stale)" if rerun_stale else "")
         + (f", {len(checks)} to rerun as the re-stamp check" if restamp is not None else "")
         + f", {len(slot_envs)} at a time; results in {out}"
         + (f"; report only, {len(missing)} not run yet" if report_only else ""))
    if stale and not rerun_stale and restamp is None:
        echo(f"the table marks the {len(stale)} stale runs (code column); --rerun-stale retrains them; "
             "--restamp SEEDS re-stamps them if rerunning those seeds reproduces the cached figures exactly")
    jobs_list = [(run, run.folder(out)) for run in todo] + [(run, check_folder(run, out, current)) for run in checks]

    running: dict[str, tuple[Run, Path, float]] = {}
    started_names: set[str] = set()
    done: list[tuple[str, float]] = []  # (model, wall s) of the runs finished in this invocation
    known: dict[str, list[float]] = {}  # wall s of cached runs, a first guess for their models
    for cached in results.values():
        if cached.get("wall_s"):
            known.setdefault(cached["model"], []).append(cached["wall_s"])
    lock = threading.Lock()
    t0 = time.time()

    def work(job: tuple[Run, Path]) -> dict:
        run, folder = job
        env = slots.get()
        with lock:
            running[run.name] = (run, folder, time.time())
            started_names.add(run.name)
        try:
            result = execute(run, out, env, folder=folder)
        finally:
            slots.put(env)
            with lock:
                started = running.pop(run.name)[2]
                done.append((run.model, time.time() - started))
        return result

    def report() -> None:
        now = time.time()
        with lock:
            current_runs, finished = list(running.values()), list(done)
            pending = [run.model for run, _ in jobs_list if run.name not in started_names]
        parts, progress = [], []
        for run, folder, started in current_runs:
            step, total = _current_step(folder), run.max_steps()
            if step is None:
                frac = "starting"
            else:  # runs bounded by epochs (max_steps -1) have no total to show
                frac = f"{step}/{total} steps" if total else f"step {step}"
            parts.append(f"{run.name} {frac} ({now - started:.0f} s)")
            progress.append((run.model, now - started, step / total if step is not None and total else None))
        eta = seconds_left(progress, pending, finished, len(slot_envs), known)
        eta_text = "unknown" if math.isnan(eta) else f"{eta / 60:.0f} min"
        echo(f"[{now - t0:.0f} s] {len(finished)}/{len(jobs_list)} done, about {eta_text} left; running: "
             + ("; ".join(parts) or "none"))

    stop = threading.Event()

    def reporter() -> None:
        while not stop.wait(progress_every):
            report()

    thread = threading.Thread(target=reporter, daemon=True)
    thread.start()
    check_results: dict[str, dict] = {}
    try:
        with ThreadPoolExecutor(max_workers=len(slot_envs)) as pool:
            for (run, folder), result in zip(jobs_list, pool.map(work, jobs_list)):
                is_check = folder != run.folder(out)
                (check_results if is_check else results)[run.name] = result
                status = "ok" if result["status"] == "ok" else f"FAILED ({result['error']}; log {result['log']})"
                figures = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.get("metrics", {}).items()))
                echo(f"finished {run.name}{' (re-stamp check)' if is_check else ''} in {result['wall_s']:.0f} s: "
                     f"{status} {figures}")
    finally:
        stop.set()

    restamped: list[str] = []
    if restamp is not None:
        failures = []
        for run in checks:
            fresh, cached = check_results[run.name], results[run.name]
            if fresh["status"] != "ok":
                failures.append(f"{run.name}: the check run failed ({fresh['error']}; log {fresh['log']})")
            else:
                failures += [f"{run.name}: {d}" for d in metric_differences(cached, fresh)]
        if failures:
            raise SystemExit(
                f"--restamp: nothing re-stamped. The current code (hash {current}) does not reproduce the cached "
                "figures exactly:\n  " + "\n  ".join(failures) + "\nThe check runs' results are in "
                + ", ".join(_shown_path(check_folder(run, out, current)) for run in checks)
                + "; --rerun-stale retrains the stale runs.")
        at_commit, when = _commit(), time.strftime("%Y-%m-%d %H:%M:%S")
        basis = {"code": "the code hash the runs record", "commit": "the commit the runs record (no code hash; "
                 "older runners recorded the commit at the end of a run)", "run": "this run alone (no code hash, no clean commit)"}
        for (model, kind, value), group in groups.items():
            record_checks = [{"seed": run.seed, "folder": check_folder(run, out, current).relative_to(out).as_posix(),
                              "metrics": check_results[run.name].get("metrics"),
                              "g_steps": check_results[run.name].get("g_steps")}
                             for run in checks if run in group]
            for run in group:
                result = results[run.name]
                record = {"from_code_hash": result.get("code_hash"), "from_commit": result.get("commit"),
                          "to_code_hash": current, "at_commit": at_commit, "time": when, "grouped_by": basis[kind],
                          "rule": "every recorded metric and g_steps of each check run equal to the cached run's",
                          "checks": record_checks}
                if result.get("restamped"):
                    record["previous"] = result["restamped"]
                result |= {"code_hash": current, "restamped": record}
                (run.folder(out) / "result.json").write_text(json.dumps(result, indent=1))
                restamped.append(run.name)
        echo(f"re-stamped {len(restamped)} runs with code {current}: {', '.join(restamped) or 'none'}"
             + (f"; left stale, no run of seeds {','.join(map(str, restamp))} trained by the same code to check them "
                f"with: {', '.join(run.name for run in unchecked)}" if unchecked else ""))

    published_all = yaml.safe_load((EXPERIMENTS / "published.yaml").read_text())
    # the CPU-sized protocol of a benchmark is compared with that benchmark's published rows
    pub = published_all.get(table) or published_all.get(table.removesuffix("_cpu")) or {"metrics": ["modes", "hq", "kl"], "rows": []}
    metrics = pub["metrics"]
    ordered = [results[r.name] for r in runs if r.name in results]
    rows = aggregate(ordered, metrics)
    n_stale = sum(code_state(r, current) != "current" for r in ordered if r["status"] == "ok")
    thread_counts: dict[str, int] = {}
    for r in ordered:
        if r["status"] == "ok":
            label = run_threads(r) or "not recorded"
            thread_counts[label] = thread_counts.get(label, 0) + 1
    seed_args = f"--seeds {len(seeds)}" if seeds == list(range(len(seeds))) else f"--seed-list {','.join(map(str, seeds))}"
    header = (f"Command: `python experiments/reproduce.py {table} {seed_args}"
              + (f" --models {','.join(models)}" if models != MODELS else "")
              + (f" --out {_shown_path(out)}" if out != (ROOT / "results" / table).resolve() else "")
              + "".join(f" --set {a[2:]}={b}" for a, b in zip(overrides[::2], overrides[1::2]))
              + (" --report-only" if report_only else "") + "`. "
              + f"Runs trained at commit {', '.join(sorted({r.get('commit') or 'unknown' for r in ordered}))}; "
              + f"table written at commit {_commit()}; {_machine()}. "
              + "Threads per run: " + "; ".join(f"{label} ({n} run{'s' if n > 1 else ''})" for label, n in thread_counts.items())
              + f". Code: hash {current}; "
              + (f"{n_stale} of {sum(r['status'] == 'ok' for r in ordered)} runs stale (see the code column)."
                 if n_stale else "every run trained (or re-stamped) with it.")
              + (f" Not run yet ({len(missing)}): {', '.join(missing)}." if missing else ""))
    (out / f"{table}.md").write_text(render_markdown(table, rows, metrics, pub["rows"], header, current_code=current))
    write_csv(out / f"{table}.csv", rows, metrics, pub["rows"], current_code=current)
    figures = write_figures(out, table, ordered, rows)
    if use_wandb:
        log_table_to_wandb(table, rows, metrics, out)
    echo(f"wrote {out / (table + '.md')}, {out / (table + '.csv')}" + "".join(f", {p}" for p in figures))
    return {"rows": rows, "results": ordered, "trained": len(todo), "code_hash": current, "stale": [r.name for r in stale],
            "checked": [run.name for run in checks], "restamped": restamped}


def _shown_path(path: Path) -> str:
    """A path as a command in the table's header shows it: relative to the project root when inside it."""
    try:
        return str(path.relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return (sha + (" (with uncommitted changes)" if dirty else "")) or "unknown"
    except OSError:
        return "unknown"


def _machine() -> str:
    import platform

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001
        gpu = "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}"


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="benchmark folder under experiments/: ring8, grid25, ...")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--seed-list", help="explicit comma-separated seeds instead of --seeds")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    parser.add_argument("--out", type=Path, help="output folder (default results/<table>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. trainer.max_steps=200 (repeatable)")
    parser.add_argument("--jobs", type=int, help="runs in parallel (default: cores / threads, or GPUs / gpus-per-run)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP_NUM_THREADS; default 1)")
    parser.add_argument("--gpus-per-run", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="rerun finished runs too")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="also retrain the cached runs trained by other code than this tree's (code hash differs "
                             "or was not recorded); the others stay cached")
    parser.add_argument("--restamp", metavar="SEEDS",
                        help="train nothing else: rerun the stale runs of these seeds (e.g. 0) and, only if every "
                             "recorded metric equals the cached one exactly, stamp the current code hash on the stale "
                             "runs of the same model and old code, recording how in their result.json")
    parser.add_argument("--progress-every", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--wandb", action="store_true", help="also log the final table to W&B")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the table from the finished runs and list the missing ones")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = args.out or ROOT / "results" / args.table
    restamp = None
    if args.restamp is not None:
        try:
            restamp = [int(s) for s in args.restamp.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--restamp takes comma-separated seeds (e.g. 0 or 0,3); got {args.restamp!r}") from None
    return reproduce(args.table, seeds, models, out, cli_overrides(args.set), jobs=args.jobs, threads=args.threads,
                     gpus_per_run=args.gpus_per_run, force=args.force, progress_every=args.progress_every,
                     use_wandb=args.wandb, report_only=args.report_only, rerun_stale=args.rerun_stale,
                     restamp=restamp)


if __name__ == "__main__":
    main()
