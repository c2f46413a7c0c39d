"""Command-line entry point: `python train.py {fit,validate} --config experiments/<benchmark>/<model>.yaml`.

Any value in a config can be overridden on the command line (`--trainer.max_steps 300`,
`--seed_everything 3`, `--model.init_args.g_lr 1e-4`); `--print_config` prints the fully
resolved config. Models and datamodules are given by class path (`models.GAN`,
`datamodules.Ring`), so a new variant needs no change here.

`--ckpt_path PATH` resumes (fit) or evaluates (validate, test) a checkpoint with the model the
config describes, which must be the checkpoint's: another class or other arguments are an error
that lists them (LightningCLI would silently put the checkpoint's values over the config's).
`--ckpt_path last` is the newest run folder's last.ckpt of this config. A resumed fit continues
the checkpoint's run folder: the same version folder (metrics.csv continued from the checkpoint's
step) and the same W&B run.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from argparse import ArgumentError
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from callbacks.run_record import RunRecord
from experiments.configs import with_protocol
from models import GANBase
from models.checkpoints import plain, resume_at_epoch_end

# The 2D mixtures are generated in the main process on purpose (microseconds per batch).
warnings.filterwarnings("ignore", ".*does not have many workers.*")


class GANCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit and validate: the models define no test or predict step (`GANBase.sample` draws samples)."""
        return {key: value for key, value in LightningCLI.subcommands().items() if key in ("fit", "validate")}

    def init_parser(self, **kwargs):
        # parse errors raise instead of printing the usage and a nested message: main() prints one line
        parser = super().init_parser(**kwargs)
        parser.exit_on_error = False
        return parser

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        check_trainer_options(self.config[subcommand] if subcommand else self.config)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as error:  # a class's own check of its arguments, before any run folder or W&B run
            raise BadValue(short_error(str(error))) from error

    def _parse_ckpt_path(self) -> None:
        """LightningCLI's version puts the checkpoint's saved model hyperparameters over the parsed
        config: the user's values (and even the model class) silently give way to the checkpoint's.
        Here the config stays as given; `before_instantiate_classes` checks it against the checkpoint."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        fill_image_shape(config)
        self.resume_step: Optional[int] = None
        if self.subcommand and config.get("ckpt_path"):
            self.resume_step = prepare_checkpoint(self.parser, self.config, self.subcommand)

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        check_data = getattr(self.datamodule, "check_data", None)  # missing data: said before any run exists
        if check_data is not None and self.subcommand is not None:  # not when only building (run=False)
            try:
                check_data()
            except (FileNotFoundError, ImportError) as error:
                raise BadValue(f"data: {error}") from error
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "fit":
            say_global_batch(trainer, self.datamodule)
            resume_step = getattr(self, "resume_step", None)
            if resume_step is not None:
                continue_metrics_file(trainer, resume_step)
            # run.json (what experiments/runner.py reads) before the checkpoint callbacks, so an evaluation is in
            # the record before the checkpoint after it exists
            first_checkpoint = next((i for i, c in enumerate(trainer.callbacks) if isinstance(c, Checkpoint)),
                                    len(trainer.callbacks))
            resolved = resolved_config(self.parser, self.config, self.subcommand)
            trainer.callbacks[first_checkpoint:first_checkpoint] = [RecordWandbRun(resolved), RunRecord()]
            use_progress_lines(trainer)
        return trainer

    def after_fit(self) -> None:
        """Evaluates the final weights (unless the last validation already did) and prints the figures; the
        run's RunRecord (run.json in the run folder) records that evaluation."""
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
            rank_zero_info(f"Run folder: {log_dir}")  # its run.json (RunRecord) holds these figures


# ---------------------------------------------------------------------------- checkpoints and run folders
WANDB_ID_FILE = "wandb_run_id"  # in the run folder: the W&B run a resumed fit continues
LIGHTNING_CKPT_NAMES = ("best", "hpc", "registry")  # resolved by Lightning itself
# Model arguments that change how the model runs, not what it computes: a resume may change them.
RUNTIME_ARGUMENTS = ("compile_networks", "channels_last")


