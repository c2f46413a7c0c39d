"""The record of one training run, kept in its run folder: how far it is, how it ended and what it measured.

train.py attaches `RunRecord` to every fit; experiments/runner.py reads the file to follow each run (its step,
while it trains) and to take its figures (the evaluation of its final weights) when it has ended. A script that
builds its own Trainer can attach it the same way and read the same file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L

RECORD_FILE = "run.json"  # in the run folder (trainer.log_dir: runs/<name>/version_N)


def read_record(folder: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The record in `folder`, or None where there is none (yet) or it cannot be read."""
    try:
        return json.loads((Path(folder) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def finished_evaluation(record: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The record's evaluation when the run trained to its end and its final weights were evaluated, else None."""
    if not record or record.get("status") != "ended":
        return None
    evaluation = record.get("evaluation")
    if not evaluation or evaluation.get("g_step") != record.get("g_steps"):
        return None
    return evaluation


def wandb_run(trainer: L.Trainer) -> Optional[dict[str, Any]]:
    """The W&B run of the trainer's W&B logger (id, name, project, mode, URL when online, local folder), or None
    without one (or with W&B disabled). Asked on global rank 0, where the run exists."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and getattr(logger, "mode", None) != "disabled" \
                and getattr(logger, "_experiment", None) is not None:
            run = logger.experiment
            mode = getattr(logger, "mode", None) or ("offline" if getattr(run, "offline", False) else "online")
            return {"id": run.id, "name": run.name, "project": run.project, "mode": mode,
                    "url": run.url if mode == "online" else None, "dir": str(Path(run.dir).parent)}
    return None


class RunRecord(L.Callback):
    """Keeps ``run.json`` in the run folder (trainer.log_dir) up to date; only global rank 0 writes it.

    Fields: ``status`` ("running", then "ended" when training reached its limit, "interrupted" or "failed" with
    ``error``); ``global_step``, ``max_steps``, ``g_steps``, ``d_steps``; ``evaluation``: ``{"g_step", "metrics"}``,
    the ``val/*`` figures of the newest validation (the one train.py runs on the final weights included);
    ``world_size`` and ``global_batch`` (processes x the datamodule's batch_size); ``history``: every evaluation's ``{"g_step", metrics...}`` in order (the run's curve; a resumed fit keeps the
    entries up to its checkpoint's step); ``wandb``: the run's W&B run (`wandb_run`), where W&B logs;
    ``plots``: the newest file of each plotting callback; ``protocols``: how each evaluation callback measured
    (e.g. the features and reference split of a FID); ``updated``: Unix time of the write.

    While training it is rewritten at most every `every_s` seconds (the CSV logger buffers its rows, so a reader
    of metrics.csv sees a run thousands of steps late). Each write replaces the file atomically (write, then
    rename), so a reader never sees half of it. A resumed fit continues the run folder and so the record.
    """

    def __init__(self, every_s: float = 2.0):
        self.every_s = every_s
        self.folder: Optional[Path] = None
        self.record: dict[str, Any] = {}
        self._last = float("-inf")

    # ------------------------------------------------------------------ writing
    def _steps(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {"global_step": trainer.global_step, "max_steps": trainer.max_steps,
                "g_steps": getattr(pl_module, "g_steps", None), "d_steps": getattr(pl_module, "d_steps", None)}

    def _write(self, trainer: L.Trainer, **fields: Any) -> None:
        if self.folder is None or not trainer.is_global_zero:
            return
        self.record.update(fields, updated=time.time())
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / RECORD_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=1))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks, rank 0 writes
        self.folder = Path(log_dir) if log_dir else None
        earlier = read_record(self.folder) if self.folder is not None else None
        g_steps = getattr(pl_module, "g_steps", 0)
        history = [e for e in (earlier or {}).get("history", []) if e.get("g_step", 0) <= g_steps] if g_steps else []
        self.record = {"status": "running", "evaluation": None, "history": history, "plots": [], "protocols": {}}
        batch = getattr(trainer.datamodule, "batch_size", None) if trainer.datamodule is not None else None
        self.record.update(world_size=trainer.world_size,
                           global_batch=trainer.world_size * batch if isinstance(batch, int) else None)
        wandb = wandb_run(trainer)
        if wandb is not None:
            self.record["wandb"] = wandb
        self._write(trainer, **self._steps(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._write(trainer, **self._steps(trainer, pl_module))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        status = "interrupted" if trainer.interrupted else "ended"
        self._write(trainer, status=status, **self._steps(trainer, pl_module))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a fit resumed from its final checkpoint trains nothing, and Lightning then skips on_train_end
        if self.record.get("status") == "running" and not trainer.interrupted:
            self._write(trainer, status="ended", **self._steps(trainer, pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        plots = [str(c.last_path) for c in trainer.callbacks if getattr(c, "last_path", None)]
        protocols = {type(c).__name__: c.protocol for c in trainer.callbacks if getattr(c, "protocol", None)}
        g_step = getattr(pl_module, "g_steps", None)
        history = [e for e in self.record.get("history", []) if e.get("g_step") != g_step]  # one entry per step
        history.append({"g_step": g_step, **{k.removeprefix("val/"): v for k, v in metrics.items()}})
        self._write(trainer, evaluation={"g_step": g_step, "metrics": metrics}, history=history,
                    plots=plots, protocols=protocols, **self._steps(trainer, pl_module))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # stopped from outside (Ctrl-C, a job's or session's end): it can continue from its last checkpoint
        status = "interrupted" if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else "failed"
        self._write(trainer, status=status, error=f"{type(exception).__name__}: {exception}")
