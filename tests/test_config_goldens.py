"""Every experiment config resolves to its stored golden: `train.py fit --config <table>/protocol.yaml
--config <table>/<model>.yaml --print_config` (the model's file alone where its table has no protocol).

The goldens (tests/goldens/configs/<table>/<model>.yaml) are the fully resolved configs, library
defaults included. They pin what each run trains, so a reorganisation of the YAML files (shared
protocol files, per-model differences) can be shown to change nothing. Where a difference is
intended, regenerate them and say why in the commit:

    GAN_UPDATE_GOLDENS=1 python -m pytest tests/test_config_goldens.py

A Lightning, jsonargparse or W&B upgrade can change the defaults printed for their classes; the
failure message names the Lightning version each side was printed with.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

import pytest
import yaml

import train
from experiments.configs import PROTOCOL, with_protocol

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "tests" / "goldens" / "configs"
CONFIGS = sorted(p.relative_to(ROOT / "experiments") for p in (ROOT / "experiments").glob("*/*.yaml")
                 if p.parent.name not in ("sweeps",) and p.name != PROTOCOL)
UPDATE = os.environ.get("GAN_UPDATE_GOLDENS") == "1"


def print_config(config: Path, capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "argv", ["train.py"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train.main(args=["fit", *[a for c in with_protocol(ROOT / "experiments" / config) for a in ("--config", str(c))],
                         "--print_config"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_every_experiment_config_has_a_golden():
    assert len(CONFIGS) >= 36
    stored = sorted(p.relative_to(GOLDENS) for p in GOLDENS.glob("*/*.yaml"))
    assert UPDATE or stored == CONFIGS, "goldens and configs differ: regenerate (see the module docstring)"


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_resolves_to_its_golden(config, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing in the resolved config may depend on the working directory
    printed = print_config(config, capsys, monkeypatch)
    golden = GOLDENS / config
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(printed)
    expected = golden.read_text()
    assert yaml.safe_load(printed) == yaml.safe_load(expected), (
        f"experiments/{config} no longer resolves to {golden.relative_to(ROOT)} "
        f"(printed with {expected.splitlines()[0].lstrip('# ')}, now {printed.splitlines()[0].lstrip('# ')}):\n"
        + "".join(difflib.unified_diff(expected.splitlines(True), printed.splitlines(True), "golden", "now", n=2))
    )


@pytest.mark.parametrize("protocol", sorted((ROOT / "experiments").glob(f"*/{PROTOCOL}")), ids=lambda p: p.parent.name)
def test_a_protocol_holds_only_model_arguments_every_model_accepts(protocol):
    """A model file's class_path keeps the protocol's model arguments its class accepts and drops the others without
    a word, so an argument that only some classes accept would silently vanish from the others' runs."""
    shared = set((yaml.safe_load(protocol.read_text())["model"].get("init_args") or {}))
    for golden in sorted((GOLDENS / protocol.parent.name).glob("*.yaml")):
        accepted = set(yaml.safe_load(golden.read_text())["model"]["init_args"])
        assert shared <= accepted, f"{golden.stem} does not accept {sorted(shared - accepted)} of {protocol.name}"