def resolved_config(parser, root_config, subcommand: str) -> dict[str, Any]:
    """The subcommand's fully resolved config as plain data (what --print_config shows)."""
    return yaml.safe_load(parser.dump(root_config, skip_link_targets=False, skip_none=False, format="yaml"))[subcommand]


def prepare_checkpoint(parser, root_config, subcommand: str) -> Optional[int]:
    """Resolves `--ckpt_path last`, checks the checkpoint's model against the config's, and for a
    fit from a run folder's checkpoint points the loggers at that folder and W&B run. Returns the
    logging step the resumed fit continues from (None when it does not continue a run folder)."""
    config = root_config[subcommand]
    run_root = run_folder_root(config)
    # the config as the run folders' config.yaml files hold it (after fill_image_shape)
    dump = resolved_config(parser, root_config, subcommand)
    if config.ckpt_path == "last":
        found, others = latest_run_checkpoint(run_root, config, dump)
        where = run_root if run_root is not None else Path(config.trainer.get("default_root_dir") or ".") / "checkpoints"
        if found is None:
            skipped = ""
            if others:
                folder, differences = others[0]
                shown = "; ".join(f"{key}: {_show(old)} there, {_show(new)} here" for key, old, new in differences[:3])
                skipped = (f" ({len(others)} with another seed, model or data skipped; the newest, {folder}, has "
                           f"{shown}{'; ...' if len(differences) > 3 else ''})")
            if subcommand != "fit":
                raise FileNotFoundError(f"--ckpt_path last: no run of this config with a last.ckpt under {where}"
                                        f"{skipped}; nothing to {subcommand}")
            rank_zero_info(f"--ckpt_path last: no run of this config with a last.ckpt under {where} yet{skipped}; "
                           f"starting a new run")
            config.ckpt_path = None
            return None
        rank_zero_info(f"--ckpt_path last: {found}")
        config.ckpt_path = str(found)
    path = config.ckpt_path
    if path in LIGHTNING_CKPT_NAMES or not Path(path).is_file():
        return None  # Lightning's own names, or a missing file (Lightning says so)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    check_checkpoint_model(dump["model"], path, checkpoint.get("hyper_parameters") or {})
    if subcommand != "fit":
        return None
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if fit_loop:  # a mid-epoch checkpoint fails here, before anything is built
        resume_at_epoch_end(fit_loop, source=path)
    return continue_run_folder(config, path, run_root, fit_loop)


def check_checkpoint_model(model: dict[str, Any], path: str, saved: dict[str, Any]) -> None:
    """Raises ValueError if the config's model (its dumped {class_path, init_args}) is not the
    checkpoint's: another class, or other arguments (networks included). Runtime-only arguments
    (RUNTIME_ARGUMENTS) take the config's values, said in one line. Arguments only one side knows
    (added or removed since) are skipped."""
    saved = plain(dict(saved))
    saved.pop("_instantiator", None)
    saved_class = saved.pop("_class_path", None)
    current = {**(model.get("init_args") or {}), **(model.get("dict_kwargs") or {})}
    config_file = Path(path).resolve().parent.parent / "config.yaml"
    use_config = f" (its run's config: --config {config_file})" if config_file.is_file() else ""
    if saved_class is not None and not _same_class(saved_class, model["class_path"]):
        raise ValueError(
            f"the checkpoint {path} holds a {saved_class}, but the config builds a {model['class_path']}: use the "
            f"config the checkpoint was trained with{use_config}, or a checkpoint of a {model['class_path']}"
        )
    differences = []
    for key in sorted(set(saved) & set(current)):
        differences += _differences(key, saved[key], current[key])
    runtime = [d for d in differences if d[0] in RUNTIME_ARGUMENTS]
    if runtime:
        rank_zero_info("Checkpoint model options changed by the config: "
                       + "; ".join(f"{key} {_show(new)} (was {_show(old)})" for key, old, new in runtime))
    differences = [d for d in differences if d[0] not in RUNTIME_ARGUMENTS]
    if differences:
        listed = "; ".join(f"{key}: {_show(old)} in the checkpoint, {_show(new)} in the config" for key, old, new in differences)
        flags = " ".join(f"--model.init_args.{key} {_show(old)}" for key, old, _ in differences)
        raise ValueError(
            f"the config's {model['class_path']} differs from the checkpoint's ({path}): {listed}. Its weights and "
            f"optimiser states belong to the checkpoint's values: use them{use_config}, e.g. {flags}; or train a new "
            f"run without --ckpt_path"
        )


