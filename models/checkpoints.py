"""Checkpoints: what rebuilds a model's networks from its hyperparameters (`network_configs`,
`prepare_checkpoint_load`), and the fit-loop state that makes a resumed run continue exactly as the
uninterrupted one (`resume_at_epoch_end`)."""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

try:  # the config LightningCLI builds a module from (Lightning >= 2.3), for its networks' configs
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover
    _given_hyperparameters = None


def network_configs(networks: Mapping[str, nn.Module]) -> dict[str, Any]:
    """The {class_path, init_args} configs that rebuild the networks (and the LR scheduler), for a
    model's hyperparameters, so that its checkpoint loads on its own (`load_from_checkpoint`).

    Built by LightningCLI: the configs the CLI built them from. Built in Python: the `init_config`
    the networks of `models.networks` record; a network without one is left out, and loading then
    needs it passed (`load_from_checkpoint(path, generator=...)`). A scheduler given as a Python
    callable is left out the same way (sampling does not need it).
    """
    given = (_given_hyperparameters.get() if _given_hyperparameters is not None else None) or {}
    configs: dict[str, Any] = {}
    for role, module in networks.items():
        config = given.get(role) if is_class_config(given.get(role)) else getattr(module, "init_config", None)
        if is_class_config(config):
            configs[role] = copy.deepcopy(plain(config))
    if is_class_config(given.get("lr_scheduler")):
        configs["lr_scheduler"] = copy.deepcopy(plain(given["lr_scheduler"]))
    return configs


def is_class_config(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("class_path"), str)


