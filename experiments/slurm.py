"""`reproduce.py --launcher slurm`: a table's runs as one SLURM job array, through submitit.

Each task of the array runs `runner.execute` on one run, exactly as a slot of the local pool does: the same
`train.py fit` command in the same run folder under the shared results folder, the same result.json, the same
continuation of an interrupted attempt from its last checkpoint. The runner submits only what the cache lacks,
waits for the array (a progress line every `--progress-every` seconds, a line per finished run) and then writes
the table; stopped while it waits, it leaves the jobs running and `--report-only` writes the table later.

Near its time limit (or when preempted) SLURM sends the job submitit's signal (USR2, 90 s ahead); submitit
requeues the job and the run continues from its last epoch-end checkpoint when the job starts again (`TrainJob`).
A run whose job ended without a requeue stays interrupted, and the next invocation continues it the same way.

submitit is imported only here, and only when a table is submitted (`SlurmOptions.check` says how to install it).
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from experiments import runner
from experiments.runner import ROOT, Run

JOB_FILE = "job.json"  # in a run's folder: the job it was last submitted as (cluster, id, submitit folder)
DEFAULT_TIME = "4:00:00"
# sbatch options the runner sets itself, and the flag that sets each (or why it is fixed)
RESERVED = {
    "partition": "--slurm-partition", "time": "--slurm-time", "cpus-per-task": "--cpus-per-run",
    **{key: "--gpus-per-run (0 or 1; choose the GPU type with --sbatch constraint=<feature>, or pass --gpus-per-run 0 "
            "and --sbatch gres=gpu:<type>:1)" for key in ("gpus", "gpus-per-node", "gpus-per-task")},
    "array": "--jobs (the runs at once)", "output": "--slurm-logs", "error": "--slurm-logs",
    **{key: "nothing: each run is one task on one node" for key in ("nodes", "ntasks", "ntasks-per-node")},
    **{key: "nothing: submitit sets it" for key in ("job-name", "signal", "open-mode", "wckey")},
}
# SLURM job states in which a job may still run the run it was submitted for
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}


def time_minutes(text: str) -> int:
    """A SLURM time limit ("240", "4:00:00", "1-12:00", "90:30", ...) in whole minutes (seconds rounded up).
    SystemExit naming the value and the accepted forms when it is not one."""
    usage = (f"--slurm-time {text!r}: give minutes (240), minutes:seconds, hours:minutes:seconds (4:00:00) or "
             "days-hours[:minutes[:seconds]] (1-12), as sbatch --time takes them, more than 0")
    match = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    if not match:
        raise SystemExit(usage)
    parts = [int(p) for p in match.group(2).split(":")]
    if match.group(1) is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
        limits_ok = hours < 24 and minutes < 60 and seconds < 60
        total = ((int(match.group(1)) * 24 + hours) * 60 + minutes) * 60 + seconds
    elif len(parts) == 3:
        hours, minutes, seconds = parts
        limits_ok, total = minutes < 60 and seconds < 60, (hours * 60 + minutes) * 60 + seconds
    else:  # minutes or minutes:seconds
        minutes, seconds = (parts + [0])[:2]
        limits_ok, total = seconds < 60, minutes * 60 + seconds
    if not limits_ok or total <= 0:
        raise SystemExit(usage)
    return math.ceil(total / 60)


def sbatch_options(pairs: list[str]) -> dict[str, object]:
    """["account=proj", "mem=32G", "exclusive"] -> {"account": "proj", "mem": "32G", "exclusive": True}: the extra
    #SBATCH lines. SystemExit for a malformed one, or one the runner sets itself (naming the flag to use)."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, has_value, value = pair.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key) or (has_value and not value.strip()):
            raise SystemExit(f"--sbatch {pair!r}: give an sbatch option as KEY=VALUE (e.g. --sbatch account=myproject, "
                             "--sbatch mem=32G) or a bare KEY for a switch (--sbatch exclusive)")
        if key in RESERVED:
            raise SystemExit(f"--sbatch {pair!r}: reproduce.py sets --{key} itself; use {RESERVED[key]}")
        options[key] = value.strip() if has_value else True
    return options


