"""The cache of a table's finished runs: each run's result.json, the code hash that marks a cached run stale,
the --restamp check that vouches for stale runs, and where a result came from (commit, threads, sample plot).
What the cache and its options do for a user is told in experiments/reproduce.py, the command line."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from experiments.runner import Run

ROOT = Path(__file__).resolve().parents[1]
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
    return _files_hash(root, code_files(root))


def _files_hash(root: Path, files: list[Path]) -> str:
    """12 hex digits of SHA-256 over (path relative to `root`, size, bytes) of each of `files`, in their order."""
    h = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------- a run's own code
# The code hash above covers every hashed file, so any edit (a new model, a callback's fix) makes every cached run
# stale. A run's figures depend on fewer: train.py, the modules its config names (model, networks, datamodule,
# callbacks) and what those import. run_code_files finds them by reading the import statements (module level and
# inside functions) of the project's packages; a package's __init__.py only re-exports (a test keeps it so), so an
# import through it counts as one of the module that defines the name. A module no path leads to is still imported
# by train.py (through the packages' __init__) but executes only its definitions (a test checks that no hashed
# module does more at import). A result records the hash of its run's files as `code_deps` (run_code_hash); a
# cached run of other code whose files are all unchanged is current again (see own_code).
_PROJECT_NAME = re.compile(r"^(?:%s)(?:\.[A-Za-z_][A-Za-z0-9_]*)+$" % "|".join(CODE_DIRS))


def _module_path(root: Path, dotted: str) -> Optional[Path]:
    """The file of module or package `dotted` under `root` (a package: its __init__.py), or None."""
    base = root.joinpath(*dotted.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else None


def _dotted(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def _parsed(path: Path, stamp: tuple[int, int]) -> ast.Module:  # stamp: (mtime_ns, size), so an edit re-reads
    return ast.parse(path.read_text(), filename=str(path))


def _imports(root: Path, path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The imports of project modules in `path`, anywhere in it: (module, names) for `from module import names`,
    (module, ()) for `import module`; relative imports made absolute."""
    tree = _parsed(path, (path.stat().st_mtime_ns, path.stat().st_size))
    package = _dotted(root, path) if path.name == "__init__.py" else _dotted(root, path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*anchor, *([module] if module else [])])
            found.append((module, tuple(alias.name for alias in node.names)))
    return [(module, names) for module, names in found if module.split(".")[0] in CODE_DIRS]


def _reexports(root: Path, init: Path) -> dict[str, str]:
    """{name: defining module} for the `from .module import name` lines of a package's __init__.py."""
    exported = {}
    for module, names in _imports(root, init):
        for name in names:
            exported[name] = module
    return exported


def _resolve(root: Path, module: str, name: Optional[str]) -> list[Path]:
    """The files `from module import name` (or `import module`, name None) brings a run's code to depend on."""
    path = _module_path(root, module)
    if path is None:
        return []
    if name is None or path.name != "__init__.py":
        return [path]
    submodule = _module_path(root, f"{module}.{name}")
    if submodule is not None:
        return [submodule]
    defined_in = _reexports(root, path).get(name)
    if defined_in is not None and defined_in != module:
        return _resolve(root, defined_in, name)
    return [path]  # defined in the __init__ itself


def module_closure(start: list[str], root: Optional[Path] = None) -> list[Path]:
    """The hashed files that the dotted names in `start` (modules, or module.Name as a config's class_path) and
    train.py lead to through imports, in path order."""
    root = Path(root or CODE_ROOT)
    todo: list[Path] = [root / name for name in CODE_FILES]
    for dotted in start:
        module, _, name = dotted.rpartition(".")
        todo += _resolve(root, dotted, None) or _resolve(root, module, name)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module, names in _imports(root, path):
            for name in names or (None,):
                todo += _resolve(root, module, name)
    return sorted(seen, key=lambda p: p.relative_to(root).as_posix())


def _project_names(node) -> list[str]:
    """Every string in a resolved config that names a module or class of the project (class_path and the like)."""
    if isinstance(node, dict):
        return [name for value in node.values() for name in _project_names(value)]
    if isinstance(node, list):
        return [name for value in node for name in _project_names(value)]
    return [node] if isinstance(node, str) and _PROJECT_NAME.match(node) else []


def run_code_files(run: "Run", root: Optional[Path] = None) -> list[Path]:
    """The hashed files a run's figures depend on: train.py and the modules its resolved config names, with what
    they import (module_closure)."""
    from experiments import configs

    return module_closure(sorted(set(_project_names(configs.resolve(run.configs, run.train_args())))), root)


