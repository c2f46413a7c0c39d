"""The resolved config of a run, as `python train.py fit --config ... --print_config` prints it, and the cache key
taken from it.

A run's cache key hashes what it trains, not how the YAML that describes it is written: the fully resolved config
(every composed file, every override, library defaults included), without `seed_everything`, because a run's
folder carries its seed in its own name (`seed<s>-<key>`). A comment, a reordered key or a value moved from a model
file into its table's protocol leaves the key as it was; any value that reaches the trainer changes it. A library
upgrade that changes the defaults `--print_config` shows changes every key (tests/test_config_goldens.py fails
first, naming the difference).

Resolution runs train.py's own LightningCLI parser in this process (a few tenths of a second per config after the
first import of train.py, which costs what importing torch does); results are cached per (file contents,
overrides).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
# Per table, what every model shares; each <model>.yaml beside it holds that model's differences.
PROTOCOL = "protocol.yaml"
# The models of every table, baseline first: the order of a table's rows and runs. The runner, the tests and
# the sweeps take the list from here (W&B sweep files cannot import it: tests/test_cluster.py checks them).
MODELS = ["gan", "gan_entropy", "gan_mode_seeking", "gan_d_skip", "gan_ttur", "gan_monitor", "gan_ttur_monitor",
          "gan_ttur_rebalance", "wgan_gp", "unrolled_gan", "minibatch_gan", "mgan", "mdgan", "infogan", "d2gan", "pacgan2", "pacgan3",
          "pacgan4", "veegan"]
# The baseline with one of the shared base's remedies switched on (a regulariser, the adaptive update ratio, two
# timescales, the collapse monitor acting): rows of the tables that have them, beside the remedies that are models
# of their own.
REMEDIES = ["gan_entropy", "gan_mode_seeking", "gan_d_skip", "gan_ttur", "gan_monitor", "gan_ttur_monitor",
            "gan_ttur_rebalance"]
LABELS = {
    "gan": "GAN", "gan_entropy": "GAN + entropy (0.1)", "gan_mode_seeking": "GAN + mode seeking (1)",
    "gan_d_skip": "GAN + D skips above 0.8 accuracy", "gan_ttur": "GAN + TTUR (D 4e-4, G 1e-4)", "gan_monitor": "GAN + monitor (recall < 0.3: entropy 0.1)",
    "gan_ttur_monitor": "GAN + TTUR + monitor (JSD 2x its best: restore, D lr x 0.1)",
    "gan_ttur_rebalance": "GAN + TTUR + monitor (JSD 2x its best: restore, D 1e-4 and G 1e-3)",
    "wgan_gp": "WGAN-GP", "unrolled_gan": "Unrolled GAN", "minibatch_gan": "Minibatch discrimination",
    "mgan": "MGAN", "mdgan": "MD-GAN", "infogan": "InfoGAN", "d2gan": "D2GAN", "pacgan2": "PacGAN2", "pacgan3": "PacGAN3",
    "pacgan4": "PacGAN4", "veegan": "VEEGAN",
}

# Arguments added to a class after runs with it were cached, each with the value that keeps the behaviour those runs
# had. At that value the argument is left out of a run's key, so adding it leaves finished runs cached; any other value
# enters the key like every other argument. A class path names any class of the config (the model, a network in its
# arguments, a callback); "*" matches the model class only.
ADDED_ARGUMENTS: dict[tuple[str, str], object] = {
    ("*", "simultaneous"): False,  # GANBase: simultaneous updates (the alternating loop before it)
    ("*", "entropy_weight"): 0.0,  # GANBase: the generator regularisers, off before them
    ("*", "entropy_space"): "data",
    ("*", "mode_seeking_weight"): 0.0,
    ("*", "d_skip_accuracy"): None,  # GANBase: the adaptive update ratio, off before it
    ("*", "g_skip_accuracy"): None,
    ("models.MLPGenerator", "weight_init"): "torch",  # the MLPs' initialisation (nn.Linear's before it)
    ("models.MLPDiscriminator", "weight_init"): "torch",
    ("callbacks.CollapseMonitor", "grad_jump"): None,  # the gradient-norm warning sign, off before it
    ("callbacks.CollapseMonitor", "restore"): False,
    ("callbacks.CollapseMonitor", "start_step"): 0,  # every evaluation judged, as before it
    ("callbacks.CollapseMonitor", "rule"): "level",  # the threshold a level of the signal, as before it
    ("models.BatchNormMLPGenerator", "num_generators"): 1,  # the PacGAN-protocol networks' MGAN and minibatch
    ("models.MaxoutDiscriminator", "minibatch_kernels"): 0,  # options, off before them
    ("models.MaxoutDiscriminator", "minibatch_kernel_dim"): 5,
}

# Top-level options the CLI no longer offers, with the value every run had while it did: LightningCLI's
# `optimizer` and `lr_scheduler`, unused by the models (which configure their own two optimisers) and removed with
# auto_configure_optimizers=False. The key counts them as present at that value, so finished runs stay cached.
REMOVED_OPTIONS: dict[str, object] = {"optimizer": None, "lr_scheduler": None}

_RESOLVED: dict[tuple, dict] = {}


def data_mode_count(init_args: dict) -> Optional[int]:
    """How many modes a 2D mixture datamodule of these init_args has (a Ring's num_modes, a Grid's side squared);
    None for other data."""
    if "num_modes" in init_args:
        return int(init_args["num_modes"])
    if "side" in init_args:
        return int(init_args["side"]) ** 2
    return None


def with_protocol(config: Path) -> list[Path]:
    """A model's config files in the order train.py composes them: its table's protocol (the PROTOCOL file
    beside it, if there is one), then the model's own file. A protocol alone is itself."""
    config = Path(config)
    protocol = config.with_name(PROTOCOL)
    return [protocol, config] if protocol.is_file() and config.name != PROTOCOL else [config]