@dataclass
class SlurmOptions:
    """How the runs are submitted. `cluster`: submitit's executor, "slurm", or "local" to run the same array as
    processes of this machine (what the tests do)."""
    partition: Optional[str] = None  # the cluster's default partition when None
    time: str = DEFAULT_TIME  # each run's time limit
    gpus_per_run: int = 1
    cpus_per_run: Optional[int] = None  # default: the run's --threads
    sbatch: list[str] = field(default_factory=list)  # extra sbatch options, KEY=VALUE
    logs: Optional[Path] = None  # submitit's folder (job scripts, pickles, logs); default <out>/slurm
    parallelism: Optional[int] = None  # at most this many runs at once (sbatch --array ...%N); None: all
    cluster: str = "slurm"

    def check(self, threads: int) -> None:
        """SystemExit naming the first bad value and what to do (before anything is created or submitted)."""
        time_minutes(self.time)
        sbatch_options(self.sbatch)
        if self.gpus_per_run not in (0, 1):
            raise SystemExit(f"--gpus-per-run {self.gpus_per_run} with --launcher slurm: give 0 (CPU) or 1; a run on "
                             "several GPUs is a DDP job of its own: submit it with experiments/cluster/train.sbatch")
        if self.cpus_per_run is not None and self.cpus_per_run < threads:
            raise SystemExit(f"--cpus-per-run {self.cpus_per_run} is below --threads {threads}: each run uses --threads "
                             f"CPU threads; give --cpus-per-run {threads} or more, or fewer --threads")
        if self.partition is not None and not re.fullmatch(r"[\w.,-]+", self.partition):
            raise SystemExit(f"--slurm-partition {self.partition!r}: give a partition name (or several, comma-separated)")
        if self.logs is not None and Path(self.logs).exists() and not Path(self.logs).is_dir():
            raise SystemExit(f"--slurm-logs {self.logs}: is a file; give a folder (default <out>/slurm)")
        _submitit()
        if self.cluster == "slurm" and shutil.which("srun") is None:
            raise SystemExit("--launcher slurm: no srun on this machine's PATH; run the command where SLURM jobs are "
                             "submitted (a login node), or use --launcher local")

    def folder(self, out: Path) -> Path:
        """submitit's folder: each job's script, pickles and logs, named by its job id."""
        return Path(self.logs or out / "slurm").resolve()


def _submitit():
    try:
        import submitit
    except ImportError:
        raise SystemExit("--launcher slurm needs submitit: pip install submitit (or pip install -e . in the "
                         "project root, which installs it)") from None
    return submitit


