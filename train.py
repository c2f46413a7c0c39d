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
from typing import Optional

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from models import GANBase

# The 2D mixtures are generated in the main process on purpose (microseconds per batch).
warnings.filterwarnings("ignore", ".*does not have many workers.*")


class GANCLI(LightningCLI):
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_image_shape(config)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if os.environ.get("GAN_PROGRESS_FILE"):  # set by experiments/reproduce.py to follow each run
            from callbacks import ProgressFile

            trainer.callbacks.append(ProgressFile(os.environ["GAN_PROGRESS_FILE"]))
        return trainer

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


def data_image_shape(data) -> Optional[tuple[int, int, int]]:
    """(C, H, W) of the configured datamodule's images, or None (2D data, or not knowable before setup)."""
    from jsonargparse import Namespace
    from jsonargparse.typing import import_object

    if data is None or not data.get("class_path"):
        return None
    init_args = data.get("init_args") or {}
    init_args = init_args.as_dict() if isinstance(init_args, Namespace) else dict(init_args)
    datamodule = import_object(data.class_path)(**init_args)  # cheap: datamodules load data in setup()
    shape = getattr(datamodule, "image_shape", None)
    return tuple(int(v) for v in shape) if shape is not None else None


def fill_image_shape(config) -> None:
    """Links the data's image shape to the networks: a generator or discriminator with `image_size`
    and `channels` arguments (the DCGAN pair) that the config leaves out gets them from the
    datamodule's `image_shape`, so YAMLs do not repeat the numbers; values that contradict the
    data are rejected here, before anything is built."""
    model = config.get("model")
    model_args = model.get("init_args") if model is not None else None
    if model_args is None:
        return
    networks = {role: model_args.get(role) for role in ("generator", "discriminator")}
    networks = {role: net for role, net in networks.items() if net is not None and net.get("init_args") is not None}
    if not any(key in net.init_args for net in networks.values() for key in ("image_size", "channels")):
        return  # e.g. MLP networks on 2D data
    shape = data_image_shape(config.get("data"))
    if shape is None:
        return
    channels, height, width = shape
    if height != width:
        raise ValueError(f"the data's images are {height} x {width}; DCGAN networks need square images")
    for role, net in networks.items():
        for key, value in (("image_size", height), ("channels", channels)):
            if key not in net.init_args:
                continue
            given = net.init_args[key]
            if given is None:
                net.init_args[key] = value
            elif int(given) != value:
                raise ValueError(
                    f"model.init_args.{role}.init_args.{key} is {given} but the data's images are {shape} "
                    f"(C, H, W): remove {key} from the config to take it from the data, or change the data"
                )


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
