"""The table on a cluster: reproduce.py --launcher slurm through submitit (its local executor runs the same job
array here), the import of runs the runner did not launch, and the example sbatch scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from experiments import configs, import_runs, reproduce, runner, slurm

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


def _train_py_run(cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """A tiny ring8 GAN run of seed 3 made with train.py as a user (or a W&B sweep) would, W&B offline."""
    command = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "experiments/ring8/protocol.yaml"),
               "--config", str(ROOT / "experiments/ring8/gan.yaml"), "--seed_everything=3",
               "--trainer.enable_progress_bar=false", *[f"--{pair}" for pair in TINY], *extra]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=500)


def test_a_train_py_run_is_imported_as_its_table_run_and_the_table_shows_it(tmp_path):
    made = _train_py_run(tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    (version,) = (tmp_path / "runs" / "ring8-gan").glob("version_*")
    (wandb_run,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    out = tmp_path / "results"
    table = ["ring8", "--models", "gan,mgan", "--out", str(out), *[a for pair in TINY for a in ("--set", pair)]]

    # none of the table's models without the overrides it was trained with: refused, naming the file and what to do
    with pytest.raises(SystemExit, match=rf"--import {version}/config.yaml: its resolved config is none of ring8's "
                                         r"models \(gan, mgan\); nearest is gan, which differs in 3 values: "
                                         r"data.init_args.batch_size: 64 here, 512 in the table.*give the overrides"):
        reproduce.main(["ring8", "--models", "gan,mgan", "--out", str(out), "--import", str(version)])
    assert not out.exists()
    # a run that has not finished is refused too
    record = json.loads((version / "run.json").read_text())
    (version / "run.json").write_text(json.dumps({**record, "status": "running"}))
    with pytest.raises(SystemExit, match=r"run.json: its status is 'running', not a run that trained to its end"):
        reproduce.main([*table, "--import", str(wandb_run)])
    (version / "run.json").write_text(json.dumps(record))
    # a W&B run folder whose train.py run folder is not beside it, and flags that do not go with --import
    lone = tmp_path / "elsewhere" / "wandb" / wandb_run.name
    lone.mkdir(parents=True)
    with pytest.raises(SystemExit, match=rf"no train.py run folder under {tmp_path / 'elsewhere'} records W&B run "
                                         rf"{wandb_run.name.rsplit('-', 1)[-1]}.*pass the run's folder"):
        reproduce.main([*table, "--import", str(lone)])
    with pytest.raises(SystemExit, match=r"--import trains nothing and writes no table: it does not go with --report-only"):
        reproduce.main([*table, "--import", str(version), "--report-only"])
    assert not out.exists()

    # through its W&B run folder (a sweep's run): written where the runner caches gan seed 3
    imported = reproduce.main([*table, "--import", str(wandb_run)])
    (result,) = imported["imported"]
    (plan,) = runner.plan("ring8", ["gan"], [3], runner.cli_overrides(TINY))
    cached = json.loads((plan.folder(out) / "result.json").read_text())
    assert json.dumps(cached) == json.dumps(result)  # NaN figures compare alike as text
    assert cached["model"] == "gan" and cached["seed"] == 3 and cached["key"] == plan.key
    assert cached["imported"].startswith("a train.py run the runner did not launch") and str(version) in cached["imported"]
    figures = record["evaluation"]["metrics"]
    assert json.dumps(cached["metrics"]) == json.dumps({k.removeprefix("val/"): v for k, v in figures.items()})
    assert cached["g_steps"] == 10
    assert (plan.folder(out) / "samples.png").exists()
    # the same run again is left as it is
    assert reproduce.main([*table, "--import", str(version)])["skipped"] == ["gan/seed3"]

    # the runner takes it as finished: --report-only shows it as imported, and a plain run trains nothing for it
    lines = []
    shown = reproduce.reproduce("ring8", [3], ["gan"], out, runner.cli_overrides(TINY), report_only=True,
                                echo=lines.append)
    assert json.dumps(shown["results"]) == json.dumps([cached]) and "1 cached" in lines[0]
    text = (out / "ring8.md").read_text()
    assert "| GAN (ours) | 1 |" in text and "(imported from train.py runs: seeds 3; see their result.json)" in text


def test_an_image_run_saved_with_its_image_shape_filled_in_matches_its_table_config(tmp_path):
    """train.py fills the DCGAN networks' image_size and channels from the data before it saves config.yaml; the
    cache key is taken before, so the import leaves them unset where the table's config does."""
    (plan,) = runner.plan("stacked_mnist_cpu", ["gan"], [4], [])
    saved = configs.resolve(plan.configs, plan.train_args())
    assert saved["model"]["init_args"]["generator"]["init_args"]["image_size"] is None
    for role, channels in (("generator", 3), ("discriminator", 3)):
        saved["model"]["init_args"][role]["init_args"].update(image_size=28, channels=channels)
    saved["seed_everything"] = 4
    folder = tmp_path / "runs" / "stacked-gan" / "version_0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    assert configs.run_key(configs.resolve([folder / "config.yaml"])) != plan.key  # as saved, the key differs
    (folder / "run.json").write_text(json.dumps({"status": "ended", "g_steps": 5, "plots": [], "history": [],
                                                 "evaluation": {"g_step": 5, "metrics": {"val/modes": 100.0}}}))
    run, result, _ = import_runs.imported_result(folder, "stacked_mnist_cpu", ["gan", "wgan_gp"], [])
    assert run.name == "gan/seed4" and run.key == plan.key and result["metrics"] == {"modes": 100.0}


def test_the_example_sbatch_scripts_turn_the_progress_bar_off_and_show_one_gpu_per_run():
    for script in ("train.sbatch", "torchrun.sh"):
        text = (ROOT / "experiments" / "cluster" / script).read_text()
        assert "--trainer.enable_progress_bar false" in text, script
        assert subprocess.run(["bash", "-n", str(ROOT / "experiments" / "cluster" / script)]).returncode == 0
    text = (ROOT / "experiments" / "cluster" / "train.sbatch").read_text()
    assert "sbatch --nodes 1 --ntasks-per-node 1 --gpus-per-node 1 experiments/cluster/train.sbatch" in text