def preemption_signal() -> int:
    """The signal submitit has SLURM send before the time limit or on preemption (USR2 unless
    SUBMITIT_PREEMPT_SIGNAL names another)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class TrainJob:
    """What each task of the array runs: `runner.execute` on its run, recording the job in the result. On the
    preemption signal submitit calls `checkpoint`, which resubmits the same call: the job is requeued, and when it
    starts again `execute` finds the interrupted attempt and continues it from its last checkpoint. The training
    process ignores that signal (SLURM sends it to every process of the job), so it is stopped only by the job's
    end and never recorded as failed."""

    def __call__(self, run: Run, out: Path, env: dict[str, str], folder: Path) -> dict:
        job = _submitit().JobEnvironment()
        extra = {"job": {"launcher": f"submitit ({job.cluster})", "id": job.job_id, "host": job.hostname}}
        return runner.execute(run, out, env, folder=folder, extra=extra, ignore_signals=(preemption_signal(),))

    def checkpoint(self, *args, **kwargs):
        return _submitit().helpers.DelayedSubmission(self, *args, **kwargs)


def make_executor(options: SlurmOptions, out: Path, threads: int, name: str):
    """submitit's executor for the array: one task on one node per run, its CPUs and GPU, the time limit, the
    partition and extra sbatch options; every task imports this project (PYTHONPATH) like the local pool."""
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=options.folder(out), cluster=options.cluster)
    setup = [f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]
    parameters = dict(name=name, timeout_min=time_minutes(options.time), nodes=1, tasks_per_node=1,
                      cpus_per_task=options.cpus_per_run or threads,
                      **({"gpus_per_node": options.gpus_per_run} if options.gpus_per_run else {}))
    if options.cluster == "slurm":
        parameters.update(slurm_setup=setup, slurm_additional_parameters=sbatch_options(options.sbatch),
                          **({"slurm_partition": options.partition} if options.partition else {}),
                          **({"slurm_array_parallelism": options.parallelism} if options.parallelism else {}))
    else:
        parameters.update(**{f"{options.cluster}_setup": setup})
    executor.update_parameters(**parameters)
    return executor


def job_state(record: dict) -> str:
    """The SLURM state of the job a run was submitted as (JOB_FILE's record), as sacct reports it."""
    submitit = _submitit()
    return submitit.SlurmJob(folder=record["folder"], job_id=record["job_id"]).state


def queued_runs(runs: list[Run], out: Path) -> dict[str, str]:
    """{run name: job id} of the runs whose last SLURM job may still run them (ACTIVE_STATES): a second
    invocation submits them again only once that job has ended."""
    queued = {}
    for run in runs:
        path = run.folder(out) / JOB_FILE
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("cluster") == "slurm" and job_state(record).split()[0] in ACTIVE_STATES:
            queued[run.name] = record["job_id"]
    return queued


class SubmititExecution(runner.Execution):
    """Runs the jobs (a run and its folder) as one submitit job array and waits for it: a line per finished run, a
    progress line every `progress_every` seconds (each run counts as running once its attempt has started)."""

    def __init__(self, jobs: list[tuple[Run, Path]], out: Path, options: SlurmOptions, threads: int,
                 known: dict[str, list[float]], echo=print):
        slots = max(1, min(len(jobs), options.parallelism or len(jobs)))
        super().__init__(jobs, out, [{}] * slots, known, echo)
        self.options, self.threads = options, threads
        self.poll_s = 10.0 if options.cluster == "slurm" else 0.5

    def submit(self) -> list:
        """Submits the array; records each run's job in its folder (JOB_FILE)."""
        table = self.jobs[0][0].table
        executor = make_executor(self.options, self.out, self.threads, f"reproduce-{table}")
        env = {"OMP_NUM_THREADS": str(self.threads), **({"CUDA_VISIBLE_DEVICES": ""} if not self.options.gpus_per_run else {})}
        runs, folders = [run for run, _ in self.jobs], [folder for _, folder in self.jobs]
        submitted = executor.map_array(TrainJob(), runs, [self.out] * len(runs), [env] * len(runs), folders)
        for folder, job in zip(folders, submitted):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / JOB_FILE).write_text(json.dumps({"cluster": self.options.cluster, "job_id": job.job_id,
                                                       "folder": str(job.paths.folder), "submitted": time.time()}))
        first = submitted[0].job_id.split("_")[0]
        self.echo(f"submitted {len(submitted)} runs to {self.options.cluster} as job {first}"
                  + (" (an array)" if len(submitted) > 1 and "_" in submitted[0].job_id else "")
                  + f"; job logs in {submitted[0].paths.folder}")
        return submitted

    def _started(self, run: Run, folder: Path, since: float) -> None:
        """Counts the run as running once its job wrote its attempt (after `since`)."""
        if run.name in self.started:
            return
        try:
            start = json.loads((folder / runner.ATTEMPT_FILE).read_text())["start"]
        except (OSError, ValueError, KeyError):
            return
        if start >= since:
            with self.lock:
                self.running[run.name] = (run, folder, start)
                self.started.add(run.name)

    def _result(self, run: Run, folder: Path, job) -> dict:
        """The job's result, or for a job that ended without one (cancelled, killed, timed out too often, failed
        outside the run) a result that says so: interrupted when the run can continue from its checkpoint."""
        try:
            return job.result()
        except Exception as error:  # noqa: BLE001 - any way a job can end without returning
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = runner.failure_reason("\n".join(lines)) or type(error).__name__
            started = self.running.get(run.name, (None, None, time.time()))[2]
            status = "interrupted" if runner.interrupted(folder) else "failed"
            return {"table": run.table, "model": run.model, "seed": run.seed, "key": run.key, "status": status,
                    "error": f"job {job.job_id} ended without a result ({reason})"
                             + ("; the next invocation continues it from its last checkpoint" if status == "interrupted" else ""),
                    "log": str(job.paths.stderr), "wall_s": round(time.time() - started, 1)}

    def run(self, progress_every: float) -> list[dict]:
        if not self.jobs:
            return []
        since = time.time()
        submitted = self.submit()
        results: list[Optional[dict]] = [None] * len(self.jobs)
        last_progress = time.time()
        try:
            while any(result is None for result in results):
                for i, ((run, folder), job) in enumerate(zip(self.jobs, submitted)):
                    if results[i] is not None:
                        continue
                    self._started(run, folder, since)
                    if job.done():
                        results[i] = self._result(run, folder, job)
                        with self.lock:
                            started = self.running.pop(run.name, (None, None, since))[2]
                            self.started.add(run.name)
                            self.done.append((run.model, time.time() - started))
                        self.announce(run, folder, results[i])
                if time.time() - last_progress >= progress_every:
                    self.print_progress()
                    last_progress = time.time()
                if any(result is None for result in results):
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            left = sum(result is None for result in results)
            raise SystemExit(f"stopped waiting; the {left} runs not finished go on as {self.options.cluster} job "
                             f"{submitted[0].job_id.split('_')[0]}. The same command again submits only the runs "
                             "neither finished nor queued; with --report-only it writes the table from the runs "
                             "finished so far") from None
        return results  # type: ignore[return-value]
