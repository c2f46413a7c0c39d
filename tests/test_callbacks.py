"""What every evaluation callback gets from `callbacks.base.EvaluationCallback`: no evaluation in
the sanity check, per-rank sample counts that sum to the total, values logged once merged, and
files in the run folder only (the logger's, else default_root_dir), never in the working directory."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks import (
    CodeModeAccuracy,
    EvaluationCallback,
    GeneratorModeShares,
    LatentTraversal,
    ModeCoverage,
    SampleScatter,
)
from callbacks.base import local_sample_count
from tests.factories import quiet_trainer, tiny_model, tiny_ring

WRITERS = {  # model -> callbacks, those that write files first, and the subfolder each writes to
    "MGAN": lambda: ([SampleScatter(num_samples=50), GeneratorModeShares(num_samples=40)], ["samples", "mixture"],
                     [ModeCoverage(num_samples=50)]),
    "InfoGAN": lambda: ([LatentTraversal(steps=3, num_noise=1)], ["traversal"],
                        [CodeModeAccuracy(num_samples=50, threshold=1e6)]),
}


def _validate(model_name: str, trainer_kwargs: dict, times: int = 1):
    L.seed_everything(0)
    writers, folders, others = WRITERS[model_name]()
    trainer = quiet_trainer(callbacks=[*writers, *others], limit_val_batches=1, **trainer_kwargs)
    model, data = tiny_model(model_name), tiny_ring()
    for _ in range(times):
        trainer.validate(model, datamodule=data, verbose=False)
    return trainer, writers, folders


@pytest.mark.parametrize("model_name", sorted(WRITERS))
def test_without_a_run_folder_nothing_is_written_to_the_working_directory(model_name, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.warns(UserWarning, match="writes no files: the run has no folder of its own") as record:
        trainer, writers, _ = _validate(model_name, {}, times=2)  # no logger, no default_root_dir
    assert list(cwd.iterdir()) == []
    # each writing callback says so once, not at every evaluation
    said = sorted(str(w.message).split()[0] for w in record if "writes no files" in str(w.message))
    assert said == sorted(type(c).__name__ for c in writers)
    assert all(c.last_path is None for c in writers)
    # the metrics are still measured and logged
    expected = {"MGAN": {"val/modes", "val/mixture/mode_purity"}, "InfoGAN": {"val/info/code_accuracy"}}[model_name]
    assert expected <= set(trainer.callback_metrics)


@pytest.mark.parametrize("model_name", sorted(WRITERS))
def test_files_go_to_the_loggers_folder_else_to_default_root_dir(model_name, tmp_path, monkeypatch):
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    logger = CSVLogger(str(tmp_path / "logs"), name="run")
    trainer, writers, folders = _validate(model_name, {"logger": logger, "default_root_dir": str(root)})
    run = tmp_path / "logs" / "run" / "version_0"
    assert trainer.log_dir == str(run)
    for folder in folders:  # one file per evaluation (and SampleScatter's points beside its plot)
        assert len([f for f in (run / folder).iterdir() if f.suffix != ".npz"]) == 1, folder
    assert all(c.last_path is None or c.last_path.startswith(str(run)) for c in writers)
    assert not root.exists() and list(cwd.iterdir()) == []

    # without a logger, the trainer's default_root_dir is the run folder
    trainer, writers, folders = _validate(model_name, {"default_root_dir": str(root)})
    for folder in folders:
        assert len([f for f in (root / folder).iterdir() if f.suffix != ".npz"]) == 1, folder
    assert list(cwd.iterdir()) == []


def test_a_logger_folder_that_is_the_working_directory_is_refused_too(tmp_path, monkeypatch):
    """A W&B-style logger whose save_dir is "." makes trainer.log_dir the working directory."""
    monkeypatch.chdir(tmp_path)
    callback = SampleScatter(num_samples=10)
    trainer = SimpleNamespace(log_dir=".", default_root_dir=str(tmp_path / "elsewhere"), is_global_zero=True)
    with pytest.warns(UserWarning, match="SampleScatter writes no files"):
        assert callback.output_path(trainer, "samples", "x.png") is None
    assert list(tmp_path.iterdir()) == []


def test_only_global_rank_zero_gets_a_path(tmp_path):
    callback = SampleScatter()
    rank = dict(log_dir=str(tmp_path / "run"), default_root_dir=str(tmp_path))
    assert callback.output_path(SimpleNamespace(is_global_zero=False, **rank), "samples", "x.png") is None
    assert not (tmp_path / "run").exists()
    path = callback.output_path(SimpleNamespace(is_global_zero=True, **rank), "samples", "x.png")
    assert path == os.path.join(str(tmp_path / "run"), "samples", "x.png") and (tmp_path / "run" / "samples").is_dir()


class _CountEvaluations(EvaluationCallback):
    def __init__(self):
        super().__init__()
        self.calls, self.sanity_checked = 0, False

    def on_sanity_check_end(self, trainer, pl_module):
        self.sanity_checked = True

    def evaluate(self, trainer, pl_module):
        assert not trainer.sanity_checking
        self.calls += 1


def test_the_sanity_check_does_not_evaluate():
    counter = _CountEvaluations()
    quiet_trainer(max_epochs=1, num_sanity_val_steps=1, limit_val_batches=1, callbacks=[counter]).fit(
        tiny_model("GAN"), datamodule=tiny_ring())
    assert counter.sanity_checked and counter.calls == 1  # the epoch-end validation only


@pytest.mark.parametrize("total", [1, 2, 7, 2500])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_per_rank_sample_counts_sum_to_the_total(total, world):
    counts = [local_sample_count(total, SimpleNamespace(world_size=world, global_rank=r)) for r in range(world)]
    assert sum(counts) == total and max(counts) - min(counts) <= 1


def test_values_are_logged_once_merged_and_kept():
    logged = []
    module = SimpleNamespace(log=lambda name, value, **kw: logged.append((name, value, kw)))
    callback = ModeCoverage()
    callback.log_values(module, {"kl": torch.tensor(0.25, dtype=torch.float64), "count": 3.0}, prog_bar=True)
    (kl_name, kl, kl_kw), (count_name, count, _) = logged
    assert (kl_name, count_name) == ("val/kl", "val/count")
    assert kl.dtype == torch.float32 and kl.item() == 0.25 and count == 3.0
    assert kl_kw == {"sync_dist": False, "prog_bar": True}  # already merged across ranks: not averaged again
    assert callback.last == {"kl": 0.25, "count": 3.0}


def test_a_mixture_callback_without_a_mixture_is_a_clear_error():
    trainer = SimpleNamespace(datamodule=None)
    with pytest.raises(ValueError, match=r"ModeCoverage needs a datamodule that describes its modes "
                                         r"\(centers, std, weights\), such as datamodules.Ring or Grid; got NoneType"):
        ModeCoverage().setup(trainer, None, "fit")
    with pytest.raises(ValueError, match=r"GeneratorModeShares needs a datamodule .* \(centers, std\)"):
        GeneratorModeShares().setup(trainer, SimpleNamespace(num_generators=2), "fit")


def test_run_record_follows_a_fit_to_its_end_and_records_the_final_evaluation(tmp_path):
    from callbacks import RunRecord, read_record
    from callbacks.run_record import finished_evaluation

    L.seed_everything(0)
    seen = []

    class Reader(L.Callback):  # reads the file the way a runner outside the process does
        def on_train_batch_end(self, trainer, *args):
            seen.append(read_record(tmp_path))

    record = RunRecord(every_s=0.0)
    trainer = quiet_trainer(max_steps=20, default_root_dir=tmp_path, limit_val_batches=1,
                            callbacks=[ModeCoverage(num_samples=50), Reader(), record])
    trainer.fit(tiny_model(), datamodule=tiny_ring())  # 5 batches (10 optimizer steps) an epoch: 2 validations
    steps = [r["global_step"] for r in seen if r]
    assert steps[0] == 0 and steps[-1] == 18 and all(r["status"] == "running" for r in seen if r)
    assert seen[6]["evaluation"]["g_step"] == 5  # the first epoch's validation, recorded while training went on
    final = read_record(tmp_path)
    assert final["status"] == "ended" and final["global_step"] == final["max_steps"] == 20
    assert final["g_steps"] == final["d_steps"] == 10 and final["evaluation"]["g_step"] == 10
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert set(logged) >= {"val/modes", "val/hq", "val/kl"}  # KL is NaN here (no high-quality sample): NaN == NaN
    assert json.dumps(final["evaluation"]["metrics"], sort_keys=True) == json.dumps(logged, sort_keys=True)
    assert finished_evaluation(final) == final["evaluation"]
    assert finished_evaluation({**final, "status": "interrupted"}) is None
    assert finished_evaluation({**final, "evaluation": {"g_step": 5, "metrics": {}}}) is None  # not the final weights
    assert not (tmp_path / "run.json.tmp").exists()


def test_run_record_says_why_a_fit_failed(tmp_path):
    from callbacks import RunRecord, read_record

    model = tiny_model()
    original = model.generator_loss

    def poisoned(real, fake, latent):
        loss, logs = original(real, fake, latent)
        return (loss * float("nan"), logs) if model.g_steps == 3 else (loss, logs)

    model.generator_loss = poisoned
    trainer = quiet_trainer(max_steps=20, default_root_dir=tmp_path, limit_val_batches=0, callbacks=[RunRecord()])
    with pytest.raises(Exception, match="g_loss is nan"):
        trainer.fit(model, datamodule=tiny_ring())
    record = read_record(tmp_path)
    assert record["status"] == "failed" and "g_loss is nan at generator step 3" in record["error"]
    assert record["evaluation"] is None


def test_run_record_of_a_fit_resumed_from_its_final_checkpoint_says_ended(tmp_path):
    """Such a fit trains nothing and Lightning skips on_train_end; the record must still say the run ended."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks import RunRecord, read_record

    L.seed_everything(0)
    trainer = quiet_trainer(max_steps=10, default_root_dir=tmp_path, limit_val_batches=0, enable_checkpointing=True,
                            callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True), RunRecord()])
    trainer.fit(tiny_model(), datamodule=tiny_ring())
    again = quiet_trainer(max_steps=10, default_root_dir=tmp_path, limit_val_batches=0, callbacks=[RunRecord()])
    again.fit(tiny_model(), datamodule=tiny_ring(), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    record = read_record(tmp_path)
    assert record["status"] == "ended" and record["g_steps"] == 5
