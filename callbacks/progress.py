"""The progress display of `train.py`: a bar in a terminal, one line per evaluation elsewhere.

Lightning's bar shows `v_num`, which with several loggers is the tail of their joined versions (the W&B run id's
last characters), and no losses; in a file (a SLURM job's log) it writes every refresh and grows the log by
megabytes. `ProgressBar` shows the run folder's version (`version_N` of the first logger) and the generator step
and D / G losses (as logged every `log_every_n_steps` batches); where standard error is not a terminal it draws
nothing and prints one line at each evaluation instead: the epoch, the generator step, the losses and the
evaluation's figures.
"""

import sys
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info

_SHOWN = {"train/g_step": "g_step", "train/d_loss": "d_loss", "train/g_loss": "g_loss"}


class ProgressBar(TQDMProgressBar):
    """Args as Lightning's `TQDMProgressBar`, plus `lines`: True prints a line per evaluation and draws no bar,
    False draws the bar; None (default) picks by whether standard error is a terminal."""

    def __init__(self, *args: Any, lines: Optional[bool] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lines = (not sys.stderr.isatty()) if lines is None else lines
        if self.lines:
            self.disable()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = {k: v for k, v in super().get_metrics(trainer, pl_module).items() if k not in (*_SHOWN, "v_num")}
        version = trainer.loggers[0].version if trainer.loggers else None
        if version not in (None, ""):
            metrics["version"] = version
        for key, short in _SHOWN.items():
            value = trainer.callback_metrics.get(key)
            if value is not None:
                metrics[short] = int(value) if short == "g_step" else f"{float(value):.3g}"
        return metrics

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.lines and not trainer.sanity_checking:
            rank_zero_info(evaluation_line(trainer, pl_module))


def evaluation_line(trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """`epoch E, generator step G: d_loss .., g_loss .. | val/...` from the trainer's newest metrics."""
    metrics = trainer.callback_metrics
    losses = [f"{short} {float(metrics[key]):.4g}" for key, short in _SHOWN.items()
              if key in metrics and short != "g_step"]
    figures = [f"{k.removeprefix('val/')} {float(v):.4g}" for k, v in sorted(metrics.items()) if k.startswith("val/")]
    head = f"epoch {trainer.current_epoch}, generator step {getattr(pl_module, 'g_steps', trainer.global_step)}"
    return head + (": " + ", ".join(losses) if losses else "") + (" | " + ", ".join(figures) if figures else "")
