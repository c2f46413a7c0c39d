"""A table's runs: the plan (one `Run` per model and seed) and executing what the cache (experiments/cache.py)
lacks: each run a `train.py fit` subprocess in its own folder, in parallel slots, followed through its run record
(callbacks.RunRecord's run.json) for progress lines and an estimate of the time left, continued from its last
checkpoint when an earlier attempt was interrupted. What the options do for a user is told in
experiments/reproduce.py, the command line."""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml

from callbacks.run_record import RECORD_FILE, finished_evaluation, read_record
from experiments import configs
from experiments.cache import code_hash, commit, cpu_identity, keep_sample_plot, run_code_hash, torch_threads

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
# The libraries whose versions a run's figures depend on besides the code: an interrupted attempt is continued only
# under the same versions (see resumable), and result.json records them.
LIBRARIES = ("torch", "lightning", "numpy")
ATTEMPT_FILE = "attempt.json"  # in a run's folder while it trains: the code, commit and threads it started with
# A rerun from the start (a stale run retrained, --force) moves the result it replaces here and puts it back if
# the rerun fails, with the failure in FAILED_RERUN_FILE: a failed rerun never loses the figures it was to replace.
REPLACED_FILE = "replaced_result.json"
FAILED_RERUN_FILE = "failed_rerun.json"


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


def _records(folder: Path) -> list[Path]:
    """The run records (callbacks.RunRecord's run.json) under a run's folder, oldest first."""
    return sorted(folder.glob(f"runs/*/version_*/{RECORD_FILE}"), key=lambda p: p.stat().st_mtime)


def _current_step(folder: Path) -> Optional[int]:
    """The run's latest global step (for progress): from its run record, else its metrics.csv, if any."""
    records = _records(folder)
    record = read_record(records[-1].parent) if records else None
    if record and record.get("global_step") is not None:
        return int(record["global_step"])
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

    `running`: (model, seconds elapsed, fraction of its steps done or None), optionally with a fourth entry where
    the fraction is None: the fraction a continued run had done when first seen, before any pace (see
    Execution._pace), so that it is costed as the rest of its model's run; `pending`: models of the runs not
    started; `finished`: (model, wall seconds) of the runs done in this invocation; `known`: wall seconds of
    earlier runs per model (cached results), used only where nothing newer exists.
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
    running = [(entry[0], entry[1], entry[2], entry[3] if len(entry) > 3 else 0.0) for entry in running]
    for model, elapsed, frac, _ in running:
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
    for model, elapsed, frac, done in running:
        if far_enough(frac):
            left.append(elapsed / frac - elapsed)  # its own pace is the best guess for it
        elif done:  # continued far along, no pace yet: the rest of a run of its model
            left.append(duration(model) * (1.0 - done))
        else:
            left.append(max(duration(model) - elapsed, 0.0))
    left += [duration(model) for model in pending]
    return max(sum(left) / max(slots, 1), max(left))


def interrupted(folder: Path) -> bool:
    """Whether `folder` holds an attempt that stopped while it trained: no result.json, an attempt.json and a
    last.ckpt to continue from."""
    return (not (folder / "result.json").exists() and (folder / ATTEMPT_FILE).is_file()
            and any(folder.glob("runs/*/version_*/checkpoints/last.ckpt")))


def read_attempt(folder: Path) -> Optional[dict]:
    """The attempt.json of a run's folder, or None where there is none or it cannot be read."""
    try:
        return json.loads((folder / ATTEMPT_FILE).read_text())
    except (OSError, ValueError):
        return None


LIVE_WITHIN_S = 600.0  # a run whose record says "running" and was written this recently is taken to be training


