"""The progress display: the run folder's version and the losses on the bar; one line per evaluation where the
output is not a terminal."""

import logging

from lightning.pytorch.loggers import CSVLogger

from callbacks import ModeCoverage, ProgressBar
from tests.factories import quiet_trainer, tiny_model, tiny_ring


def _fit(tmp_path, bar: ProgressBar, caplog=None):
    trainer = quiet_trainer(max_epochs=2, logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=1,
                            callbacks=[ModeCoverage(num_samples=64), bar], enable_progress_bar=True,
                            limit_val_batches=1)
    model = tiny_model()
    lightning_log = logging.getLogger("lightning.pytorch")
    if caplog is not None:
        lightning_log.addHandler(caplog.handler)
    try:
        trainer.fit(model, datamodule=tiny_ring())
    finally:
        if caplog is not None:
            lightning_log.removeHandler(caplog.handler)
    return trainer, model


def test_the_bar_shows_the_run_folder_version_and_the_losses(tmp_path):
    bar = ProgressBar(lines=False)
    trainer, model = _fit(tmp_path, bar)
    shown = bar.get_metrics(trainer, model)
    assert shown["version"] == trainer.loggers[0].version == 0 and "v_num" not in shown
    assert shown["g_step"] == model.g_steps
    assert float(shown["d_loss"]) == float(f"{float(trainer.callback_metrics['train/d_loss']):.3g}")
    assert "g_loss" in shown


def test_without_a_terminal_it_prints_a_line_per_evaluation_and_draws_no_bar(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bar = ProgressBar(lines=True)
    trainer, model = _fit(tmp_path, bar, caplog)
    assert bar.is_disabled
    lines = sorted({r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")})
    assert len(lines) == 2  # one per epoch-end validation (each record may reach caplog by two routes)
    assert lines[-1].startswith(f"epoch 1, generator step {model.g_steps}: d_loss ")
    assert "modes " in lines[-1] and "hq " in lines[-1]


def test_by_default_it_draws_the_bar_only_in_a_terminal(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert ProgressBar().lines and ProgressBar().is_disabled
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not ProgressBar().lines
