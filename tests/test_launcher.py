"""The table on a cluster: reproduce.py --launcher slurm through submitit (its local executor runs the same job
array here)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from experiments import reproduce, runner, slurm

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_steps=20", "data.init_args.batches_per_epoch=10", "data.init_args.batch_size=64"]


def _no_local_pool(*args, **kwargs):
    raise AssertionError("a run was trained by the runner's own process, not by a job of the array")


def test_slurm_launcher_trains_the_table_as_a_submitit_job_array_and_builds_it_from_those_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(runner, "execute", _no_local_pool)  # the jobs are other processes: they import their own
    out, lines = tmp_path / "out", []
    options = slurm.SlurmOptions(cluster="local", gpus_per_run=0)
    summary = reproduce.reproduce("ring8", [0, 1], ["gan"], out, runner.cli_overrides(TINY), progress_every=1000,
                                  launcher="slurm", slurm_options=options, echo=lines.append)
    assert "2 to train, as one local job array" in lines[0]
    assert any(line.startswith("submitted 2 runs to local as job") for line in lines)
    assert [r["status"] for r in summary["results"]] == ["ok", "ok"], summary["results"]
    jobs = {p.name.split("_")[0] for p in (out / "slurm").glob("*_0_result.pkl")}  # the jobs submitit ran
    assert len(jobs) == 2
    for r in summary["results"]:
        folder = out / "runs" / "gan" / f"seed{r['seed']}-{r['key']}"
        written = json.loads((folder / "result.json").read_text())  # written by the job, on the shared folder
        assert written["job"]["id"] in jobs and written["job"]["launcher"] == "submitit (local)"
        assert json.dumps(written["metrics"]) == json.dumps(r["metrics"]) and written["g_steps"] == 10  # NaN alike
        assert json.loads((folder / slurm.JOB_FILE).read_text())["job_id"] == written["job"]["id"]
        assert written["threads"] == {"OMP_NUM_THREADS": "1", "torch_num_threads": 1}
        assert "--trainer.enable_progress_bar false" in written["command"]
    # the table is built from those runs: its row is their mean
    modes = [r["metrics"]["modes"] for r in summary["results"]]
    assert summary["rows"][0]["seeds"] == 2 and summary["rows"][0]["modes"][0] == sum(modes) / 2
    assert "| GAN (ours) | 2 |" in (out / "ring8.md").read_text()

    # cached runs are not submitted again: no executor is even made
    monkeypatch.setattr(slurm, "make_executor", _no_local_pool)
    again = reproduce.reproduce("ring8", [0, 1], ["gan"], out, runner.cli_overrides(TINY), progress_every=1000,
                                launcher="slurm", slurm_options=options, echo=lambda *a: None)
    assert again["trained"] == 0 and again["rows"][0]["modes"] == summary["rows"][0]["modes"]


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below `pid`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found.append((child, (Path("/proc") / str(child) / "cmdline").read_text().replace("\0", " ")))
            except OSError:
                continue
            todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_a_slurm_run_stopped_by_its_preemption_signal_is_requeued_and_continues_from_its_last_checkpoint(tmp_path, monkeypatch):
    """The signal SLURM sends before the time limit or on preemption reaches the job while it trains: submitit
    requeues it, and the requeued job continues the run from its last checkpoint to the end."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    out, lines, done = tmp_path / "out", [], {}
    overrides = runner.cli_overrides(["trainer.max_steps=600", "data.init_args.batches_per_epoch=10",
                                      "data.init_args.batch_size=64"])
    options = slurm.SlurmOptions(cluster="local", gpus_per_run=0)

    def table() -> None:
        done["summary"] = reproduce.reproduce("ring8", [0], ["gan"], out, overrides, progress_every=1000,
                                              launcher="slurm", slurm_options=options, echo=lines.append)

    thread = threading.Thread(target=table, daemon=True)
    thread.start()
    deadline = time.time() + 300
    while not list(out.glob("runs/gan/seed0-*/runs/*/version_*/checkpoints/last.ckpt")):
        assert thread.is_alive() and time.time() < deadline, f"no checkpoint before the run ended: {lines}"
        time.sleep(0.05)
    (folder,) = out.glob("runs/gan/seed0-*")
    job_id = json.loads((folder / slurm.JOB_FILE).read_text())["job_id"]
    (task,) = [pid for pid, command in _descendants(int(job_id)) if "submitit.core._submit" in command]
    os.kill(task, slurm.preemption_signal())
    thread.join(timeout=400)
    assert not thread.is_alive(), lines
    (result,) = done["summary"]["results"]
    assert result["status"] == "ok" and result["g_steps"] == 300, result
    (attempt,) = result["resumed"]  # the requeued job continued the interrupted attempt
    assert attempt["reached_step"] >= 20 and result["command"].endswith("--ckpt_path last")
    assert "continuing the interrupted attempt" in Path(result["log"]).read_text()
    assert result["job"]["id"] == job_id  # the same job, requeued
    assert "Requeued job" in "".join(p.read_text() for p in (out / "slurm").glob(f"{job_id}_0_log.*"))