def live(folder: Path, within_s: float = LIVE_WITHIN_S) -> bool:
    """Whether the run in `folder` looks like it is training now (in another invocation, here or elsewhere): on the
    host its attempt names, whether the runner process it names is alive; otherwise whether its newest run record
    says status "running" and was written within `within_s` seconds (records are rewritten every few seconds and at
    every evaluation). An interrupted run (see interrupted) that is live is not to be copied or continued."""
    attempt = read_attempt(folder) or {}
    if attempt.get("host") == socket.gethostname() and isinstance(attempt.get("pid"), int):
        try:
            os.kill(attempt["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    records = _records(folder)
    record = read_record(records[-1].parent) if records else None
    return bool(record and record.get("status") == "running" and time.time() - record.get("updated", 0) < within_s)


def interrupted_summary(folder: Path) -> Optional[str]:
    """For an interrupted run (see interrupted): how far it got and with which code, e.g. "at generator step 266,000
    (its last evaluation), code 81e4f4bedc2c of commit 7adaecb", or for one that is still training (see live) "still
    training, at ..."; None for any other run."""
    if not interrupted(folder):
        return None
    attempt = read_attempt(folder) or {}
    records = _records(folder)
    history = ((read_record(records[-1].parent) if records else None) or {}).get("history") or []
    step = f"at generator step {history[-1]['g_step']:,} (its last evaluation)" if history else "before its first evaluation"
    return (("still training, " if live(folder) else "") +
            f"{step}, code {attempt.get('code_hash', 'unknown')} of commit {attempt.get('commit', 'unknown')}")


# What an interrupted run needs to continue elsewhere (another machine, a fresh clone), besides its last.ckpt: the
# attempt (code, threads, libraries it started with), its log, and per run folder the run record (whose history the
# continued fit extends), the configs, the metrics so far and the W&B run id it continues. Sample images, W&B files
# and the other checkpoints are left behind.
CARRIED = ("run.json", "config.yaml", "hparams.yaml", "metrics.csv", "wandb_run_id")


def carried_files(folder: Path) -> list[Path]:
    """The files of the interrupted run in `folder` (see interrupted) that another machine needs to continue it
    where it stopped, with the same code, threads and library versions (see resumable): copied to the same place
    under the other machine's --out, the next invocation there continues the run (on the same kind of device: the
    stamp does not record the hardware, whose kernels change the arithmetic). Empty for a run that is not
    interrupted, or is still training (see live: its checkpoint may be half written)."""
    if not interrupted(folder) or live(folder):
        return []
    files = [folder / ATTEMPT_FILE, *[f for f in [folder / "train.log", folder / REPLACED_FILE] if f.is_file()]]
    for version in sorted(folder.glob("runs/*/version_*")):
        files += [version / name for name in CARRIED if (version / name).is_file()]
        files += [ckpt for ckpt in [version / "checkpoints" / "last.ckpt"] if ckpt.is_file()]
    return files


def library_versions() -> dict[str, Optional[str]]:
    """{library: installed version} for LIBRARIES (None where one is not installed)."""
    from importlib import metadata

    versions: dict[str, Optional[str]] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# `*_path` keys that the callback holding them does not read, given its other arguments (init_args as resolved):
# callbacks.DiversityMetrics' `features` and callbacks.ImageQuality's `feature_extractor` use the classifier only
# when they are "mnist_classifier"
UNUSED_PATHS = {"classifier_path": lambda args: any(
    args.get(key, "mnist_classifier") != "mnist_classifier" for key in ("features", "feature_extractor"))}


def input_files(resolved: dict, folder: Path) -> dict[str, dict]:
    """The files a run's resolved config names under a `*_path` key (the classifier that counts Stacked MNIST modes
    and gives the image features) as {path as configured: {"sha256": its first 12 hex digits, plus the `info` a
    torch checkpoint saved with it (the classifier's test accuracy and data)}}, each looked up as the training
    looks it up from its working directory, the run's folder (callbacks.classifier.resolve_checkpoint's rule: there,
    then under its PROJECT_ROOT; not by changing this process's working directory, which the runner's parallel slots
    share). Two runs measured by different files cannot be compared figure by figure, so each result records the
    ones it used; a path that does not exist is left out (the training fails on it and says so), and so is one its
    callback does not read (UNUSED_PATHS: a classifier_path beside features that are not "mnist_classifier")."""
    from callbacks import classifier

    found: dict[str, dict] = {}

    def visit(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.endswith("_path") and isinstance(value, str) and value:
                    if key in UNUSED_PATHS and UNUSED_PATHS[key](node):
                        continue
                    path = folder / value if (folder / value).exists() else classifier.PROJECT_ROOT / value
                    if path.is_file() and value not in found:
                        found[value] = _file_identity(path)
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(resolved)
    return found


def _file_identity(path: Path) -> dict:
    identity: dict = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:12]}
    if path.suffix in (".pt", ".pth", ".ckpt"):
        import torch

        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # not a plain checkpoint: its hash alone identifies it
            saved = None
        if isinstance(saved, dict) and isinstance(saved.get("info"), dict):
            identity.update({k: v for k, v in saved["info"].items() if isinstance(v, (str, int, float, bool))})
    return identity


def stamp_for(env: dict[str, str]) -> dict:
    """What a run started now with environment `env` (added to this process's) is stamped with: the code hash and
    commit of this tree, its thread counts, the versions of LIBRARIES and the CPU (cache.cpu_identity; recorded,
    not compared by stamp_differences: a preempted run may continue on another node, and holding it back would
    strand it, so the CPU each attempt ran on stays in the result's `resumed` list instead)."""
    env = {**os.environ, **env}
    return {"code_hash": code_hash(), "commit": commit(),
            "threads": {"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS"), "torch_num_threads": torch_threads(env)},
            "libraries": library_versions(), "cpu": cpu_identity(env)}