def _same_class(a: str, b: str) -> bool:
    from jsonargparse.typing import import_object

    if a == b:
        return True
    try:
        return import_object(a) is import_object(b)
    except (ImportError, AttributeError, ValueError):
        return False


def _differences(key: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(key, old, new) for each leaf that differs; class configs compared by class, then argument."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "class_path" in old and "class_path" in new:
            if not _same_class(old["class_path"], new["class_path"]):
                return [(f"{key}.class_path", old["class_path"], new["class_path"])]
            old, new = old.get("init_args") or {}, new.get("init_args") or {}
            key, keys = f"{key}.init_args", set(old) & set(new)
        else:
            keys = set(old) | set(new)
        return [d for k in sorted(keys) for d in _differences(f"{key}.{k}", old.get(k), new.get(k))]
    return [] if old == new else [(key, old, new)]


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, float) else repr(value)


def _logger_configs(config) -> list:
    loggers = config.trainer.get("logger")
    if loggers is None or isinstance(loggers, bool):
        return []
    return [c for c in (loggers if isinstance(loggers, list) else [loggers]) if c is not None and c.get("class_path")]


def _logger_class(logger_config):
    from jsonargparse.typing import import_object

    return import_object(logger_config.class_path)


def run_folder_root(config) -> Optional[Path]:
    """The folder whose version_N subfolders are this config's runs: the first logger's
    save_dir/name when it is a CSV or TensorBoard logger (it names the run folder), else None."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = _logger_configs(config)
    if not loggers or not issubclass(_logger_class(loggers[0]), (CSVLogger, TensorBoardLogger)):
        return None
    args = loggers[0].get("init_args") or {}
    root = Path(args.get("save_dir") or config.trainer.get("default_root_dir") or ".")
    return root / args["name"] if args.get("name") else root


def latest_run_checkpoint(run_root: Optional[Path], config, dump: dict[str, Any]) -> tuple[Optional[Path], list]:
    """The newest last.ckpt of the newest run folder (highest version) whose config.yaml has this
    config's seed, model and data (runs of other seeds share the folder), and the run folders with
    a checkpoint skipped for another config, newest first, each with its differences. Without a
    run logger, the last.ckpt that ModelCheckpoint writes under default_root_dir/checkpoints."""
    if run_root is None:
        if _logger_configs(config) or config.trainer.get("logger") is True:
            raise ValueError("--ckpt_path last finds a config's runs through its first logger, which must be a "
                             "CSVLogger or TensorBoardLogger (as in the shipped configs), or trainer.logger false; "
                             "pass the checkpoint's path instead")
        last = Path(config.trainer.get("default_root_dir") or ".") / "checkpoints" / "last.ckpt"
        return (last if last.is_file() else None), []
    runs, others = [], []
    for folder in run_root.glob("version_*"):
        number = folder.name[len("version_"):]
        # last.ckpt, or last-v1.ckpt... where a run resumed from an older checkpoint left last.ckpt alone
        lasts = sorted((folder / "checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if not number.isdigit() or not lasts:
            continue
        if (folder / "config.yaml").is_file():
            saved = yaml.safe_load((folder / "config.yaml").read_text()) or {}
            differences = [d for key in ("seed_everything", "model", "data")
                           for d in _differences(key, saved.get(key), dump.get(key))]
            if differences:
                others.append((int(number), folder, differences))
                continue
        runs.append((int(number), lasts[-1]))
    others = [(folder, differences) for _, folder, differences in sorted(others, key=lambda o: -o[0])]
    return (max(runs)[1] if runs else None), others


def continue_run_folder(config, path: str, run_root: Optional[Path], fit_loop: Optional[dict]) -> Optional[int]:
    """For a checkpoint in <run_root>/version_N/checkpoints: logs into version_N and its W&B run.
    Returns the logging step to continue metrics.csv from (the checkpoint's), else None."""
    checkpoint = Path(path).resolve()
    folder = checkpoint.parent.parent
    if run_root is None or checkpoint.parent.name != "checkpoints" or folder.parent != run_root.resolve():
        return None
    from lightning.pytorch.loggers import WandbLogger

    loggers = _logger_configs(config)
    loggers[0].init_args.version = folder.name  # a str is the folder's name itself
    wandb_note = ""
    for logger in loggers[1:]:
        if not issubclass(_logger_class(logger), WandbLogger) or logger.init_args.get("id"):
            continue
        id_file = folder / WANDB_ID_FILE
        if id_file.is_file():
            logger.init_args.id = id_file.read_text().strip()
            wandb_note = f" and W&B run {logger.init_args.id}"
        else:
            wandb_note = f"; no W&B run recorded there ({WANDB_ID_FILE}), so W&B logs to a new run"
    rank_zero_info(f"Resuming {path}: logging into {folder}{wandb_note}")
    return int(fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"]) if fit_loop else None


@rank_zero_only
def continue_metrics_file(trainer: L.Trainer, resume_step: int) -> None:
    """A resumed run appends to its run folder's metrics.csv: the rows logged before the checkpoint's
    logging step stay (those the interrupted run logged after it go), and the CSV logger continues
    with their columns. Lightning's CSV logger deletes an existing metrics.csv when it starts, so
    it is started here and the rows are written back before anything is logged."""
    from lightning.pytorch.loggers import CSVLogger

    logger = trainer.loggers[0] if trainer.loggers else None
    if not isinstance(logger, CSVLogger):
        return
    metrics_file = Path(logger.log_dir) / "metrics.csv"
    header, rows = [], []
    if metrics_file.is_file():
        with open(metrics_file, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if float(row["step"]) < resume_step]
    with warnings.catch_warnings():  # "previous log files will be deleted": they are written back below
        warnings.filterwarnings("ignore", ".*exists and is not empty.*")
        writer = logger.experiment
    if header:
        with open(metrics_file, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(rows)
        writer.metrics_keys = list(header)


class RecordWandbRun(L.Callback):
    """Completes the W&B run of a fit: its name `<group>-s<seed>` (e.g. ring8-gan-s3, unless the config names it),
    the fully resolved config in its config (`resolved_config`: seed, model and networks, data, trainer; Lightning
    logs the model's hyperparameters beside it), and its id in the run folder (WANDB_ID_FILE), where a resumed fit
    finds it. The run record (run.json) keeps the id, name, project and URL (`RunRecord`)."""

    def __init__(self, resolved_config: Optional[dict[str, Any]] = None):
        self.resolved_config = resolved_config

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

        if stage != "fit" or not trainer.is_global_zero or not trainer.loggers:
            return
        folder = Path(trainer.loggers[0].log_dir) if isinstance(trainer.loggers[0], (CSVLogger, TensorBoardLogger)) \
            else None
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger) or getattr(logger, "mode", None) == "disabled":
                continue
            run = logger.experiment
            settings = getattr(logger, "_wandb_init", {}) or {}
            seed = (self.resolved_config or {}).get("seed_everything")
            if not settings.get("name") and settings.get("group") and seed is not None:
                run.name = f"{settings['group']}-s{seed}"
            if self.resolved_config is not None:
                run.config.update({"resolved_config": self.resolved_config}, allow_val_change=True)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / WANDB_ID_FILE).write_text(run.id + "\n")


def use_progress_lines(trainer: L.Trainer) -> None:
    """Puts the project's progress bar (callbacks.ProgressBar) in place of Lightning's default one."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    from callbacks.progress import ProgressBar

    for i, callback in enumerate(trainer.callbacks):
        if type(callback) is TQDMProgressBar:
            trainer.callbacks[i] = ProgressBar()


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
    """Links the data's image shape to the networks: a generator, discriminator or reconstructor (VEEGAN) with
    `image_size` and `channels` arguments (the DCGAN networks) that the config leaves out gets them from the
    datamodule's `image_shape`, so YAMLs do not repeat the numbers (a PacGAN discriminator: packing x the data's
    channels); values that contradict the data are rejected here, before anything is built."""
    model = config.get("model")
    model_args = model.get("init_args") if model is not None else None
    if model_args is None:
        return
    networks = {role: model_args.get(role) for role in ("generator", "discriminator", "reconstructor")}
    networks = {role: net for role, net in networks.items() if net is not None and net.get("init_args") is not None}
    if not any(key in net.init_args for net in networks.values() for key in ("image_size", "channels")):
        return  # e.g. MLP networks on 2D data
    shape = data_image_shape(config.get("data"))
    if shape is None:
        return
    channels, height, width = shape
    if height != width:
        raise ValueError(f"the data's images are {height} x {width}; DCGAN networks need square images")
    packing = model_args.get("packing") or 1  # PacGAN's D sees `packing` images stacked on channels
    for role, net in networks.items():
        stacked = packing if role == "discriminator" else 1
        for key, value in (("image_size", height), ("channels", channels * stacked)):
            if key not in net.init_args:
                continue
            given = net.init_args[key]
            if given is None:
                net.init_args[key] = value
            elif int(given) != value:
                packed = f", {stacked} of them stacked on channels (packing {stacked})" if stacked > 1 else ""
                raise ValueError(
                    f"model.init_args.{role}.init_args.{key} is {given} but the data's images are {shape} "
                    f"(C, H, W){packed}, so it must be {value}: remove {key} from the config to take it from the "
                    f"data, or change the data"
                )


def check_protocols_given(argv) -> None:
    """A table's model file holds only what its model adds to the table's protocol.yaml. Given without
    the protocol before it, the parser would complain about a missing class or an unknown argument
    without saying why; this says what to pass instead."""
    if not isinstance(argv, (list, tuple)):
        return
    configs = [a.split("=", 1)[1] if a.startswith("--config=") else argv[i + 1]
               for i, a in enumerate(argv) if a.startswith("--config=") or (a == "--config" and i + 1 < len(argv))]
    given = [Path(c).resolve() for c in configs]
    for position, config in enumerate(configs):
        needed = with_protocol(Path(config))
        if len(needed) == 2 and needed[0].resolve() not in given[:position]:
            raise SystemExit(f"error: --config {config} holds only what its model adds to its table's protocol; give the "
                             f"protocol first: --config {needed[0]} --config {config}")


def check_trainer_options(config) -> None:
    """Trainer options that manual optimisation cannot honour, refused with what to use instead."""
    trainer = config.get("trainer") or {}
    clip = trainer.get("gradient_clip_val")
    if clip is not None:
        raise BadValue(f"trainer.gradient_clip_val ({clip}): the models step their optimisers themselves, so Lightning "
                       f"cannot clip; use --model.init_args.gradient_clip_val {clip} (and gradient_clip_algorithm)")
    accumulate = trainer.get("accumulate_grad_batches")
    if accumulate not in (None, 1):
        raise BadValue(f"trainer.accumulate_grad_batches ({accumulate}): not available with the models' manual "
                       f"optimisation (one D step per batch is the loop); raise data.init_args.batch_size instead")


def say_global_batch(trainer: L.Trainer, datamodule) -> None:
    """One line at the start of a multi-process fit: its global batch differs from the single-device protocol of
    the shipped configs (the run record keeps `world_size` and `global_batch`)."""
    batch = getattr(datamodule, "batch_size", None)
    if trainer.world_size > 1 and batch:
        rank_zero_info(f"Global batch {trainer.world_size} processes x {batch} = {trainer.world_size * batch} samples "
                       f"per step, not the {batch} of the configs' one-device protocols: the tables' numbers are "
                       f"for --trainer.devices 1")


class BadValue(ValueError):
    """A bad value in the config or on the command line, said in one line (see `short_error`)."""


_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
          "For further information", "- Expected a <class 'NoneType'>")


def short_error(message: str) -> str:
    """One line from jsonargparse's nested report of a bad value: the key (`model.init_args.g_lr`), the value and
    what is allowed, or the checking class's own sentence. The report nests one "Parser key" per level, a
    "Problem with given class_path" where a class's init_args begin, and alternatives of Union types that did not
    apply; the innermost error is the one that says what is wrong."""
    best: Optional[tuple[int, list[str], str]] = None
    stack: list[tuple[int, str]] = []
    for line in message.splitlines():
        text = line.strip()
        indent = len(line) - len(line.lstrip()) + (2 if text.startswith("- ") else 0)
        text = text[2:] if text.startswith("- ") else text
        if not text:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = re.fullmatch(r'Parser key "([^"]+)":?(.*)', text)
        if key:
            stack.append((indent, key.group(1)))
            text = key.group(2).strip()
            if not text:
                continue
        if text.startswith("Problem with given class_path"):
            stack.append((indent, "init_args"))
            continue
        if any(text.startswith(n) for n in _NOISE) or re.fullmatch(r"\d+ validation errors? for .*", text):
            continue
        path = [k for _, k in stack]
        if best is None or len(path) > len(best[1]):
            best = (indent, path, text)
    if best is None:
        return message.strip().splitlines()[0] if message.strip() else "bad value"
    _, path, text = best
    text = re.sub(r"\s*\[type=[^\]]*input_value=(?P<v>'[^']*'|[^,\]]+)[^\]]*\]", r" (got \g<v>)", text)
    text = text.replace("Input should be", "must be")
    literal = re.fullmatch(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", text)
    if literal:
        text = f"must be one of {literal.group(1)} (got {literal.group(2)!r})"
    key = ".".join(k for i, k in enumerate(path) if not (k == "init_args" and i + 1 < len(path) and path[i + 1] == "init_args"))
    return f"{key}: {text}" if key else text


def main(args=None, **kwargs) -> GANCLI:
    """Runs the CLI; `args` as on the command line, `kwargs` to LightningCLI (e.g. run=False). A bad value in the
    config or on the command line ends it with one line on stderr (exit status 2) before anything is created."""
    check_protocols_given(sys.argv[1:] if args is None else args)
    try:
        return GANCLI(
            GANBase,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # the models configure theirs (two, one per player)
            save_config_kwargs={"overwrite": True},
            args=args,
            **kwargs,
        )
    except (ArgumentError, BadValue) as error:
        text = short_error(str(error)) if isinstance(error, ArgumentError) else str(error)
        print(f"train.py: error: {text}", file=sys.stderr)
        raise SystemExit(2) from None


def shut_down_distributed() -> None:
    """Ends the process group Lightning's DDP left open, so its communication threads stop before the interpreter
    exits (left to interpreter teardown, a 2-process gloo run once aborted after finishing: "terminate called
    without an active exception")."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    finally:
        shut_down_distributed()
