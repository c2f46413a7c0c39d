"""What every evaluation callback shares: when it runs, how many samples each rank draws, where
its files go, and how its values are logged."""

from __future__ import annotations

import os
from typing import Iterator, Optional

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor


def local_sample_count(total: int, trainer: L.Trainer) -> int:
    """This rank's share of `total` evaluation samples: the shares over all ranks sum to `total`."""
    world, rank = trainer.world_size, trainer.global_rank
    return total // world + (1 if rank < total % world else 0)


def mixture_of(trainer: L.Trainer, who: str, attributes: tuple[str, ...] = ("centers", "std")) -> list:
    """The datamodule's `attributes` (a Gaussian mixture's centres, std, ...), or an error naming `who` needs them."""
    dm = trainer.datamodule
    if dm is None or not all(hasattr(dm, a) for a in attributes):
        raise ValueError(f"{who} needs a datamodule that describes its modes ({', '.join(attributes)}), such as "
                         f"datamodules.Ring or Grid; got {type(dm).__name__}")
    return [getattr(dm, a) for a in attributes]


def log_image_to_wandb(trainer: L.Trainer, key: str, path: str) -> None:
    """Logs the image file at `path` under `key` to every W&B logger of the trainer."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            # the x-axis Lightning logs metrics at (training batches), not global_step (D + G steps)
            step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", trainer.global_step)
            logger.log_image(key=key, images=[path], step=step)


class EvaluationCallback(L.Callback):
    """Base of the callbacks that measure or draw the generator at the end of every validation.

    A subclass implements `evaluate(trainer, pl_module)`. It is not called during Lightning's
    sanity check, which is there to catch errors in the validation step before training, not to
    measure: a full evaluation there would cost time and write files of the untrained generator.

    Files go to the run folder (`run_folder`), never to the working directory: there they would
    mix with the code (and get committed with it) and every run would overwrite the last one's.

    `last` holds the values logged by the latest evaluation, `last_path` the latest image written
    (train.py prints it and records it for experiments/reproduce.py).
    """

    def __init__(self):
        self.last: dict[str, float] = {}
        self.last_path: Optional[str] = None
        self._warned_no_folder = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ samples
    @staticmethod
    def sample_batches(pl_module: L.LightningModule, n: int, batch_size: int) -> Iterator[Tensor]:
        """`n` samples in batches of at most `batch_size`, from this rank's evaluation latent stream:
        the ranks' samples are distinct, and the same for a given (seed, generator step)."""
        stream = pl_module.evaluation_rng()
        for start in range(0, n, batch_size):
            yield pl_module.sample(min(batch_size, n - start), rng=stream)

    # ------------------------------------------------------------------ values
    def log_values(self, pl_module: L.LightningModule, values: dict, prefix: str = "val/", **log_kwargs) -> None:
        """Logs each value as `prefix + name` and keeps them in `self.last` (keyed by `name`).

        The values were merged across ranks before (summed counts or gathered features), so every
        rank logs the same figure and Lightning must not average it again (`sync_dist=False`)."""
        self.last = {name: float(value) for name, value in values.items()}
        for name, value in values.items():
            value = value.float() if isinstance(value, Tensor) else value
            pl_module.log(prefix + name, value, sync_dist=False, **log_kwargs)

    # ------------------------------------------------------------------ files
    def run_folder(self, trainer: L.Trainer) -> Optional[str]:
        """The run's own folder: the first logger's (`trainer.log_dir`: the CSV logger's version
        folder, beside metrics.csv and config.yaml), else the trainer's `default_root_dir`.

        None, with a warning the first time, when that folder is the working directory, which is
        what Lightning falls back to without a logger or `default_root_dir`. Call it on every rank:
        `trainer.log_dir` is a collective under DDP."""
        folder = trainer.log_dir or trainer.default_root_dir
        if folder is not None and os.path.realpath(folder) != os.path.realpath(os.getcwd()):
            return folder
        if not self._warned_no_folder:
            self._warned_no_folder = True
            rank_zero_warn(f"{type(self).__name__} writes no files: the run has no folder of its own (no logger with "
                           f"a folder, and the trainer's default_root_dir is the working directory). Give the "
                           f"trainer a logger or a default_root_dir.")
        return None

    def output_path(self, trainer: L.Trainer, subfolder: str, filename: str) -> Optional[str]:
        """`<run folder>/<subfolder>/<filename>` (the subfolder made here) on global rank zero, the
        one rank that writes; None on the others and when there is no run folder. Call it on every
        rank (see `run_folder`)."""
        folder = self.run_folder(trainer)
        if folder is None or not trainer.is_global_zero:
            return None
        folder = os.path.join(folder, subfolder)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, filename)

    def publish_image(self, trainer: L.Trainer, key: str, path: str) -> None:
        """Records the image just written at `path` as `last_path` and logs it to W&B under `key`."""
        self.last_path = path
        log_image_to_wandb(trainer, key, path)