def _threads_text(threads: Optional[dict]) -> str:
    threads = threads or {}
    return f"OMP_NUM_THREADS={threads.get('OMP_NUM_THREADS')}, torch {threads.get('torch_num_threads')}"


def stamp_differences(attempt: dict, stamp: dict) -> list[str]:
    """What differs between the stamp an attempt started with and `stamp`, each as a phrase ("code 13d1b8ae83d0
    of commit a08a474, this tree's 22e24c119f14"); empty where the attempt computes what a run with `stamp` would.
    Code that differs only outside the run's own files (both record the same `code_deps`, cache.run_code_hash) is
    no difference. An attempt from before library versions were recorded is judged without them."""
    differences = []
    own_unchanged = bool(attempt.get("code_deps")) and attempt.get("code_deps") == stamp.get("code_deps")
    if attempt.get("code_hash") != stamp["code_hash"] and not own_unchanged:
        differences.append(f"code {attempt.get('code_hash', 'not recorded')} of commit "
                           f"{attempt.get('commit', 'unknown')}, this tree's {stamp['code_hash']}")
    if attempt.get("threads") != stamp["threads"]:
        differences.append(f"threads {_threads_text(attempt.get('threads'))}, here "
                           f"{_threads_text(stamp['threads'])}")
    then, now = attempt.get("libraries", stamp.get("libraries")) or {}, stamp.get("libraries") or {}
    if then != now:
        differences.append("libraries " + ", ".join(f"{name} {then.get(name)} (here {now.get(name)})"
                                                    for name in sorted(set(then) | set(now))
                                                    if then.get(name) != now.get(name)))
    return differences


def resumable(folder: Path, stamp: dict) -> Optional[dict]:
    """The interrupted attempt a run in `folder` continues, or None.

    An attempt is interrupted when its folder has no result.json (a finished or failed run writes one) but an
    attempt.json and a last.ckpt (the process was killed: a session or job ended, a machine went down). It is
    continued only when it started with the same code hash, thread count and library versions (LIBRARIES) as
    `stamp` (see stamp_differences); a continued run then computes what one uninterrupted run computes (train.py
    resumes exactly, at an epoch end)."""
    if not interrupted(folder):
        return None
    attempt = read_attempt(folder)
    if attempt is None:
        return None
    return None if stamp_differences(attempt, stamp) else attempt


def held_back(folder: Path, stamp: dict) -> Optional[str]:
    """For an interrupted run (see interrupted) that a run stamped `stamp` would not continue (see resumable): what
    differs ("; "-joined stamp_differences). Such a run is neither continued nor started over by default
    (experiments/reproduce.py): starting it over would throw away its hours of training. None for any other run,
    and for one still training (see live)."""
    if not interrupted(folder) or live(folder):
        return None
    attempt = read_attempt(folder)
    if attempt is None:
        return None
    return "; ".join(stamp_differences(attempt, stamp)) or None


def training_elsewhere(folder: Path) -> bool:
    """Whether the run in `folder` is being trained now by another invocation (see live): it has an attempt and no
    result yet. Such a run is left to it: a second process training in the same folder would corrupt both."""
    if (folder / "result.json").exists() or not (folder / ATTEMPT_FILE).is_file():
        return False
    attempt = read_attempt(folder) or {}
    if attempt.get("host") == socket.gethostname() and attempt.get("pid") == os.getpid():
        return False  # this process's own attempt, interrupted earlier in it (its training process stopped)
    return live(folder)