def run_code_hash(run: "Run", root: Optional[Path] = None) -> str:
    """12 hex digits of SHA-256 over (relative path, size, bytes) of each of run_code_files, as code_hash does for
    every hashed file."""
    root = Path(root or CODE_ROOT)
    return _files_hash(root, run_code_files(run, root))


CHANGES_SHOWN = 8  # changed files named in a table's footnote; more are counted


def changes_since(commit_text: Optional[str], root: Optional[Path] = None) -> Optional[list[str]]:
    """The hashed files (see code_files) that differ between a run's recorded commit and the tree now, each as
    "path (+added -deleted)" from git (untracked new ones as "path (+lines -0, untracked)"): what a reader of a stale
    row wants to know, whether the change can touch that run. None where git cannot tell: a commit recorded with
    uncommitted changes or unknown to this clone, or no git."""
    if not commit_text or not re.fullmatch(r"[0-9a-f]{7,40}", commit_text):
        return None
    root = Path(root or CODE_ROOT)
    if not (root / ".git").exists():  # not the top of a git checkout (a copy of the code, a subfolder)
        return None
    return _changes_since(commit_text, str(root), code_hash(root))  # the hash: a tree edited since asks git again


@functools.lru_cache(maxsize=None)
def _changes_since(commit_text: str, root: str, tree_hash: str) -> Optional[list[str]]:
    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        except OSError:
            return None
        return done.stdout if done.returncode == 0 else None

    # renames as a deletion and an addition; NUL-separated, so no path is quoted or split; untracked files ignored
    # by git too, since the hash reads every *.py file
    diff = git("diff", "--numstat", "--no-renames", "-z", commit_text, "--", *CODE_DIRS, *CODE_FILES)
    untracked = git("ls-files", "-z", "--others", "--", *CODE_DIRS)
    if diff is None or untracked is None:
        return None
    changes = []
    for entry in filter(None, diff.split("\0")):
        added, deleted, path = entry.split("\t", 2)
        if path.endswith(".py"):
            changes.append(f"{path} (+{added} -{deleted})")
    for path in filter(None, untracked.split("\0")):
        if path.endswith(".py") and "__pycache__" not in path:
            lines = len((Path(root) / path).read_text(errors="replace").splitlines())
            changes.append(f"{path} (+{lines} -0, untracked)")
    return changes


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


# The instruction-set extensions MKL (matrix products) and oneDNN (convolutions) choose their kernels by, and the
# variables that cap what they and ATen use. The same code, config, threads and libraries give other weights on
# a CPU with other kernels: capping MKL at AVX2 (MKL_ENABLE_INSTRUCTIONS=AVX2) or oneDNN (ONEDNN_MAX_CPU_ISA=AVX2)
# moves a Stacked MNIST GAN's weights within 300 steps on an AVX-512 CPU.
ISA_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_TORCH_PROBE: dict[tuple, tuple[Optional[int], Optional[str]]] = {}


def _torch_probe(env: dict[str, str]) -> tuple[Optional[int], Optional[str]]:
    """(torch.get_num_threads(), torch.backends.cpu.get_cpu_capability()) in one fresh Python process with
    environment `env` (what a run started with it gets: torch reads both at start-up); cached per the thread and
    ISA_LIMITS variables of `env`. None for a value the probe could not read."""
    key = tuple(sorted((k, v) for k, v in env.items() if k.endswith("_NUM_THREADS") or k in ISA_LIMITS))
    if key not in _TORCH_PROBE:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads()); "
                                "print(torch.backends.cpu.get_cpu_capability())"], env=env, capture_output=True, text=True)
        lines = probe.stdout.split() if probe.returncode == 0 else []
        threads = int(lines[0]) if lines and lines[0].isdigit() else None
        _TORCH_PROBE[key] = (threads, lines[1] if len(lines) > 1 else None)
    return _TORCH_PROBE[key]


def torch_threads(env: dict[str, str]) -> Optional[int]:
    """torch.get_num_threads() in a fresh Python process with environment `env` (what a run started with it
    gets: torch reads OMP_NUM_THREADS at start-up)."""
    return _torch_probe(env)[0]


