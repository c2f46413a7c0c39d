"""`reproduce.py <table> --import RUN...`: finished runs that the runner did not launch, as runs of a table.

A run is a train.py run folder (`runs/<name>/version_N`: the config.yaml LightningCLI saved and the run.json that
callbacks.RunRecord keeps), or the W&B run folder of one (`runs/wandb/offline-run-<time>-<id>` or `run-...`, e.g. a
sweep's run: the train.py run folder beside it that records the same W&B run id is taken). Its resolved config is
matched to the table's models by the runner's cache key (experiments/configs.py), with the table's `--set`
overrides; the seed is the config's. The result is written where the runner caches that run
(`<out>/runs/<model>/seed<s>-<key>/result.json`), marked `imported`, with the final sample plot beside it; the
runner then reads it back like any finished run (`--report-only` shows it). Everything is checked before anything
is written: a run that did not finish, or whose config is none of the table's models, is refused with the file
and what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from callbacks.run_record import RECORD_FILE, read_record
from experiments import configs, runner
from experiments.cache import keep_sample_plot, shown_path
from experiments.runner import Run

CONFIG_FILE = "config.yaml"  # LightningCLI's copy of the resolved config, in the run folder
WANDB_ID_FILE = "wandb_run_id"  # train.py's note of the W&B run, in the run folder (see train.RecordWandbRun)
IMAGE_ARGUMENTS = ("image_size", "channels")  # filled from the data by train.py before its config is saved
NETWORKS = ("generator", "discriminator", "reconstructor")


def run_folder(path: Path) -> Path:
    """The train.py run folder that `path` names: itself, or for a W&B run folder the run folder under the same
    save_dir that records its run id. SystemExit naming the path and what to pass otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise SystemExit(f"--import {path}: no such folder; pass a train.py run folder (runs/<name>/version_N) or "
                         "a W&B run folder (runs/wandb/offline-run-...)")
    if (path / CONFIG_FILE).is_file() or (path / RECORD_FILE).is_file():
        return path
    if path.parent.name == "wandb" and path.name.startswith(("offline-run-", "run-")):
        run_id = path.name.rsplit("-", 1)[-1]
        save_dir = path.parent.parent
        found = [f.parent for f in sorted(save_dir.glob(f"*/version_*/{WANDB_ID_FILE}"))
                 if f.read_text().strip() == run_id]
        if len(found) == 1:
            return found[0]
        raise SystemExit(f"--import {path}: " + (f"{len(found)} run folders under {save_dir} record W&B run {run_id} "
                                                 f"({', '.join(map(str, found))}); pass the one to import"
                                                 if found else
                                                 f"no train.py run folder under {save_dir} records W&B run {run_id} "
                                                 f"(its {WANDB_ID_FILE} file); pass the run's folder "
                                                 "(runs/<name>/version_N, with config.yaml and run.json) instead"))
    raise SystemExit(f"--import {path}: neither a train.py run folder ({CONFIG_FILE} and {RECORD_FILE}) nor a W&B "
                     "run folder (wandb/offline-run-... or wandb/run-...); pass runs/<name>/version_N")


def _without_filled_image_shape(resolved: dict, table_config: dict) -> dict:
    """`resolved` with the networks' image_size and channels left unset where the table's config leaves them unset:
    train.py fills them from the data before it saves config.yaml (and refuses values that contradict the data), so
    a saved config holds them where `--print_config`, and so the cache key, does not."""
    resolved = json.loads(json.dumps(resolved))
    ours = ((resolved.get("model") or {}).get("init_args")) or {}
    theirs = ((table_config.get("model") or {}).get("init_args")) or {}
    for role in NETWORKS:
        net, table_net = (ours.get(role) or {}).get("init_args"), (theirs.get(role) or {}).get("init_args")
        if isinstance(net, dict) and isinstance(table_net, dict):
            for key in IMAGE_ARGUMENTS:
                if key in net and key in table_net and table_net[key] is None:
                    net[key] = None
    return resolved


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in _leaves(value, f"{prefix}.{key}" if prefix else str(key)).items()}
    if isinstance(node, list):
        return {k: v for i, value in enumerate(node) for k, v in _leaves(value, f"{prefix}[{i}]").items()}
    return {prefix: node}


def differences(ours: dict, theirs: dict) -> list[str]:
    """'key: value here, value in the table' for each config value that differs (seed aside)."""
    a = _leaves({k: v for k, v in ours.items() if k != "seed_everything"})
    b = _leaves({k: v for k, v in theirs.items() if k != "seed_everything"})

    def shown(leaves: dict[str, Any], key: str) -> str:
        return json.dumps(leaves[key]) if key in leaves else "absent"

    return [f"{key}: {shown(a, key)} here, {shown(b, key)} in the table"
            for key in sorted(set(a) | set(b)) if key not in a or key not in b or a[key] != b[key]]


