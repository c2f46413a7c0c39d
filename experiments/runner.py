"""A table's runs: the plan (one `Run` per model and seed), the cache of finished runs (result.json, the code
hash that marks a run stale, the --restamp check), and executing what is left in parallel slots with progress
lines and an estimate of the time left. What the cache and the options do for a user is told in
experiments/reproduce.py, the command line."""

from __future__ import annotations

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

from experiments import configs

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
PROGRESS_FILE = "progress.json"  # written by callbacks.ProgressFile while the run trains (GAN_PROGRESS_FILE)
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



# ---------------------------------------------------------------------------------- slots and progress
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



def slot_environments(jobs: Optional[int], threads: int, gpus_per_run: int) -> list[dict[str, str]]:
    """The environment of each parallel slot: `jobs` slots (default: see default_jobs), each with its GPUs if any
    and OMP_NUM_THREADS=`threads`."""
    _, envs = default_jobs(threads, gpus_per_run)
    if jobs:
        envs = [envs[i % len(envs)] for i in range(jobs)]
    return [{**env, "OMP_NUM_THREADS": str(threads)} for env in envs]


def known_walls(results: dict[str, dict]) -> dict[str, list[float]]:
    """Wall seconds of the cached runs per model: the first guess at what a run of that model costs."""
    known: dict[str, list[float]] = {}
    for cached in results.values():
        if cached.get("wall_s"):
            known.setdefault(cached["model"], []).append(cached["wall_s"])
    return known


class Execution:
    """Trains jobs (a run and its folder) in parallel slots, one `execute` per job, and prints a progress line
    every `progress_every` seconds (each running run's step, runs done, time left) and a line per finished run.

    The worker threads and the progress thread share the bookkeeping below, under `lock`."""

    def __init__(self, jobs: list[tuple[Run, Path]], out: Path, slot_envs: list[dict[str, str]],
                 known: dict[str, list[float]], echo=print):
        self.jobs, self.out, self.n_slots, self.known, self.echo = jobs, out, len(slot_envs), known, echo
        self.slots: queue.Queue = queue.Queue()
        for env in slot_envs:
            self.slots.put(env)
        self.running: dict[str, tuple[Run, Path, float]] = {}  # by name: run, folder, start time
        self.started: set[str] = set()
        self.done: list[tuple[str, float]] = []  # (model, wall s) of the runs finished in this invocation
        self.lock = threading.Lock()
        self.t0 = time.time()

    def work(self, job: tuple[Run, Path]) -> dict:
        """Trains one job in the first free slot."""
        run, folder = job
        env = self.slots.get()
        with self.lock:
            self.running[run.name] = (run, folder, time.time())
            self.started.add(run.name)
        try:
            result = execute(run, self.out, env, folder=folder)
        finally:
            self.slots.put(env)
            with self.lock:
                started = self.running.pop(run.name)[2]
                self.done.append((run.model, time.time() - started))
        return result

    def print_progress(self) -> None:
        """One progress line."""
        now = time.time()
        with self.lock:
            current_runs, finished = list(self.running.values()), list(self.done)
            pending = [run.model for run, _ in self.jobs if run.name not in self.started]
        parts, progress = [], []
        for run, folder, started in current_runs:
            step, total = _current_step(folder), run.max_steps()
            if step is None:
                frac = "starting"
            else:  # runs bounded by epochs (max_steps -1) have no total to show
                frac = f"{step}/{total} steps" if total else f"step {step}"
            parts.append(f"{run.name} {frac} ({now - started:.0f} s)")
            progress.append((run.model, now - started, step / total if step is not None and total else None))
        eta = seconds_left(progress, pending, finished, self.n_slots, self.known)
        eta_text = "unknown" if math.isnan(eta) else f"{eta / 60:.0f} min"
        self.echo(f"[{now - self.t0:.0f} s] {len(finished)}/{len(self.jobs)} done, about {eta_text} left; running: "
                  + ("; ".join(parts) or "none"))

    def _report_every(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            self.print_progress()

    def run(self, progress_every: float) -> list[dict]:
        """The results of every job, in the order of `jobs`; each is announced as it comes in that order."""
        stop = threading.Event()
        threading.Thread(target=self._report_every, args=(progress_every, stop), daemon=True).start()
        results = []
        try:
            with ThreadPoolExecutor(max_workers=self.n_slots) as pool:
                for (run, folder), result in zip(self.jobs, pool.map(self.work, self.jobs)):
                    is_check = folder != run.folder(self.out)
                    status = "ok" if result["status"] == "ok" else f"FAILED ({result['error']}; log {result['log']})"
                    figures = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.get("metrics", {}).items()))
                    self.echo(f"finished {run.name}{' (re-stamp check)' if is_check else ''} in {result['wall_s']:.0f} s: "
                              f"{status} {figures}")
                    results.append(result)
        finally:
            stop.set()
        return results


# ---------------------------------------------------------------------------------- the cache
def read_result(run: Run, out: Path) -> Optional[dict]:
    """The cached result of a finished run, or None."""
    path = run.folder(out) / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("status") == "ok" else None


