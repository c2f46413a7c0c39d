"""A progress file for runners that watch training from outside the process (experiments/reproduce.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L


class ProgressFile(L.Callback):
    """Writes ``{"global_step", "max_steps", "time"}`` to `path` at most every `every_s` seconds and at the end.

    The CSV logger buffers its rows (it flushes every 100 logging calls), so a runner reading metrics.csv sees a
    run thousands of steps late. This file is replaced atomically (write, then rename), so a reader never sees
    half of it. Only global rank 0 writes. train.py attaches it when the environment variable
    ``GAN_PROGRESS_FILE`` names a file.
    """

    def __init__(self, path: str | os.PathLike, every_s: float = 2.0):
        self.path, self.every_s = Path(path), every_s
        self._last = float("-inf")

    def _write(self, trainer) -> None:
        record = {"global_step": trainer.global_step, "max_steps": trainer.max_steps, "time": time.time()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if trainer.is_global_zero and now - self._last >= self.every_s:
            self._last = now
            self._write(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._write(trainer)

