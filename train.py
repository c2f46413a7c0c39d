"""Command-line entry point: `python train.py {fit,validate,test} --config experiments/<benchmark>/<model>.yaml`.

Any value in a config can be overridden on the command line (`--trainer.max_steps 300`,
`--seed_everything 3`, `--model.init_args.g_lr 1e-4`); `--print_config` prints the fully
resolved config. Models and datamodules are given by class path (`models.GAN`,
`datamodules.Ring`), so a new variant needs no change here.
"""

from __future__ import annotations

import json
import os
import warnings

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from models import GANBase

# The 2D mixtures are generated in the main process on purpose (microseconds per batch).
warnings.filterwarnings("ignore", ".*does not have many workers.*")


class GANCLI(LightningCLI):
    def after_fit(self) -> None:
        """Evaluates the final weights (unless the last validation already did) and prints the figures."""
        trainer, model = self.trainer, self.model
        if trainer.interrupted or trainer.fast_dev_run:
            return
        if getattr(model, "last_validated_g_step", None) != getattr(model, "g_steps", None):
            trainer.validate(model, datamodule=self.datamodule, verbose=False)
        figures = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if figures:
            text = ", ".join(f"{k} {v:.4g}" for k, v in sorted(figures.items()))
            rank_zero_info(f"Final evaluation at generator step {getattr(model, 'g_steps', '?')}: {text}")
        for callback in trainer.callbacks:
            if getattr(callback, "protocol", None):  # e.g. which features and reference split a FID used
                rank_zero_info(f"{type(callback).__name__}: {callback.protocol}")
        plots = [c.last_path for c in trainer.callbacks if getattr(c, "last_path", None)]
        for path in plots:
            rank_zero_info(f"Samples plotted in {path}")
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        if log_dir:
            rank_zero_info(f"Run folder: {log_dir}")
            if trainer.is_global_zero:  # machine-readable, for experiments/reproduce.py
                record = {"metrics": figures, "g_steps": getattr(model, "g_steps", None),
                          "d_steps": getattr(model, "d_steps", None), "plots": plots,
                          "protocols": {type(c).__name__: c.protocol for c in trainer.callbacks
                                        if getattr(c, "protocol", None)}}
                os.makedirs(log_dir, exist_ok=True)
                with open(os.path.join(log_dir, "final_metrics.json"), "w") as f:
                    json.dump(record, f, indent=1)


def main(args=None, **kwargs) -> GANCLI:
    """Runs the CLI; `args` as on the command line, `kwargs` to LightningCLI (e.g. run=False)."""
    return GANCLI(
        GANBase,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        **kwargs,
    )


if __name__ == "__main__":
    main()
