"""Reproduce a comparison table: every model of a benchmark, every seed, one command.

    python experiments/reproduce.py ring8 --seeds 10
    python experiments/reproduce.py grid25 --seeds 5 --models gan,mgan --jobs 2
    python experiments/reproduce.py ring8 --seeds 2 --set trainer.max_steps=200   # any config override

For table T it trains `experiments/T/<model>.yaml` composed on the table's `experiments/T/protocol.yaml`
(baseline and variants, in the order of MODELS) with `python train.py fit` once per seed, each run in its own folder under
`--out` (default `results/T`), and writes there
- `T.md` and `T.csv`: one row per model, mean and sample std over the seeds of every metric
  (modes, HQ %, KL for 2D), the number of seeds, failed runs, wall time per run, and the
  published rows of `experiments/published.yaml` with their sources, and where those are means ± standard errors
  under the table's own protocol (PacGAN Table 1 in ring8_pacgan, grid25_pacgan), how far ours is from each in
  combined standard errors;
- `T_samples.png`, `T_modes.png`, `T_curves.png`: the final samples (models x seeds), a bar chart per metric
  (mean and std over seeds, published values as markers) and the training curves (mean ± std over seeds);
  see experiments/figures.py.

Runs are cached: a run whose resolved config (the config file with the overrides, as
`train.py fit --print_config` prints it; see experiments/configs.py) and seed did not change since it last
finished is read back, not rerun (`--force` reruns everything), so an interrupted table resumes
where it stopped; a run interrupted while it trained (the runner or its machine stopped) continues from its
last checkpoint if the code, thread count and library versions are still those it started with (see
`resumable` in experiments/runner.py; result.json lists the attempts it continued). One interrupted under other
code, threads or libraries is held back: neither continued nor started over, and the command says what differs
and how to continue it (from a checkout of the commit it started with, with the same `--threads`);
`--rerun-stale` or `--force` start it over with this tree's code. A run that another invocation is training
now (its runner process alive, or its record written in the last minutes) is left to it, whatever the options.
To continue one on another
machine or in a fresh clone, copy the files `--interrupted-files` lists to the same places there. A failed run is retried on the next invocation and reported in the table
(with its log) until then. Independent runs go in parallel: `--jobs` of them (default: the CPU
cores divided by `--threads`, or the GPUs divided by `--gpus-per-run` when GPUs are present,
each run then seeing only its own GPUs through CUDA_VISIBLE_DEVICES). Progress (generator step
of each running run, runs done, estimated time left) is printed every `--progress-every` seconds.
`--wandb` also logs the final table to W&B as a Table (group = the table's name; each run is
already a W&B run grouped by table and model, seeds as members).

Code: each run's result.json records `code_hash`, a hash of the code that trains and evaluates
it, taken when the run starts: every *.py file under models/, datamodules/ and callbacks/, and
train.py (it builds the trainer and adds callbacks), by path relative to the project root, in
sorted order (see `code_hash` in experiments/cache.py). Not included: the configs (already in
the cache key), this runner and the rest of experiments/, tests, documentation, and the installed
libraries. A cached run whose hash differs from
the current tree's is *stale*; one without a hash (written before hashes were recorded) is
*code unknown* and counts as stale too. Each result.json also records `code_deps`, the hash of the run's own
files (train.py, the modules its resolved config names and what they import: `run_code_files` in
experiments/cache.py), and a cached run of other code whose own files are all unchanged is current again: it is
re-stamped on the next read (`restamped` says so; the table footnotes it), and an interrupted one continues. A
result of the current code written before `code_deps` was recorded gets it on the next read. A plain invocation
still reuses stale runs but the table's
"code" column marks them; `--rerun-stale` retrains exactly the stale runs (and any not yet
trained); `--restamp 0` (seeds) is for a refactor that should change no figure. It trains nothing
else: it groups the stale runs by model and old code (the recorded hash; for runs without one, the
commit they record, or the run alone when that commit is not clean), reruns the runs of the given
seeds in each group (into `<run folder>-check-<hash>`, leaving the cached run as it is), and only
if every rerun records exactly the cached metrics and generator steps, stamps the current hash on
every run of each group that had a check, recording how in its result.json (`restamped`: old hash
and commit, the check runs and their figures). Groups without a run of those seeds stay stale and
are listed. If any figure differs, nothing is re-stamped and the command names the metric; a whole-length check
run is then a run of the current code like any other, and a later `--rerun-stale` takes it in place of the stale
run instead of training that seed again, where its stamp (code, threads, libraries) is what a run started now
would have (`adopted` in its result.json keeps the figures it replaced). For long runs,
`--restamp 0 --restamp-steps N` trains each check to trainer step N only (into `...-check-<hash>-steps<N>`)
and compares its evaluations with the cached run's curve at the same generator steps, every value exactly: a
weaker check (what the cached run did after step N is not compared, e.g. a schedule's late milestone or a
monitor's late action), recorded as such in the re-stamp record and the table's footnote.

Threads: results on CPU depend on the thread count. Each run gets OMP_NUM_THREADS=`--threads`
(default 1); result.json records it and torch.get_num_threads() of a Python process started with
the run's environment; the table's header says which thread counts its runs used. Files the config names by
path (the MNIST classifier) are recorded too, under `inputs` (their SHA-256 and the checkpoint's own info), and
the header counts the runs measured by each. So is the CPU (`cpu`: its instruction-set extensions and torch's
kernel level; MKL and oneDNN choose kernels by them, so figures are bit-exact only on the same ones), counted in the
header too.

Cluster: `--launcher slurm` submits the runs to train as one SLURM job array through submitit, each task a run
on its own GPU (or CPUs) running exactly what a local slot runs, and writes the table once the array has finished
(`--slurm-partition`, `--slurm-time`, `--gpus-per-run`, `--cpus-per-run`, `--sbatch KEY=VALUE`, `--slurm-logs`;
see experiments/slurm.py). `--import RUN...` takes finished runs that this runner did not launch (train.py run
folders, W&B run folders of them) into the cache as runs of the table, matched by their resolved config (see
experiments/import_runs.py).

The work is split in three modules: experiments/runner.py (the plan, executing runs and continuing interrupted
ones), experiments/cache.py (finished runs, the code hash, re-stamping) and experiments/report.py (aggregating and
rendering the table and its figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: the project root holds the experiments package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from experiments import cache, import_runs, report, runner, slurm  # noqa: E402
from experiments.configs import MODELS, table_models  # noqa: E402
from experiments.runner import ROOT, Run, cli_overrides  # noqa: E402


LAUNCHERS = ("local", "slurm")


def check_options(force: bool, rerun_stale: bool, restamp: Optional[list[int]], report_only: bool,
                  launcher: str = "local", slurm_options: Optional[slurm.SlurmOptions] = None, threads: int = 1,
                  jobs: Optional[int] = None, gpus_per_run: int = 1) -> None:
    """SystemExit for options that contradict each other, --restamp without seeds, or a bad launcher value."""
    chosen = [flag for flag, on in (("--force", force), ("--rerun-stale", rerun_stale),
                                    ("--restamp", restamp is not None), ("--report-only", report_only)) if on]
    if len(chosen) > 1:
        raise SystemExit(f"{' and '.join(chosen)} do not go together: choose one")
    if restamp is not None and not restamp:
        raise SystemExit("--restamp needs the seeds to rerun as the check, e.g. --restamp 0")
    if launcher not in LAUNCHERS:
        raise SystemExit(f"--launcher {launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    for flag, value, least in (("--threads", threads, 1), ("--jobs", jobs, 1), ("--gpus-per-run", gpus_per_run, 0)):
        if value is not None and value < least:
            raise SystemExit(f"{flag} {value}: give {least} or more")
    if launcher == "slurm" and not report_only:
        (slurm_options or slurm.SlurmOptions(gpus_per_run=gpus_per_run)).check(threads)


def summary(table: str, runs: list[Run], models: list[str], seeds: list[int], results: dict[str, dict],
            stale: list[Run], todo: list[Run], checks: list[Run], slots: str, out: Path, current: str,
            rerun_stale: bool, restamp: Optional[list[int]], report_only: bool, missing: list[str],
            queued: Optional[dict[str, str]] = None, held: Optional[dict[str, str]] = None,
            elsewhere: Optional[list[str]] = None) -> list[str]:
    """The lines printed before anything trains: what is cached, stale, to train or to check, and where; then a
    line for each run held back (see held_back_runs) or training in another invocation."""
    interrupted = [run.name for run in todo if runner.interrupted(run.folder(out))]
    lines = [f"{table}: {len(runs)} runs ({len(models)} models x {len(seeds)} seeds), {len(results)} cached"
             + (f" ({len(stale)} stale: trained by other code than this tree's, hash {current}, or code not recorded)"
                if stale else "")
             + f", {len(todo)} to train" + (f" ({sum(run.name in results for run in todo)} of them stale)" if rerun_stale else "")
             + (f" ({len(interrupted)} interrupted, continued from their last checkpoint: {', '.join(interrupted)})"
                if interrupted else "")
             + (f", {len(held)} interrupted under other code, threads or libraries and held back" if held else "")
             + (f", {len(elsewhere)} training in another invocation, left to it" if elsewhere else "")
             + (f", {len(checks)} to rerun as the re-stamp check" if restamp is not None else "")
             + (f", {len(queued)} still queued or running as SLURM jobs of an earlier invocation, not submitted again "
                f"({', '.join(f'{name} job {job}' for name, job in queued.items())})" if queued else "")
             + f", {slots}; results in {out}"
             + (f"; report only, {len(missing)} not run yet" if report_only else "")]
    if stale and not rerun_stale and restamp is None:
        lines.append(f"the table marks the {len(stale)} stale runs (code column); --rerun-stale retrains them; "
                     "--restamp SEEDS re-stamps them if rerunning those seeds reproduces the cached figures exactly")
    by_name = {run.name: run for run in runs}
    for name, why in (held or {}).items():
        folder = by_name[name].folder(out)
        started = (runner.read_attempt(folder) or {}).get("commit", "unknown")
        lines.append(f"{name}: held back, {runner.interrupted_summary(folder)}; this invocation would not continue "
                     f"it ({why}). Continue it with what it started with (e.g. `git worktree add ../at-{started} "
                     f"{started}` and this command there with --out {out}), or start it over with this tree's code: "
                     "--rerun-stale")
    for name in elsewhere or []:
        where = (runner.interrupted_summary(by_name[name].folder(out)) or "before its first checkpoint")
        lines.append(f"{name}: being trained by another invocation, {where.removeprefix('still training, ')}; "
                     "left to it")
    return lines


def held_back_runs(todo: list[Run], out: Path, stamp: dict, start_over: bool) -> tuple[dict[str, str], list[str]]:
    """Of the runs to train, those not to touch: {name: what differs} for the interrupted runs that `stamp` (what a
    run started now is stamped with) would not continue (runner.held_back), unless `start_over` (--rerun-stale,
    --force), and the names of those another invocation is training now (runner.training_elsewhere), always."""
    elsewhere = [run.name for run in todo if runner.training_elsewhere(run.folder(out))]
    held = {} if start_over else {run.name: why for run in todo if run.name not in elsewhere
                                  for why in [runner.held_back(run.folder(out),
                                                               {**stamp, "code_deps": cache.run_code_hash(run)})] if why}
    return held, elsewhere


def reproduce(table: str, seeds: list[int], models: list[str], out: Path, overrides: list[str], jobs: Optional[int] = None,
              threads: int = 1, gpus_per_run: int = 1, force: bool = False, progress_every: float = 60.0,
              use_wandb: bool = False, report_only: bool = False, rerun_stale: bool = False,
              restamp: Optional[list[int]] = None, launcher: str = "local",
              slurm_options: Optional[slurm.SlurmOptions] = None, echo=print,
              restamp_steps: Optional[int] = None) -> dict:
    """Trains what the table needs and writes it. `rerun_stale`: also retrain the cached runs trained by other code
    than the current tree's. `restamp` (seeds): train nothing but, for the stale runs, rerun those seeds as a check
    and re-stamp the stale runs the check covers if every figure is identical; SystemExit (nothing re-stamped)
    naming the differing metric otherwise; with `restamp_steps`, the check runs train to that trainer step only and
    their evaluations are compared with the cached runs' at the same generator steps. `launcher` "local": the runs go in parallel slots of this machine;
    "slurm": one job array through submitit (`slurm_options`; see experiments/slurm.py), the table written when
    it has finished."""
    check_options(force, rerun_stale, restamp, report_only, launcher, slurm_options, threads, jobs, gpus_per_run)
    if restamp_steps is not None and (restamp is None or restamp_steps < 1):
        raise SystemExit(f"--restamp-steps {restamp_steps}: it shortens the check runs of --restamp SEEDS; give both, "
                         "with at least 1 step")
    runs = runner.plan(table, models, seeds, overrides)
    out = Path(out).resolve()  # each run trains inside its own folder, so relative paths would break
    out.mkdir(parents=True, exist_ok=True)
    current = cache.code_hash()
    results, todo = cache.read_cache(runs, out, force, rerun_stale, current)
    # what a run started now is stamped with (the slots' thread count, see slot_environments): needed only to judge
    # interrupted runs, and it probes torch's thread count in a fresh process
    stamp = (runner.stamp_for({"OMP_NUM_THREADS": str(threads)})
             if any(runner.interrupted(run.folder(out)) for run in todo) else {})
    adopted = adopt_checks(todo, results, out, current, stamp or threads, echo) if rerun_stale else []
    todo = [run for run in todo if run.name not in adopted]
    stale = cache.stale_runs(runs, results, current)
    held, elsewhere = held_back_runs(todo, out, stamp, start_over=force or rerun_stale)
    missing: list[str] = [run.name for run in todo if run.name in held or run.name in elsewhere]
    todo = [run for run in todo if run.name not in missing]
    if report_only or restamp is not None:  # a table of what has finished, e.g. while the rest trains elsewhere
        missing, todo = [run.name for run in runs if run.name in missing or run in todo], []
    queued: dict[str, str] = {}
    if launcher == "slurm":
        slurm_options = slurm_options or slurm.SlurmOptions(gpus_per_run=gpus_per_run)
        queued = slurm.queued_runs(todo, out)  # an earlier invocation's jobs still on them
        todo, missing = [run for run in todo if run.name not in queued], missing + list(queued)
    plan = cache.plan_restamp(stale, results, restamp, threads) if restamp is not None else cache.RestampPlan()
    if restamp_steps is not None:
        too_long = [f"{run.name} ({run.max_steps()})" for run in plan.checks
                    if run.max_steps() is not None and int(run.max_steps()) <= restamp_steps]
        if too_long:
            raise SystemExit(f"--restamp-steps {restamp_steps} is not shorter than these runs' max_steps: "
                             f"{', '.join(too_long)}; leave it out to rerun them whole")
    check_runs = [dataclasses.replace(run, overrides=[*run.overrides, "--trainer.max_steps", str(restamp_steps)])
                  if restamp_steps else run for run in plan.checks]
    prefix = ({run.model: min(1.0, restamp_steps / run.max_steps()) for run in plan.checks if run.max_steps()}
              if restamp_steps else None)
    # the first guess at a run's cost: this table's finished runs of its model, those of seeds not asked for included
    known = cache.known_walls({**other_finished_runs(table, out, runs, overrides, current)[1], **results}, prefix)
    jobs_list = [(run, run.folder(out)) for run in todo] + [(check, cache.check_folder(run, out, current, restamp_steps))
                                                            for run, check in zip(plan.checks, check_runs)]
    if launcher == "slurm":
        execution = slurm.SubmititExecution(jobs_list, out, slurm_options, threads, known, echo)
        slots = (f"as one {slurm_options.cluster} job array" + (f", at most {slurm_options.parallelism} at a time"
                                                                 if slurm_options.parallelism else ""))
    else:
        slot_envs = runner.slot_environments(jobs, threads, gpus_per_run)
        execution = runner.Execution(jobs_list, out, slot_envs, known, echo)
        slots = f"{len(slot_envs)} at a time"
    for line in summary(table, runs, models, seeds, results, stale, todo, plan.checks, slots, out, current,
                        rerun_stale, restamp, report_only, missing, queued, held, elsewhere):
        echo(line)

    done = execution.run(progress_every)
    results.update((run.name, result) for run, result in zip(todo, done))
    check_results = {run.name: result for run, result in zip(plan.checks, done[len(todo):])}
    restamped = (cache.restamp_runs(plan, restamp, results, check_results, out, current, echo, restamp_steps)
                 if restamp is not None else [])

    other_runs, others = other_finished_runs(table, out, runs, overrides, current)
    results.update(others)
    everything = sorted(runs + other_runs, key=lambda run: (MODELS.index(run.model), run.seed))
    ordered = [results[r.name] for r in everything if r.name in results]
    refresh = report.published(table, runner.EXPERIMENTS).get("batchnorm_refresh")
    if refresh:  # the authors evaluated after a BatchNorm refresh: the same on each finished run's last checkpoint
        from experiments import batchnorm_refresh

        for run in runs:
            try:
                if run.name in results and batchnorm_refresh.record(run, run.folder(out), results[run.name], refresh):
                    echo(f"{run.name}: BatchNorm refresh recorded in its result.json (experiments/batchnorm_refresh.py)")
            except Exception as err:  # noqa: BLE001 - e.g. a checkpoint of older code: the table is written without it
                echo(f"{run.name}: BatchNorm refresh not recorded ({type(err).__name__}: {err}); the table goes on "
                     "without it")
    in_progress = {run.name: summary for run in runs if run.name in missing
                   for summary in [runner.interrupted_summary(run.folder(out))] if summary}
    shown_models = [m for m in table_models(table, runner.EXPERIMENTS) if any(r.model == m for r in everything)]
    shown_seeds = sorted({r.seed for r in everything})
    header = report.table_header(table, shown_seeds, shown_models, out, overrides, report_only, ordered, current,
                                 missing, table_models(table, runner.EXPERIMENTS), in_progress, others=len(others))
    rows, written = report.write_table(table, out, ordered, report.published(table, runner.EXPERIMENTS), header,
                                       current, use_wandb)
    echo("wrote " + ", ".join(map(str, written)))
    return {"rows": rows, "results": ordered, "trained": len(todo), "code_hash": current, "stale": [r.name for r in stale],
            "checked": [run.name for run in plan.checks], "restamped": restamped, "adopted": adopted}


def adopt_checks(todo: list[Run], results: dict[str, dict], out: Path, current: str, stamp: dict | int,
                 echo) -> list[str]:
    """For --rerun-stale: the stale runs in `todo` whose whole-length --restamp check run (cache.check_folder,
    no `-steps`) finished with the current code and the stamp a run started now would have (threads, libraries;
    runner.stamp_differences): that check folder becomes the run's folder, its result the run's, recording in
    `adopted` the check folder and the stale result's code, commit, threads and figures it replaces; returns their
    names. Such a check trained the same config (the folder's key) and seed as a rerun would, so retraining it
    would compute the same figures again. `stamp` is runner.stamp_for's for the runs' threads, or the thread count
    (an int) to probe it with when a candidate turns up."""
    candidates = []
    for run in todo:
        folder = cache.check_folder(run, out, current)
        if run.name in results and (folder / "result.json").is_file():
            check = json.loads((folder / "result.json").read_text())
            if check.get("status") == "ok" and check.get("key") == run.key and check.get("seed") == run.seed:
                candidates.append((run, folder, check))
    if not candidates:
        return []
    if isinstance(stamp, int):
        stamp = runner.stamp_for({"OMP_NUM_THREADS": str(stamp)})
    adopted = []
    for run, folder, check in candidates:
        differences = runner.stamp_differences(check, {**stamp, "code_deps": cache.run_code_hash(run)})
        if differences:
            echo(f"{run.name}: its check run {cache.shown_path(folder)} is not taken in its place ("
                 f"{'; '.join(differences)}); it trains again")
            continue
        stale = results[run.name]
        target = run.folder(out)
        check["adopted"] = {"from_folder": folder.name, "at_commit": cache.commit(),
                            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                            "replaced": {k: stale.get(k) for k in ("code_hash", "commit", "threads", "wall_s",
                                                                   "g_steps", "metrics")}}
        if check.get("log"):
            check["log"] = str(target / Path(check["log"]).name)
        shutil.rmtree(target)
        folder.rename(target)
        (target / "result.json").write_text(json.dumps(check, indent=1))
        results[run.name] = check
        adopted.append(run.name)
    if adopted:
        echo(f"--rerun-stale: {len(adopted)} stale runs replaced by their whole-length re-stamp check runs of this "
             f"code, not trained again: {', '.join(adopted)} (their result.json 'adopted' keeps the figures replaced)")
    return adopted


def other_finished_runs(table: str, out: Path, runs: list[Run], overrides: list[str],
                        current: str) -> tuple[list[Run], dict[str, dict]]:
    """The results of the runs finished in `out` by other invocations (other models or seeds of the table, the same
    overrides) that `runs` do not include, by run name: a table written after some of its rows were run still shows
    every run finished in its folder. A run counts when its folder is the one the current configs give that model
    and seed (a config changed since makes another key: that run is not this table's) and it holds a result.
    Returns those runs and their results by run name."""
    asked = {run.name for run in runs}
    found: dict[str, set[int]] = {}
    for folder in (out / "runs").glob("*/seed*-*"):  # <model>/seed<s>-<key> (runner.Run.folder)
        seed = folder.name.removeprefix("seed").partition("-")[0]
        if seed.isdigit() and not cache.is_check_folder(folder) and (folder / "result.json").is_file():
            found.setdefault(folder.parent.name, set()).add(int(seed))
    candidates = [run for model in table_models(table, runner.EXPERIMENTS) if model in found
                  for run in runner.plan(table, [model], sorted(found[model]), overrides) if run.name not in asked]
    results, _ = cache.read_cache(candidates, out, False, False, current)
    return [run for run in candidates if run.name in results], results


def interrupted_files(table: str, seeds: list[int], models: list[str], out: Path, overrides: list[str],
                      echo=print) -> list[Path]:
    """Echoes (relative to the working directory where they are under it) and returns the files the interrupted
    runs among the table's `models` x `seeds` need to continue elsewhere (runner.carried_files)."""
    runs = runner.plan(table, models, seeds, overrides)
    training = [run.name for run in runs if runner.interrupted(run.folder(Path(out).resolve()))
                and runner.live(run.folder(Path(out).resolve()))]
    if training:
        print(f"left out, still training (stop them first): {', '.join(training)}", file=sys.stderr)
    files = [f for run in runs for f in runner.carried_files(run.folder(Path(out).resolve()))]
    for f in files:
        echo(str(f.relative_to(Path.cwd())) if f.is_relative_to(Path.cwd()) else str(f))
    return files


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", help="benchmark folder under experiments/: ring8, grid25, ...")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--seed-list", help="explicit comma-separated seeds instead of --seeds")
    parser.add_argument("--models", help=f"comma-separated subset of the table's models (default: every model of "
                                          f"{MODELS} the table has a config for)")
    parser.add_argument("--out", type=Path, help="output folder (default results/<table>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run, e.g. trainer.max_steps=200 (repeatable)")
    parser.add_argument("--jobs", type=int, help="runs in parallel (default: cores / threads, or GPUs / gpus-per-run)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP_NUM_THREADS; default 1)")
    parser.add_argument("--gpus-per-run", type=int, default=1,
                        help="GPUs each run sees (default 1; 0: CPU only); with --launcher slurm 0 or 1")
    parser.add_argument("--force", action="store_true", help="rerun finished runs too")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="also retrain the cached runs trained by other code than this tree's (code hash differs "
                             "or was not recorded); the others stay cached")
    parser.add_argument("--restamp", metavar="SEEDS",
                        help="train nothing else: rerun the stale runs of these seeds (e.g. 0) and, only if every "
                             "recorded metric equals the cached one exactly, stamp the current code hash on the stale "
                             "runs of the same model and old code, recording how in their result.json")
    parser.add_argument("--restamp-steps", type=int, metavar="N",
                        help="with --restamp: train each check run to trainer step N only (a prefix of the cached "
                             "run) and compare its evaluations with the cached run's at the same generator steps; "
                             "for long runs, and for a change whose effect would show from the start")
    parser.add_argument("--progress-every", type=float, default=60.0, help="seconds between progress lines")
    parser.add_argument("--wandb", action="store_true", help="also log the final table to W&B")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the table from the finished runs and list the missing ones")
    launch = parser.add_argument_group("launching (see experiments/slurm.py)")
    launch.add_argument("--launcher", default="local", help="local: parallel slots of this machine (default); slurm: "
                        "one SLURM job array through submitit, the table written when it has finished")
    launch.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
    launch.add_argument("--slurm-time", default=slurm.DEFAULT_TIME,
                        help=f"time limit of each run, as sbatch --time takes it (default {slurm.DEFAULT_TIME}); a run "
                             "that reaches it is requeued and continues from its last checkpoint")
    launch.add_argument("--cpus-per-run", type=int, help="CPUs of each run's SLURM task (default: --threads)")
    launch.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                        help="extra sbatch option for every run, e.g. account=myproject, mem=32G, constraint=a100 "
                             "(repeatable)")
    launch.add_argument("--slurm-logs", type=Path, help="submitit's folder: each job's script, pickles and logs, "
                                                        "named by job id (default <out>/slurm)")
    parser.add_argument("--import", dest="import_paths", nargs="+", metavar="RUN",
                        help="train nothing: take finished runs that the runner did not launch (a train.py run folder "
                             "runs/<name>/version_N, or the W&B run folder runs/wandb/offline-run-... of one) as runs "
                             "of this table, where the runner caches them; --report-only then shows them")
    parser.add_argument("--interrupted-files", action="store_true",
                        help="train nothing: print the files (one a line) that the selection's interrupted runs need to "
                             "continue on another machine or in a fresh clone: copied to the same place under its "
                             "--out, the next invocation there continues them (same code, threads and libraries)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        runner.plan(args.table, [], [], [])  # a clear error for an unknown table
        models = table_models(args.table, runner.EXPERIMENTS)
    out = args.out or ROOT / "results" / args.table
    restamp = None
    if args.restamp is not None:
        try:
            restamp = [int(s) for s in args.restamp.split(",") if s.strip()]
        except ValueError:
            raise SystemExit(f"--restamp takes comma-separated seeds (e.g. 0 or 0,3); got {args.restamp!r}") from None
    if args.interrupted_files:
        others = [flag for flag, on in (("--force", args.force), ("--rerun-stale", args.rerun_stale),
                                        ("--restamp", args.restamp is not None), ("--report-only", args.report_only),
                                        ("--import", bool(args.import_paths))) if on]
        if others:
            raise SystemExit(f"--interrupted-files trains nothing and writes no table: it does not go with "
                             f"{', '.join(others)}")
        return {"files": interrupted_files(args.table, seeds, models, out, cli_overrides(args.set))}
    if args.import_paths:
        others = [flag for flag, on in (("--force", args.force), ("--rerun-stale", args.rerun_stale),
                                        ("--restamp", args.restamp is not None), ("--report-only", args.report_only),
                                        ("--wandb", args.wandb), ("--launcher", args.launcher != "local")) if on]
        if others:
            raise SystemExit(f"--import trains nothing and writes no table: it does not go with {', '.join(others)}; "
                             "import first, then run the table's command")
        return import_runs.import_runs(args.table, [Path(p) for p in args.import_paths], models, out,
                                       cli_overrides(args.set))
    if args.launcher != "slurm":
        given = [flag for flag, value in (("--slurm-partition", args.slurm_partition), ("--cpus-per-run", args.cpus_per_run),
                                          ("--sbatch", args.sbatch), ("--slurm-logs", args.slurm_logs),
                                          ("--slurm-time", args.slurm_time != slurm.DEFAULT_TIME)) if value]
        if given:
            raise SystemExit(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for --launcher slurm; add it, "
                             f"or leave {'it' if len(given) == 1 else 'them'} out")
    slurm_options = slurm.SlurmOptions(partition=args.slurm_partition, time=args.slurm_time,
                                       gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run,
                                       sbatch=args.sbatch, logs=args.slurm_logs, parallelism=args.jobs)
    return reproduce(args.table, seeds, models, out, cli_overrides(args.set), jobs=args.jobs, threads=args.threads,
                     gpus_per_run=args.gpus_per_run, force=args.force, progress_every=args.progress_every,
                     use_wandb=args.wandb, report_only=args.report_only, rerun_stale=args.rerun_stale,
                     restamp=restamp, launcher=args.launcher, slurm_options=slurm_options,
                     restamp_steps=args.restamp_steps)


if __name__ == "__main__":
    main()