def test_bad_slurm_options_are_refused_before_anything_is_created(tmp_path):
    out = tmp_path / "out"

    def refused(match: str, **options) -> None:
        launcher = options.pop("launcher", "slurm")
        threads = options.pop("threads", 1)
        with pytest.raises(SystemExit, match=match):
            reproduce.reproduce("ring8", [0], ["gan"], out, [], threads=threads, launcher=launcher,
                                slurm_options=slurm.SlurmOptions(**options), echo=lambda *a: None)
        assert not out.exists()

    refused(r"--slurm-time '4h': give minutes \(240\)", time="4h")
    refused(r"--slurm-time '1:75:00'", time="1:75:00")
    refused(r"--sbatch 'time=10': reproduce.py sets --time itself; use --slurm-time", sbatch=["time=10"])
    refused(r"--sbatch 'gres=': give an sbatch option as KEY=VALUE", sbatch=["gres="])
    refused(r"--gpus-per-run 2 with --launcher slurm: give 0 \(CPU\) or 1", gpus_per_run=2)
    refused(r"--cpus-per-run 1 is below --threads 2", cpus_per_run=1, threads=2)
    refused(r"--launcher 'pbs': choose one of local, slurm", launcher="pbs")
    with pytest.raises(SystemExit, match=r"--gpus-per-run -1: give 0 or more"):
        reproduce.main(["ring8", "--models", "gan", "--out", str(out), "--gpus-per-run", "-1"])
    with pytest.raises(SystemExit, match=r"--slurm-partition, --sbatch are for --launcher slurm"):
        reproduce.main(["ring8", "--models", "gan", "--out", str(out), "--slurm-partition", "gpu", "--sbatch", "mem=1G"])
    assert not out.exists()
    # the good forms
    assert [slurm.time_minutes(t) for t in ("240", "4:00:00", "1-12", "90:30", "0:0:1")] == [240, 240, 2160, 91, 1]
    assert slurm.sbatch_options(["account=proj", "--mem=32G", "exclusive"]) == {"account": "proj", "mem": "32G",
                                                                                "exclusive": True}


def test_the_slurm_flags_become_the_sbatch_lines_of_the_job_array(tmp_path, monkeypatch):
    import shutil

    import submitit.slurm.slurm as submitit_slurm

    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/srun" if name == "srun" else which(name, *a, **k))
    options = slurm.SlurmOptions(partition="gpu", time="1-12", cpus_per_run=4, parallelism=3, logs=tmp_path / "logs",
                                 sbatch=["account=proj", "mem=32G", "exclusive"])
    options.check(threads=2)
    executor = slurm.make_executor(options, tmp_path / "out", threads=2, name="reproduce-ring8")
    text = submitit_slurm._make_sbatch_string(command="python -m submitit.core._submit", folder=options.folder(tmp_path),
                                              map_count=8, **executor._executor.parameters)
    for line in ("--partition=gpu", "--time=2160", "--gpus-per-node=1", "--cpus-per-task=4", "--nodes=1",
                 "--ntasks-per-node=1", "--array=0-7%3", "--account=proj", "--mem=32G", "--exclusive",
                 "--job-name=reproduce-ring8", f"--output={tmp_path}/logs/%A_%a_0_log.out"):
        assert f"#SBATCH {line}\n" in text, (line, text)
    assert f"export PYTHONPATH={ROOT}" in text  # each task imports this project's experiments package
    cpu = slurm.SlurmOptions(gpus_per_run=0)
    text = submitit_slurm._make_sbatch_string(command="x", folder=tmp_path, map_count=2,
                                              **slurm.make_executor(cpu, tmp_path, 1, "t")._executor.parameters)
    assert "gpus" not in text and "--cpus-per-task=1" in text and "--array=0-1%2" in text and "--time=240" in text


def test_a_run_whose_slurm_job_is_still_queued_is_not_submitted_again(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (run0, run1) = runner.plan("ring8", ["gan"], [0, 1], runner.cli_overrides(TINY))
    run0.folder(out).mkdir(parents=True)
    (run0.folder(out) / slurm.JOB_FILE).write_text(json.dumps({"cluster": "slurm", "job_id": "77_0", "folder": "x"}))
    monkeypatch.setattr(slurm, "job_state", lambda record: "PENDING")
    submitted = []
    monkeypatch.setattr(slurm.SubmititExecution, "run", lambda self, every: submitted.extend(self.jobs) or [
        {"model": run.model, "seed": run.seed, "status": "failed", "error": "not run", "log": "-", "wall_s": 0.0}
        for run, _ in self.jobs])
    lines = []
    options = slurm.SlurmOptions(gpus_per_run=0, cluster="local")  # the earlier job's record says slurm
    summary = reproduce.reproduce("ring8", [0, 1], ["gan"], out, runner.cli_overrides(TINY), launcher="slurm",
                                  slurm_options=options, echo=lines.append)
    assert [run.name for run, _ in submitted] == ["gan/seed1"] and summary["trained"] == 1
    assert "1 still queued or running as SLURM jobs of an earlier invocation, not submitted again (gan/seed0 job 77_0)" in lines[0]
    assert "Not run yet (1): gan/seed0." in (out / "ring8.md").read_text()
    monkeypatch.setattr(slurm, "job_state", lambda record: "COMPLETED")  # ended without a result: submitted again
    submitted.clear()
    reproduce.reproduce("ring8", [0], ["gan"], out, runner.cli_overrides(TINY), launcher="slurm",
                        slurm_options=options, echo=lambda *a: None)
    assert [run.name for run, _ in submitted] == ["gan/seed0"]