def table_models(table: str, experiments: Optional[Path] = None) -> list[str]:
    """The models `table` has a config for, in MODELS order. SystemExit naming a config file that is not a model
    of MODELS (add it there, with its label, to put it in tables)."""
    folder = Path(experiments or EXPERIMENTS) / table
    names = {p.stem for p in folder.glob("*.yaml") if p.name != PROTOCOL}
    unknown = sorted(names - set(MODELS))
    if unknown:
        raise SystemExit(f"experiments/{table}/ has configs {unknown} that are not in experiments.configs.MODELS; "
                         f"add them there (and to LABELS) or remove them")
    return [m for m in MODELS if m in names]


def model_configs(table: str, model: str, experiments: Optional[Path] = None) -> list[Path]:
    """The config files of `model` in `table` (see with_protocol)."""
    return with_protocol(Path(experiments or EXPERIMENTS) / table / f"{model}.yaml")


def config_args(configs: Sequence[Path]) -> list[str]:
    """["--config", first, "--config", second, ...]: later files override earlier ones."""
    return [arg for config in configs for arg in ("--config", str(config))]


def compose_args(config: Path) -> list[str]:
    """The --config arguments that train one model config: its table's protocol, then the file itself."""
    return config_args(with_protocol(config))


def resolve(configs: Sequence[Path], overrides: Sequence[str] = ()) -> dict:
    """The config `train.py fit` builds from `configs` and `overrides` (["--key", "value", ...]), as a dict.

    SystemExit with the parser's message when they do not resolve (an unknown key, a wrong type)."""
    configs = [Path(c) for c in configs]
    cache_key = (tuple((str(c), c.read_bytes()) for c in configs), tuple(overrides))
    if cache_key not in _RESOLVED:
        if str(ROOT) not in sys.path:  # train.py and the packages its configs name live at the project root
            sys.path.insert(0, str(ROOT))
        import train

        out, err = io.StringIO(), io.StringIO()
        argv, sys.argv = sys.argv, ["train.py"]  # LightningCLI takes its arguments from `args`, not the runner's
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                train.main(args=["fit", *config_args(configs), *overrides, "--print_config"])
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
        finally:
            sys.argv = argv
        if code not in (0, None):
            lines = [line.strip() for line in err.getvalue().splitlines() if line.strip()]
            shown = " ".join(str(c) for c in configs)
            raise SystemExit(f"the config {shown} {' '.join(overrides)} does not resolve: "
                             + (" ".join(lines[-6:]) if lines else f"exit code {code}"))
        _RESOLVED[cache_key] = yaml.safe_load(out.getvalue())
    return json.loads(json.dumps(_RESOLVED[cache_key]))  # a copy: callers may edit it


def _without_added_defaults(node, top: bool = True):
    """A resolved model node without the ADDED_ARGUMENTS that hold their old-behaviour value (same type and value:
    0 is not False), in the model's own arguments and in those of the classes nested in them (its networks)."""
    if isinstance(node, list):
        return [_without_added_defaults(item, top=False) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: _without_added_defaults(v, top=False) for k, v in node.items()}
    init_args = node.get("init_args")
    if "class_path" not in node or not isinstance(init_args, dict):
        return node

    def old_behaviour(name, value) -> bool:
        for cls in (node["class_path"], "*") if top else (node["class_path"],):
            if (cls, name) in ADDED_ARGUMENTS:
                default = ADDED_ARGUMENTS[(cls, name)]
                return type(value) is type(default) and value == default
        return False

    return {**node, "init_args": {k: v for k, v in init_args.items() if not old_behaviour(k, v)}}


def run_key(resolved: dict) -> str:
    """12 hex digits of SHA-256 over the resolved config without its seed (JSON, keys sorted), and without the
    ADDED_ARGUMENTS at their old-behaviour values (in the model, its networks and every other class node); the
    REMOVED_OPTIONS count as present at the value they always had."""
    body = {k: v for k, v in resolved.items() if k != "seed_everything"}
    body = {k: _without_added_defaults(v, top=(k == "model")) for k, v in body.items()}
    for key, value in REMOVED_OPTIONS.items():  # keys the CLI no longer has count at the value every run had
        body.setdefault(key, value)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