def prepare_attempt(folder: Path, stamp: dict) -> Optional[list[dict]]:
    """Readies `folder` for an attempt with `stamp` (code hash, commit, threads). Returns the attempts it
    continues (earlier interrupted ones first; see resumable) with the commit, start, wall seconds and step
    reached of each, or None for a fresh start, for which whatever an earlier attempt left is removed first, so a
    rerun never continues a finished, failed or stale run's weights; the result it replaces is kept aside in
    REPLACED_FILE until the rerun has finished (see execute)."""
    earlier = resumable(folder, stamp)
    if earlier is None:
        shutil.rmtree(folder / "runs", ignore_errors=True)
        if (folder / "result.json").is_file():
            (folder / "result.json").replace(folder / REPLACED_FILE)
        return None
    records = _records(folder)
    seen = (read_record(records[-1].parent) or {}).get("updated") if records else None  # its last sign of life
    return [*earlier.get("attempts", []),
            {"commit": earlier.get("commit"), "start": earlier["start"], "reached_step": _current_step(folder),
             "wall_s": round(max(0.0, (seen or earlier["start"]) - earlier["start"]), 1),
             **({"cpu": earlier["cpu"]} if earlier.get("cpu") else {})}]


def finished_result(record: dict) -> Optional[dict]:
    """Status ok with the figures of a run record (callbacks.RunRecord's run.json) whose run trained to its end
    and evaluated its final weights: metrics (without the val/ prefix), generator steps, plots, curve and its W&B run
    (where W&B logged); None for any other record."""
    evaluation = finished_evaluation(record)
    if evaluation is None:
        return None
    metrics = {k.removeprefix("val/"): v for k, v in evaluation["metrics"].items()}
    return {"status": "ok", "metrics": metrics, "g_steps": evaluation["g_step"], "plots": record.get("plots", []),
            "curve": record.get("history", []),  # every evaluation of the run: the table's curves figure
            **({"wandb": record["wandb"]} if record.get("wandb") else {})}  # the row's W&B run


def outcome(folder: Path, returncode: int, log_path: Path) -> dict:
    """What a finished attempt in `folder` gives: status ok with the final evaluation's metrics, generator steps,
    plots and curve (from its run record), or status failed with the reason from its log."""
    records = _records(folder)
    record = read_record(records[-1].parent) if records else None
    evaluation = finished_evaluation(record)
    if record is not None and record.get("status") == "interrupted":  # stopped from outside: continue it later
        return {"status": "interrupted", "error": "interrupted (SIGTERM or Ctrl-C); the next invocation continues it"}
    if returncode == 0 and evaluation is not None:
        return finished_result(record)
    if returncode == 0:
        return {"status": "failed", "error": f"exit code 0 but no evaluation of the final weights in its {RECORD_FILE}"}
    reason = failure_reason(log_path.read_text(errors="replace")) if log_path.exists() else None
    return {"status": "failed", "error": reason or f"exit code {returncode}"}


def execute(run: Run, out: Path, env: dict[str, str], folder: Optional[Path] = None, extra: Optional[dict] = None,
            ignore_signals: Sequence[int] = ()) -> dict:
    """Trains one run in its folder (`folder`, default run.folder(out)) and returns its result (status ok or
    failed), stamped with the code hash, commit and thread count at its start. An interrupted attempt of the same
    code and threads is continued from its last checkpoint (`--ckpt_path last`; see prepare_attempt).

    `extra`: fields added to the result (e.g. the cluster job that ran it). `ignore_signals`: signals the training
    process ignores, for a caller that handles them itself (a SLURM job's preemption signal reaches every process
    of the job; experiments/slurm.py requeues the job and the run continues from its last checkpoint)."""
    folder = folder or run.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "train.log"
    env = {**os.environ, **env}
    stamp = {**stamp_for(env), "code_deps": run_code_hash(run)}
    attempts = prepare_attempt(folder, stamp)
    inputs = input_files(configs.resolve(run.configs, run.train_args()), folder)
    command = run.command() + (["--ckpt_path", "last"] if attempts else [])
    start = time.time()
    (folder / ATTEMPT_FILE).write_text(json.dumps({**stamp, "start": start, "attempts": attempts or [],
                                                   "host": socket.gethostname(), "pid": os.getpid()}, indent=1))
    with open(log_path, "a" if attempts else "w") as log:
        if attempts:
            log.write(f"\n==== continuing the interrupted attempt (it reached step {attempts[-1]['reached_step']}) "
                      f"from its last checkpoint: {' '.join(command)}\n")
            log.flush()
        rc = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_ignoring(ignore_signals)).returncode
    wall = time.time() - start + sum(a["wall_s"] for a in attempts or [])
    result = {"table": run.table, "model": run.model, "seed": run.seed, "key": run.key, "returncode": rc,
              "wall_s": round(wall, 1), "log": str(log_path), "command": " ".join(command), **stamp,
              **({"inputs": inputs} if inputs else {}), **({"resumed": attempts} if attempts else {}),
              **(extra or {}), **outcome(folder, rc, log_path)}
    if result["status"] == "interrupted":  # no result.json: the attempt stays, to be continued
        return result
    replaced = folder / REPLACED_FILE
    if result["status"] == "ok":
        keep_sample_plot(result, folder)
    elif replaced.is_file() and _status(replaced) == "ok":  # the figures it was to replace stay the run's result
        (folder / FAILED_RERUN_FILE).write_text(json.dumps(result, indent=1))
        replaced.replace(folder / "result.json")
        (folder / ATTEMPT_FILE).unlink(missing_ok=True)
        return result
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    replaced.unlink(missing_ok=True)
    (folder / FAILED_RERUN_FILE).unlink(missing_ok=True)
    (folder / ATTEMPT_FILE).unlink(missing_ok=True)
    return result


