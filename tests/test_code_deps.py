"""A run's own code (experiments/cache.py, run_code_files): the hashed files its figures depend on, found from its
config and the import statements, checked against the files whose functions a real fit calls."""

from __future__ import annotations

import ast
import inspect
import sys
import threading
from pathlib import Path

import pytest

import train
from experiments import cache, runner
from experiments.configs import compose_args

ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_closure_follows_imports_through_a_package_s_reexports_and_inside_functions(tmp_path):
    """Worked by hand on a made-up tree: models.A names models/a.py (re-exported by the package), which imports
    models/helpers.py at module level and callbacks/late.py inside a function; models/b.py (exported too) and
    callbacks/unused.py are reached by nothing; `from . import parts` is the submodule; train.py is always in."""
    _write(tmp_path, {
        "train.py": "from models import Base\n",
        "models/__init__.py": "from .base import Base\nfrom .a import A\nfrom .b import B\n",
        "models/base.py": "class Base: ...\n",
        "models/a.py": "from .base import Base\nfrom .helpers import twice\n\nclass A(Base):\n"
                       "    def f(self):\n        from callbacks.late import late\n        return late\n",
        "models/b.py": "from .base import Base\nclass B(Base): ...\n",
        "models/helpers.py": "from datamodules import parts\ndef twice(x): return 2 * x\n",
        "callbacks/__init__.py": "from .late import late\nfrom .unused import unused\n",
        "callbacks/late.py": "def late(): ...\n",
        "callbacks/unused.py": "def unused(): ...\n",
        "datamodules/__init__.py": "from . import parts\n",
        "datamodules/parts.py": "X = 1\n",
    })
    files = [p.relative_to(tmp_path).as_posix() for p in cache.module_closure(["models.A"], tmp_path)]
    assert files == ["callbacks/late.py", "datamodules/parts.py", "models/a.py", "models/base.py", "models/helpers.py",
                     "train.py"]
    assert [p.relative_to(tmp_path).as_posix() for p in cache.module_closure(["models.b.B"], tmp_path)] == [
        "models/b.py", "models/base.py", "train.py"]


def test_every_hashed_module_only_defines_at_import_and_every_package_init_only_reexports():
    """What makes run_code_files enough: a module no import path of the run leads to is still imported (train.py
    imports the packages), so at import it must do nothing but define (imports, functions, classes, assignments
    to names, a guarded import); and a package's __init__.py must only re-export, or its own code would be missed
    when an import through it counts as one of the defining module."""
    def defines(node: ast.stmt) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return True
        if isinstance(node, ast.Expr):
            return isinstance(node.value, ast.Constant)  # a docstring
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            return all(isinstance(t, (ast.Name, ast.Tuple)) for t in targets)  # not an attribute of another module
        if isinstance(node, ast.Try):
            return all(defines(n) for n in [*node.body, *[n for h in node.handlers for n in h.body]])
        return False

    for path in cache.code_files():
        if path.name == "train.py":  # always among a run's files
            continue
        for node in ast.parse(path.read_text()).body:
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert defines(node), f"{where} does more than define at import: {ast.unparse(node)[:80]}"
            if path.name == "__init__.py":
                assert isinstance(node, (ast.Import, ast.ImportFrom)) or (
                    isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) or (
                    isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]), \
                    f"{where}: a package's __init__.py only re-exports"


# one config per model class and per kind of callback: the two monitors and the diversity metrics (grid25's
# TTUR + rebalance), entropy and mode seeking in the base, the PacGAN protocol's networks, VEEGAN's protocol
TRACED = [("ring8", m) for m in ("gan", "gan_entropy", "gan_mode_seeking", "wgan_gp", "unrolled_gan",
                                 "minibatch_gan", "mgan", "mdgan", "infogan", "d2gan", "veegan", "pacgan2")] + [
    ("grid25", "gan_ttur_rebalance"), ("ring8_pacgan", "pacgan2"), ("grid25_veegan", "veegan")]


@pytest.mark.parametrize("table,model", TRACED)
def test_a_fit_calls_functions_of_its_run_s_files_only(table, model, tmp_path, monkeypatch):
    """Independent of the import reading: a short real fit (two epochs of 3 batches, each with its evaluations and
    a checkpoint, then one more epoch resumed from it) under a profiler that records the file of every function
    called; each hashed file called must be among run_code_files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    (run,) = runner.plan(table, [model], [0], [])
    hashed = {str(p) for p in cache.code_files()}
    called: set[str] = set()

    def profile(frame, event, arg):
        # CO_OPTIMIZED: a function, not a module or class body run by an import
        if event == "call" and frame.f_code.co_filename in hashed and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
            called.add(frame.f_code.co_filename)

    small = ["--trainer.accelerator", "cpu", "--data.init_args.batches_per_epoch", "3",
             "--data.init_args.batch_size", "32", "--trainer.max_steps", "-1"]
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        train.main(args=["fit", *compose_args(run.config), *small, "--trainer.max_epochs", "2"])
        ckpt = next(tmp_path.glob("runs/**/last.ckpt"))
        train.main(args=["fit", *compose_args(run.config), *small, "--trainer.max_epochs", "3",
                         "--ckpt_path", str(ckpt)])
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    own = {str(p) for p in cache.run_code_files(run)}
    assert called, "the profiler saw no call"
    assert called <= own, f"called but not among the run's files: {sorted(called - own)}"