def read_cache(runs: list[Run], out: Path, force: bool, rerun_stale: bool, current: str) -> tuple[dict[str, dict], list[Run]]:
    """The finished runs' results by run name, and the runs to train: those not finished (or all, with `force`),
    and with `rerun_stale` those trained by other code than `current`. A cached result gets the copy of its
    sample plot it lacks (see keep_sample_plot)."""
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
    return results, todo


def stale_runs(runs: list[Run], results: dict[str, dict], current: str) -> list[Run]:
    """The cached runs trained by other code than `current` (or by code not recorded)."""
    return [run for run in runs if run.name in results and code_state(results[run.name], current) != "current"]


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



@dataclass
class RestampPlan:
    """The stale runs grouped by model and old code (see old_code_group), the runs rerun as the check (the given
    seeds' runs of each group), and the runs of groups without such a run, which stay stale."""
    groups: dict[tuple, list[Run]] = field(default_factory=dict)
    checks: list[Run] = field(default_factory=list)
    unchecked: list[Run] = field(default_factory=list)


def plan_restamp(stale: list[Run], results: dict[str, dict], seeds: list[int], threads: int) -> RestampPlan:
    """What --restamp `seeds` reruns. SystemExit when a check would run with another thread count than its
    cached run recorded, since its figures then need not match."""
    restamp = RestampPlan()
    for run in stale:
        restamp.groups.setdefault((run.model, *old_code_group(results[run.name])), []).append(run)
    for key in list(restamp.groups):
        sample = [run for run in restamp.groups[key] if run.seed in seeds]
        if sample:
            restamp.checks += sample
        else:
            restamp.unchecked += restamp.groups.pop(key)
    wrong_threads = [f"{run.name} (OMP_NUM_THREADS={_recorded_omp(results[run.name])})" for run in restamp.checks
                     if _recorded_omp(results[run.name]) not in (None, str(threads))]
    if wrong_threads:
        raise SystemExit(f"--restamp: the check would run with --threads {threads}, but these runs were trained "
                         f"with another thread count, so their figures need not match: {', '.join(wrong_threads)}; "
                         "pass their --threads")
    return restamp


def _restamp_failures(restamp: RestampPlan, results: dict[str, dict], check_results: dict[str, dict]) -> list[str]:
    failures = []
    for run in restamp.checks:
        fresh, cached = check_results[run.name], results[run.name]
        if fresh["status"] != "ok":
            failures.append(f"{run.name}: the check run failed ({fresh['error']}; log {fresh['log']})")
        else:
            failures += [f"{run.name}: {d}" for d in metric_differences(cached, fresh)]
    return failures


_RESTAMP_BASIS = {"code": "the code hash the runs record", "commit": "the commit the runs record (no code hash; "
                  "older runners recorded the commit at the end of a run)", "run": "this run alone (no code hash, no clean commit)"}


def restamp_runs(restamp: RestampPlan, seeds: list[int], results: dict[str, dict], check_results: dict[str, dict],
                 out: Path, current: str, echo=print) -> list[str]:
    """Stamps `current` on every run of each checked group, recording how in its result.json, if every check run
    recorded exactly its cached run's figures; SystemExit naming each difference (nothing re-stamped) otherwise.
    Returns the names of the re-stamped runs."""
    failures = _restamp_failures(restamp, results, check_results)
    if failures:
        raise SystemExit(
            f"--restamp: nothing re-stamped. The current code (hash {current}) does not reproduce the cached "
            "figures exactly:\n  " + "\n  ".join(failures) + "\nThe check runs' results are in "
            + ", ".join(_shown_path(check_folder(run, out, current)) for run in restamp.checks)
            + "; --rerun-stale retrains the stale runs.")
    at_commit, when = _commit(), time.strftime("%Y-%m-%d %H:%M:%S")
    restamped: list[str] = []
    for (model, kind, value), group in restamp.groups.items():
        record_checks = [{"seed": run.seed, "folder": check_folder(run, out, current).relative_to(out).as_posix(),
                          "metrics": check_results[run.name].get("metrics"),
                          "g_steps": check_results[run.name].get("g_steps")}
                         for run in restamp.checks if run in group]
        for run in group:
            result = results[run.name]
            record = {"from_code_hash": result.get("code_hash"), "from_commit": result.get("commit"),
                      "to_code_hash": current, "at_commit": at_commit, "time": when, "grouped_by": _RESTAMP_BASIS[kind],
                      "rule": "every recorded metric and g_steps of each check run equal to the cached run's",
                      "checks": record_checks}
            if result.get("restamped"):
                record["previous"] = result["restamped"]
            result |= {"code_hash": current, "restamped": record}
            (run.folder(out) / "result.json").write_text(json.dumps(result, indent=1))
            restamped.append(run.name)
    echo(f"re-stamped {len(restamped)} runs with code {current}: {', '.join(restamped) or 'none'}"
         + (f"; left stale, no run of seeds {','.join(map(str, seeds))} trained by the same code to check them "
            f"with: {', '.join(run.name for run in restamp.unchecked)}" if restamp.unchecked else ""))
    return restamped


# ---------------------------------------------------------------------------------- where and when
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