def match(folder: Path, table: str, models: list[str], overrides: list[str]) -> Run:
    """The table's run (model and seed) whose cache key is the run folder's resolved config's; SystemExit naming
    the config file, the nearest model and its first differences otherwise."""
    config_file = folder / CONFIG_FILE
    if not config_file.is_file():
        raise SystemExit(f"--import {folder}: no {CONFIG_FILE} (the resolved config train.py saves in its run folder); "
                         "import a run made with train.py fit and its CSV or TensorBoard logger")
    resolved = configs.resolve([config_file])
    seed = resolved.get("seed_everything")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SystemExit(f"--import {config_file}: seed_everything is {seed!r}, not a seed; a table's run has one")
    resolved["ckpt_path"] = None  # a resumed fit trains what an uninterrupted one does
    candidates = runner.plan(table, models, [seed], overrides)
    nearest: Optional[tuple[int, Run, list[str]]] = None
    for run in candidates:
        table_config = configs.resolve(run.configs, run.train_args())
        if configs.run_key(_without_filled_image_shape(resolved, table_config)) == run.key:
            return run
        diff = differences(_without_filled_image_shape(resolved, table_config), table_config)
        if nearest is None or len(diff) < nearest[0]:
            nearest = (len(diff), run, diff)
    setting = f" with {' '.join(overrides)}" if overrides else ""
    near = (f"; nearest is {nearest[1].model}, which differs in {len(nearest[2])} values: {'; '.join(nearest[2][:3])}"
            + ("; ..." if len(nearest[2]) > 3 else "")) if nearest else ""
    raise SystemExit(f"--import {config_file}: its resolved config is none of {table}'s models ({', '.join(models)})"
                     f"{setting}{near}. Import runs trained with the table's config as the runner trains it (train.py "
                     f"fit --config experiments/{table}/protocol.yaml --config experiments/{table}/<model>.yaml "
                     "--trainer.enable_progress_bar false), and give the overrides they were trained with as --set")


def _plots(folder: Path, plots: list[str]) -> list[str]:
    """The run's plots as absolute paths: train.py records them relative to the folder it ran in, which is not
    known here, so a relative one is looked for under the run folder by its path below it."""
    found = []
    for plot in plots:
        path = Path(plot)
        if not path.is_absolute():
            tail = path.parts[path.parts.index(folder.name) + 1:] if folder.name in path.parts else path.parts[-2:]
            path = folder.joinpath(*tail)
        found.append(str(path.resolve()))
    return found


def imported_result(path: Path, table: str, models: list[str], overrides: list[str]) -> tuple[Run, dict, Path]:
    """The run `path` is in the table, its result (as the runner writes one) and its run folder; SystemExit (nothing
    written) for a run that did not finish or is none of the table's models."""
    folder = run_folder(path)
    record = read_record(folder)
    result = runner.finished_result(record) if record else None
    if result is None:
        state = f"its status is {record.get('status')!r}" if record else f"it has no readable {RECORD_FILE}"
        raise SystemExit(f"--import {folder / RECORD_FILE}: {state}, not a run that trained to its end and evaluated its "
                         "final weights; import it once it has finished (train.py fit --ckpt_path last continues it)")
    run = match(folder, table, models, overrides)
    source = folder.resolve()
    wandb_run = (folder / WANDB_ID_FILE).read_text().strip() if (folder / WANDB_ID_FILE).is_file() else None
    result = {"table": table, "model": run.model, "seed": run.seed, "key": run.key, "returncode": None, "wall_s": None,
              "log": None, "command": None, "commit": None, "code_hash": None, **result, "plots": _plots(folder, result["plots"]),
              "imported": f"a train.py run the runner did not launch, from {source}"
                          + (f" (W&B run {wandb_run})" if wandb_run else "")
                          + "; matched to this table by its resolved config; its code, commit, threads and wall time "
                            "were not recorded", "source": str(source)}
    return run, result, source


def import_runs(table: str, paths: list[Path], models: list[str], out: Path, overrides: list[str],
                echo=print) -> dict:
    """Writes each run's result.json where the runner caches it (see the module's docstring). SystemExit, before
    anything is written, for a run that cannot be imported, two that are the same run of the table, or a run whose
    place already holds a finished run from elsewhere. Returns {"imported": [result...], "skipped": [name...]}."""
    out = Path(out).resolve()
    planned: dict[str, tuple[Run, dict, Path]] = {}
    skipped: list[str] = []
    for path in paths:
        run, result, source = imported_result(path, table, models, overrides)
        if run.name in planned:
            raise SystemExit(f"--import {path}: it is {run.name} of {table}, as {planned[run.name][2]} is; import one")
        target = run.folder(out) / "result.json"
        if target.is_file():
            existing = json.loads(target.read_text())
            if existing.get("status") == "ok" and existing.get("source") == result["source"]:
                skipped.append(run.name)
                continue
            if existing.get("status") == "ok":
                raise SystemExit(f"--import {path}: {shown_path(target)} already holds a finished {run.name}; remove "
                                 "that run folder to replace it with this run")
        planned[run.name] = (run, result, source)
    for run, result, _ in planned.values():
        folder = run.folder(out)
        folder.mkdir(parents=True, exist_ok=True)
        keep_sample_plot(result, folder)
        (folder / runner.ATTEMPT_FILE).unlink(missing_ok=True)  # an interrupted attempt there is superseded
        (folder / "result.json").write_text(json.dumps(result, indent=1))
        echo(f"imported {result['source']} as {run.name} of {table}: {shown_path(folder / 'result.json')}")
    for name in skipped:
        echo(f"{name}: already imported from the same run folder; left as it is")
    if planned:
        echo(f"python experiments/reproduce.py {table} --report-only (with the seeds, models and --set of the table) "
             "writes the table with them")
    return {"imported": [result for _, result, _ in planned.values()], "skipped": skipped}