def plain(value: Any) -> Any:
    """Nested mappings and sequences as plain dicts and lists (jsonargparse Namespaces included)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def build_network(config: Mapping[str, Any], role: str = "network") -> nn.Module:
    """The nn.Module a {class_path, init_args} config describes."""
    class_path = config["class_path"]
    try:
        network_class = import_class(class_path)
    except ValueError as err:
        raise ValueError(f"{role}: {err}") from err
    if not (isinstance(network_class, type) and issubclass(network_class, nn.Module)):
        raise ValueError(f"{role}: class_path {class_path!r} is not an nn.Module class")
    return network_class(**dict(config.get("init_args") or {}))


def import_class(class_path: str):
    module_name, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import class_path {class_path!r} ({err}); is its package installed?") from err


def resume_at_epoch_end(fit_loop: dict[str, Any], source: str = "the checkpoint") -> dict[str, Any]:
    """Rewrites a checkpoint's saved fit-loop state (in place) so that a run resumed from it starts
    the next epoch exactly as the uninterrupted run did; refuses a checkpoint written mid-epoch.

    The configs' checkpoints are written at an epoch's end, from inside it: after its last batch and
    its validation, in `on_train_epoch_end` (validation every epoch) or in `on_validation_end`
    (validation every few epochs). Lightning restores such a state as "in the middle of that epoch"
    when training is bounded by `max_steps`, and finishes the epoch again on resume: it calls the
    epoch-end hooks a second time (re-saving the checkpoint it resumed from), counts that empty
    epoch (so the samplers and the noise stream move one epoch ahead of the uninterrupted run's, and
    `max_epochs` can end the run at once), and can shift the logging step by one. Here the epoch is
    recorded as finished (epoch counters equal), and the logging step as it is after the epoch's
    last batch; `GANBase.on_train_start` then tells the loops that nothing is left to restart.

    A checkpoint written within an epoch (every_n_train_steps, validation within an epoch, the
    SLURM HPC checkpoint written at an arbitrary instruction on a signal) cannot continue exactly,
    since the rest of its epoch's data and noise are not restartable from it: ValueError.

    Returns the loop state (the same dict).
    """
    batches = fit_loop["epoch_loop.batch_progress"]
    epochs = fit_loop["epoch_progress"]
    done = batches["current"]
    in_flight = done["ready"] != done["completed"]  # a batch's hooks or step not finished
    if in_flight or (done["completed"] > 0 and not batches.get("is_last_batch", False)):
        epoch = epochs["current"]["processed"]
        in_step = done["ready"] != done["processed"]
        raise ValueError(
            f"{source} was written in the middle of epoch {epoch} (after {done['processed']} of its batches"
            f"{', during a training step' if in_step else ''}); a run resumed from it cannot continue exactly as the "
            f"uninterrupted run, so it is not resumed. Resume from a checkpoint written at an epoch end (the "
            f"configs' ModelCheckpoint writes one at every epoch end: last.ckpt is the latest), or load its "
            f"weights for evaluation or sampling (validate --ckpt_path, or load_from_checkpoint)."
        )
    # written at validation end, from within the epoch loop: before it counted the last batch as
    # stepped for the loggers
    within_epoch_loop = done["completed"] > 0 and epochs["current"]["processed"] < epochs["current"]["started"]
    for counts in (epochs["total"], epochs["current"]):
        # the epoch whose batches are all done counts as finished; before any batch, the last one
        # that was processed does
        finished = counts["started"] if done["completed"] > 0 else counts["processed"]
        for key in ("ready", "started", "processed", "completed"):
            counts[key] = finished
    if within_epoch_loop:
        fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"] += 1
    return fit_loop


def clear_restart_flags(fit_loop) -> None:
    """Marks Lightning's fit loop and its children as not restarting: with the epoch recorded as
    finished (resume_at_epoch_end) the next epoch starts as in an uninterrupted run (its start hooks,
    a fresh data iterator, validation at its end). Lightning keeps these flags set when training is
    bounded by max_steps, which would replay the end of the finished epoch."""
    from lightning.pytorch.loops.loop import _Loop

    stack, seen = [fit_loop], set()
    while stack:
        loop = stack.pop()
        if id(loop) in seen:
            continue
        seen.add(id(loop))
        loop._restarting = False
        loop._loaded_from_state_dict = False
        loop._resuming_from_checkpoint = False
        loop.reset_restart_stage()
        stack.extend(v for v in vars(loop).values() if isinstance(v, _Loop))


def prepare_checkpoint_load(cls: type, checkpoint_path, kwargs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """For `GANBase.load_from_checkpoint`: the class to build (the checkpoint's own when `cls` is one of
    its bases) and the keyword arguments with the networks rebuilt from the checkpoint's configs
    (networks passed in `kwargs` are used instead). Errors name what is missing and what to pass."""
    if not isinstance(checkpoint_path, (str, os.PathLike)):
        return cls, kwargs
    kwargs = dict(kwargs)
    kwargs.setdefault("weights_only", True)  # tensors and plain values only, unless the caller says otherwise
    checkpoint = torch.load(checkpoint_path, map_location="cpu", mmap=True, weights_only=kwargs["weights_only"])
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    saved_class = checkpoint.get("gan_class_path") or hparams.get("_class_path")
    target = import_class(saved_class) if saved_class else cls
    if not (isinstance(target, type) and issubclass(target, cls)):
        raise ValueError(f"{checkpoint_path} holds a {saved_class}, which is not a {cls.__name__}: load it "
                         f"with {getattr(target, '__name__', saved_class)}.load_from_checkpoint (or GANBase's)")
    if target is not cls:
        return target, kwargs
    for role in cls.network_arguments:
        if role in kwargs:
            continue
        if not is_class_config(hparams.get(role)):
            raise ValueError(
                f"{checkpoint_path} does not say how to build the {role} (no {role!r} config in its "
                f"hyperparameters: written before checkpoints kept them, or built in Python from a class that "
                f"does not record its arguments). Pass it: {cls.__name__}.load_from_checkpoint(path, "
                f"{role}=<the network>)"
            )
        if "_instantiator" not in hparams:  # LightningCLI's instantiator builds nested configs itself
            kwargs[role] = build_network(hparams[role], role)
    return cls, kwargs


class CheckpointHooks:
    """The checkpoint hooks of `GANBase`: step counters and the model's class path saved; a fit
    resumed from an end-of-epoch checkpoint continues exactly as the uninterrupted run (a
    mid-epoch one is refused, see `resume_at_epoch_end`); `load_from_checkpoint` needs nothing
    but the file."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gan_steps"] = {"d_steps": self.d_steps, "g_steps": self.g_steps, "d_skips": self.d_skips,
                                   "g_skips": self.g_skips, "last_d_accuracy": self.last_d_accuracy}
        checkpoint["gan_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"  # for load_from_checkpoint

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        steps = checkpoint.get("gan_steps", {})
        self.d_steps = int(steps.get("d_steps", 0))
        self.g_steps = int(steps.get("g_steps", 0))
        self.d_skips = int(steps.get("d_skips", 0))
        self.g_skips = int(steps.get("g_skips", 0))
        self.last_d_accuracy = steps.get("last_d_accuracy")
        # Called before Lightning restores its loops from the same dict: resuming a fit, make the
        # saved loop state say "the last epoch is over" (see resume_at_epoch_end).
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == "fit" and checkpoint.get("loops", {}).get("fit_loop"):
            resume_at_epoch_end(checkpoint["loops"]["fit_loop"], source=str(trainer.ckpt_path or "the checkpoint"))
            self._start_epoch_afresh = True

    def on_train_start(self) -> None:
        if getattr(self, "_start_epoch_afresh", False):
            self._start_epoch_afresh = False
            clear_restart_flags(self.trainer.fit_loop)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs):
        """Lightning's `load_from_checkpoint`, with the networks rebuilt from the configs saved in
        the checkpoint's hyperparameters, so `GAN.load_from_checkpoint(path).sample(16)` needs
        nothing else. Networks passed as keyword arguments are used instead. Called on a base class
        (`GANBase.load_from_checkpoint(path)`), it builds the checkpoint's own class."""
        target, kwargs = prepare_checkpoint_load(cls, checkpoint_path, kwargs)
        if target is not cls:
            return target.load_from_checkpoint(checkpoint_path, map_location=map_location,
                                               hparams_file=hparams_file, strict=strict, **kwargs)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, hparams_file=hparams_file,
                                            strict=strict, **kwargs)