def _status(path: Path) -> Optional[str]:
    """The status a result file records, or None where it cannot be read."""
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _ignoring(signals: Sequence[int]):
    """A preexec_fn that makes the child ignore `signals` (an ignored disposition survives exec), or None."""
    if not signals:
        return None

    def ignore() -> None:
        for number in signals:
            signal.signal(number, signal.SIG_IGN)

    return ignore


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


# ---------------------------------------------------------------------------------- slots and progress
def default_jobs(threads: int, gpus_per_run: int) -> tuple[int, list[dict[str, str]]]:
    """Number of parallel runs and each slot's environment. `gpus_per_run` 0: CPU slots, the runs seeing no GPU."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or no driver: CPU only
        gpus = 0
    if gpus and not gpus_per_run:
        n = max(1, (os.cpu_count() or 1) // threads)
        return n, [{"CUDA_VISIBLE_DEVICES": ""} for _ in range(n)]
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
        self.first_seen: dict[str, tuple[int, float]] = {}  # by name: the first step seen and when
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
            progress.append(self._pace(run, started, step, total, now))
        eta = seconds_left(progress, pending, finished, self.n_slots, self.known)
        eta_text = "unknown" if math.isnan(eta) else f"{eta / 60:.0f} min"
        self.echo(f"[{now - self.t0:.0f} s] {len(finished)}/{len(self.jobs)} done, about {eta_text} left; running: "
                  + ("; ".join(parts) or "none"))

    def _pace(self, run: Run, started: float, step: Optional[int], total: Optional[int],
              now: float) -> tuple:
        """(model, elapsed, fraction done) for seconds_left (where there is no pace yet, the fraction is None and,
        for a run past step 0, the fraction its step count gives follows), with the elapsed time of a run that went
        from step 0 at the pace measured since its first step seen here: a continued run starts far along, and its
        own elapsed time would credit this invocation with the steps of the earlier ones."""
        if step is None or not total:
            return run.model, now - started, None
        first_step, first_time = self.first_seen.setdefault(run.name, (step, now))
        if step <= first_step or now <= first_time:  # no pace yet: costed by the model's other runs, from where it is
            return (run.model, now - started, None) + ((step / total,) if step else ())
        frac = step / total
        return run.model, frac * (now - first_time) / ((step - first_step) / total), frac

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
                    self.announce(run, folder, result)
                    results.append(result)
        finally:
            stop.set()
        return results

    def announce(self, run: Run, folder: Path, result: dict) -> None:
        """The line of a finished job: its status (with the error and log where it did not end ok) and figures."""
        is_check = folder != run.folder(self.out)
        status = "ok" if result["status"] == "ok" else f"{result['status'].upper()} ({result['error']}; log {result['log']})"
        figures = ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.get("metrics", {}).items()))
        self.echo(f"finished {run.name}{' (re-stamp check)' if is_check else ''} in {result['wall_s']:.0f} s: "
                  f"{status} {figures}")