def cpu_identity(env: dict[str, str], cpuinfo: str | None = None) -> dict:
    """The CPU a run started with environment `env` computes on: its model name and the ISA_FLAGS it has (from
    /proc/cpuinfo, or `cpuinfo`'s text; absent where there is none), ATen's kernel level in a fresh process with
    `env` (torch.backends.cpu.get_cpu_capability()) and the ISA_LIMITS set in `env`."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    present = set(fields.get("flags", "").split())
    limits = dict(sorted((k, v) for k, v in env.items() if k in ISA_LIMITS))
    identity = {"model": fields.get("model name"), "isa": " ".join(f for f in ISA_FLAGS if f in present) or None,
                "torch_capability": _torch_probe(env)[1]}
    return {**identity, **({"limits": limits} if limits else {})}


def cpu_text(cpu: Optional[dict]) -> str:
    """A run's recorded CPU (cpu_identity) in a few words, e.g. "Intel Xeon, torch kernels AVX512, ISA avx2 ...";
    "not recorded" for runs from before it was."""
    if not cpu:
        return "not recorded"
    limits = cpu.get("limits") or {}
    return (f"{cpu.get('model') or 'unknown model'}, torch kernels {cpu.get('torch_capability')}, ISA "
            f"{cpu.get('isa') or 'unknown'}" + "".join(f", {k}={v}" for k, v in limits.items()))


# ---------------------------------------------------------------------------------- kept results
def sample_plot(result: dict) -> Optional[str]:
    """The run's final sample plot (not e.g. InfoGAN's traversal), relative to its folder, if it logged one."""
    plots = result.get("plots") or []
    samples = [p for p in plots if "samples" in Path(p).parts]
    return (samples or plots)[-1] if plots else None


def keep_sample_plot(result: dict, folder: Path) -> bool:
    """Copies the final sample plot next to result.json as ``samples.<ext>`` (recorded as ``sample_plot``) and the
    points it was drawn from, where the plotting callback kept them beside it (``SampleScatter``'s .npz), as
    ``samples.npz`` (recorded as ``sample_points``): files the repository keeps.

    The run's own log folder (checkpoints, metrics, every plot) is not committed, so without these copies a
    table rebuilt from committed results, in another clone or session, has no samples to show.
    Returns whether it recorded a copy in `result` (which then needs writing back).
    """
    recorded = False
    plot = sample_plot(result)
    source = None if plot is None else (Path(plot) if Path(plot).is_absolute() else folder / plot)
    if not (result.get("sample_plot") and (folder / result["sample_plot"]).exists()) and source and source.exists():
        target = folder / f"samples{source.suffix}"
        shutil.copyfile(source, target)
        result["sample_plot"] = target.name
        recorded = True
    points = source.with_suffix(".npz") if source is not None and source.suffix != ".npz" else None
    if not (result.get("sample_points") and (folder / result["sample_points"]).exists()) and points and points.exists():
        shutil.copyfile(points, folder / "samples.npz")
        result["sample_points"] = "samples.npz"
        recorded = True
    return recorded


def known_walls(results: dict[str, dict], prefix: Optional[dict[str, float]] = None) -> dict[str, list[float]]:
    """Wall seconds of the cached runs per model: the first guess at what a run of that model costs. With
    `prefix` (model: the share of a whole run's steps a check trains, --restamp-steps), each wall is scaled to
    it: a 20,000-step check of a 800,000-step run is a fortieth of the run, not the run."""
    known: dict[str, list[float]] = {}
    for cached in results.values():
        if cached.get("wall_s"):
            share = 1.0 if prefix is None else prefix.get(cached["model"], 1.0)
            known.setdefault(cached["model"], []).append(cached["wall_s"] * share)
    return known


# ---------------------------------------------------------------------------------- the cache
def read_result(run: Run, out: Path) -> Optional[dict]:
    """The cached result of a finished run, or None."""
    path = run.folder(out) / "result.json"
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    return result if result.get("status") == "ok" else None


OWN_CODE_BASIS = "the files its run depends on (experiments/cache.py, run_code_files)"


def own_code(result: dict, run: Run, current: str) -> bool:
    """Brings a cached result's code stamp up to date with the hash of its run's own files (run_code_hash), in
    place; returns whether it changed. A result of the current code (hash `current`) that lacks `code_deps` gets
    it (every file is the same, so are its own). A result of other code whose recorded `code_deps` equals the
    run's now is re-stamped with `current`: none of the files it depends on changed, so the current code computes
    what it recorded; `restamped` says so (grouped_by OWN_CODE_BASIS, with its files and any earlier re-stamp). A
    result without either stays as it is: stale, for --restamp or --rerun-stale."""
    recorded = result.get("code_hash")
    if not recorded:
        return False
    if recorded == current:
        if result.get("code_deps"):
            return False
        result["code_deps"] = run_code_hash(run)
        return True
    if not result.get("code_deps") or result["code_deps"] != run_code_hash(run):
        return False
    record = {"from_code_hash": recorded, "from_commit": result.get("commit"), "to_code_hash": current,
              "at_commit": commit(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "grouped_by": OWN_CODE_BASIS,
              "rule": "the hash of the run's own files equal to the one it recorded: no file it depends on changed",
              "own_files": [p.relative_to(Path(CODE_ROOT)).as_posix() for p in run_code_files(run)]}
    if result.get("restamped"):
        record["previous"] = result["restamped"]
    result |= {"code_hash": current, "restamped": record}
    return True


def read_cache(runs: list[Run], out: Path, force: bool, rerun_stale: bool, current: str) -> tuple[dict[str, dict], list[Run]]:
    """The finished runs' results by run name, and the runs to train: those not finished (or all, with `force`),
    and with `rerun_stale` those trained by other code than `current`. A cached result gets the copies of its
    sample plot and points it lacks, where the run's folder still has them (see keep_sample_plot), and the hash of
    its run's own files, or is current again where those did not change (see own_code)."""
    results: dict[str, dict] = {}
    todo = []
    for run in runs:
        cached = None if force else read_result(run, out)
        if cached:
            kept = keep_sample_plot(cached, run.folder(out))
            if own_code(cached, run, current) or kept:
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


def is_check_folder(folder: Path) -> bool:
    """Whether `folder` is a --restamp check run's (see check_folder): a rerun of a cached run's seed, not a run of
    its own, so studies over a table's runs leave it out."""
    return "-check-" in folder.name


def check_folder(run: Run, out: Path, current: str, steps: Optional[int] = None) -> Path:
    """Where --restamp reruns a cached run to compare figures (beside it, so its folder stays as it was); with
    `steps` (--restamp-steps), the shortened check's own folder."""
    folder = run.folder(out)
    return folder.with_name(f"{folder.name}-check-{current}" + (f"-steps{steps}" if steps else ""))


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


def _same(x, y) -> bool:
    both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
    return x == y or both_nan


def curve_differences(cached: dict, fresh: dict) -> tuple[list[str], int]:
    """Where a shortened check run's curve differs from the cached run's at the generator steps both evaluated
    (exact equality of every value either records there; NaN equals NaN), and how many evaluations were compared.
    A check with no evaluation at a step the cached run evaluated compares nothing: that is a difference too."""
    cached_curve = {e["g_step"]: e for e in cached.get("curve") or []}
    if not cached_curve:
        return ["the cached run kept no curve of its evaluations to compare a shortened check with: re-stamp it "
                "with full check runs (no --restamp-steps)"], 0
    common = [e for e in fresh.get("curve") or [] if e["g_step"] in cached_curve]
    if not common:
        return ["the check run has no evaluation at a generator step the cached run evaluated: give --restamp-steps "
                "enough steps to reach its first evaluation"], 0
    differences = []
    for entry in common:
        old = cached_curve[entry["g_step"]]
        differences += [f"generator step {entry['g_step']:,}, {k}: cached {old.get(k)!r}, rerun {entry.get(k)!r}"
                        for k in sorted(set(old) | set(entry)) if not _same(old.get(k), entry.get(k))]
    return differences, len(common)


def metric_differences(cached: dict, fresh: dict) -> list[str]:
    """Where two results' recorded figures differ (exact equality; NaN equals NaN): every metric the cached run
    records (one the rerun lacks is a difference), and the generator steps when both record them. A metric only the
    rerun records (a measurement added since the cached run, e.g. `spread`) is not compared: the cached row never
    showed it, and a re-stamp leaves it unshown (see new_metrics)."""
    a, b = cached.get("metrics") or {}, fresh.get("metrics") or {}
    pairs = [(k, a.get(k), b.get(k)) for k in sorted(a)]
    if cached.get("g_steps") is not None and fresh.get("g_steps") is not None:
        pairs.append(("g_steps", cached["g_steps"], fresh["g_steps"]))

    return [f"{k}: cached {x!r}, rerun {y!r}" for k, x, y in pairs if not _same(x, y)]



def new_metrics(cached: dict, fresh: dict) -> list[str]:
    """The metrics a rerun records that its cached run does not: not compared by metric_differences."""
    return sorted(set(fresh.get("metrics") or {}) - set(cached.get("metrics") or {}))


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


def _restamp_failures(restamp: RestampPlan, results: dict[str, dict], check_results: dict[str, dict],
                      steps: Optional[int] = None) -> list[str]:
    failures = []
    for run in restamp.checks:
        fresh, cached = check_results[run.name], results[run.name]
        if fresh["status"] != "ok":
            failures.append(f"{run.name}: the check run failed ({fresh['error']}; log {fresh['log']})")
        else:
            differences = curve_differences(cached, fresh)[0] if steps else metric_differences(cached, fresh)
            failures += [f"{run.name}: {d}" for d in differences]
    return failures


_RESTAMP_BASIS = {"code": "the code hash the runs record", "commit": "the commit the runs record (no code hash; "
                  "older runners recorded the commit at the end of a run)", "run": "this run alone (no code hash, no clean commit)"}


def restamp_runs(restamp: RestampPlan, seeds: list[int], results: dict[str, dict], check_results: dict[str, dict],
                 out: Path, current: str, echo=print, steps: Optional[int] = None) -> list[str]:
    """Stamps `current` on every run of each checked group, recording how in its result.json, if every check run
    recorded exactly its cached run's figures (with `steps`, the check runs trained to that trainer step: their
    evaluations equal the cached runs' at the same generator steps); SystemExit naming each difference (nothing
    re-stamped) otherwise. Returns the names of the re-stamped runs."""
    failures = _restamp_failures(restamp, results, check_results, steps)
    if failures:
        raise SystemExit(
            f"--restamp: nothing re-stamped. The current code (hash {current}) does not reproduce the cached "
            "figures exactly:\n  " + "\n  ".join(failures) + "\nThe check runs' results are in "
            + ", ".join(shown_path(check_folder(run, out, current, steps)) for run in restamp.checks)
            + "; --rerun-stale retrains the stale runs" + ("." if steps else ", taking these whole check runs in place "
                                                               "of their seeds' (experiments/reproduce.py, adopt_checks)."))
    at_commit, when = commit(), time.strftime("%Y-%m-%d %H:%M:%S")
    restamped: list[str] = []
    for (model, kind, value), group in restamp.groups.items():
        record_checks = [{"seed": run.seed, "folder": check_folder(run, out, current, steps).relative_to(out).as_posix(),
                          "metrics": check_results[run.name].get("metrics"),
                          "g_steps": check_results[run.name].get("g_steps")}
                         | ({"not_compared": unshown} if not steps and (unshown := new_metrics(
                             results[run.name], check_results[run.name])) else {})
                         | ({"evaluations_compared": curve_differences(results[run.name], check_results[run.name])[1],
                             "trainer_max_steps": steps} if steps else {})
                         for run in restamp.checks if run in group]
        rule = (("every metric the cached run records, and g_steps, equal in its check run (metrics measured only "
                 "since, listed under not_compared, stay unshown for these runs)") if not steps else
                f"each check run, trained to trainer step {steps:,} (a prefix of the cached run), equal to the cached "
                "run at every evaluation both made (every value of the curve); what the cached run did after the "
                "check's last evaluation is not compared")
        for run in group:
            result = results[run.name]
            record = {"from_code_hash": result.get("code_hash"), "from_commit": result.get("commit"),
                      "to_code_hash": current, "at_commit": at_commit, "time": when, "grouped_by": _RESTAMP_BASIS[kind],
                      "rule": rule,
                      "checks": record_checks}
            if result.get("restamped"):
                record["previous"] = result["restamped"]
            # the check vouches for the current code, so the run's own files are recorded as they are now
            result |= {"code_hash": current, "code_deps": run_code_hash(run), "restamped": record}
            (run.folder(out) / "result.json").write_text(json.dumps(result, indent=1))
            restamped.append(run.name)
    echo(f"re-stamped {len(restamped)} runs with code {current}: {', '.join(restamped) or 'none'}"
         + (f"; left stale, no run of seeds {','.join(map(str, seeds))} trained by the same code to check them "
            f"with: {', '.join(run.name for run in restamp.unchecked)}" if restamp.unchecked else ""))
    return restamped


# ---------------------------------------------------------------------------------- where and when
def shown_path(path: Path) -> str:
    """A path as a command in the table's header shows it: relative to the project root when inside it."""
    try:
        return str(path.relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


# what trains and evaluates a run: the hashed code, the configs and scripts of experiments/, the package's pins
RUN_INPUTS = (*CODE_DIRS, *CODE_FILES, "experiments", "pyproject.toml")


def commit() -> str:
    """HEAD's short hash, "(with uncommitted changes)" where a tracked file a run is made from (RUN_INPUTS) differs
    from it. Other edits do not count: results/ is what the runs write (a run that finishes rewrites its table and
    re-stamps others' result.json), docs and tests do not train, and counting them would mark every run started
    beside another's finish, and hide a stale row's changes-since footnote."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *RUN_INPUTS],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return (sha + (" (with uncommitted changes)" if dirty else "")) or "unknown"
    except OSError:
        return "unknown"
