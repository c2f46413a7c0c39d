"""experiments/curve_summary.py: a window of a run's curve summarised, figures worked by hand, from a finished
run's result.json and from a training run's run record."""

from __future__ import annotations

import json

import pytest
import yaml

from experiments import curve_summary as cs

CURVE = [{"g_step": 1000, "modes": 8, "hq": 50.0, "kl": 0.1}, {"g_step": 2000, "modes": 6, "hq": 90.0, "kl": 0.5},
         {"g_step": 3000, "modes": 7, "hq": 70.0, "kl": float("nan")}, {"g_step": 4000, "modes": 8, "hq": 80.0, "kl": 0.3}]


def _run(tmp_path, name, finished):
    folder = tmp_path / "runs" / "gan" / name
    version = folder / "runs" / "ring8-gan" / "version_0"
    version.mkdir(parents=True)
    (version / "config.yaml").write_text(yaml.safe_dump({"data": {"class_path": "datamodules.Ring",
                                                                  "init_args": {"num_modes": 8}}}))
    if finished:
        (folder / "result.json").write_text(json.dumps({"status": "ok", "curve": CURVE}))
    else:
        (version / "run.json").write_text(json.dumps({"status": "running", "g_steps": 3500, "history": CURVE[:3]}))
    return folder


def test_window_figures_by_hand():
    s = cs.summarise(CURVE, 8, first=2000, last=4000)
    # steps 2000-4000: modes 6, 7, 8 -> mean 7, one of three with all 8; KL 0.5 and 0.3 (NaN left out)
    assert s["evaluations"] == 3 and s["from"] == 2000 and s["to"] == 4000
    assert s["modes_mean"] == pytest.approx(7.0) and s["all_modes_share"] == pytest.approx(1 / 3)
    assert s["kl_mean"] == pytest.approx(0.4) and s["kl_median"] == pytest.approx(0.4)
    assert s["hq_mean"] == pytest.approx(80.0) and s["last"]["g_step"] == 4000
    assert cs.summarise(CURVE, 8, first=5000) == {"evaluations": 0}


def test_finished_and_training_runs(tmp_path):
    done, running = _run(tmp_path, "seed0-abc", True), _run(tmp_path, "seed1-abc", False)
    assert cs.data_modes(done) == 8
    text = cs.main([str(done), str(running), "--to-step", "3000"])
    # finished, steps 1000-3000: modes 8, 6, 7 -> 7.00, 1 of 3 with 8 (33 %), KL 0.1 and 0.5 -> 0.300 (0.300)
    assert "| gan/seed0-abc | finished | 3 (1,000–3,000) | 7.00 | 33 % (of 8) | 0.300 (0.300) | 70.0 | 7 / 70.0 / nan |" in text
    assert "| gan/seed1-abc | training, at generator step 3,500 | 3 (1,000–3,000) | 7.00 |" in text
    with pytest.raises(SystemExit, match="--to-step 10 is before --from-step 20"):
        cs.main([str(done), "--from-step", "20", "--to-step", "10"])
    with pytest.raises(SystemExit, match="neither a finished result.json"):
        cs.main([str(tmp_path / "runs" / "gan")])


def test_mode_count_of_a_committed_result_without_its_log_folder(tmp_path):
    """A result.json alone (the runs/ log folder is not committed): the count comes from its table's configs when
    they resolve to the run's key, the config it trained with; with another key nothing says which data it had."""
    from experiments import runner

    (run,) = runner.plan("grid25_pacgan", ["gan"], [0], [])
    folder = tmp_path / "seed0"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({"status": "ok", "curve": CURVE, "table": "grid25_pacgan",
                                                    "model": "gan", "key": run.key}))
    assert cs.data_modes(folder) == 25  # a 5 x 5 grid
    assert "| 7.25 | 0 % (of 25) |" in cs.main([str(folder)])  # modes 8, 6, 7, 8: none has all 25
    (folder / "result.json").write_text(json.dumps({"status": "ok", "curve": CURVE, "table": "grid25_pacgan",
                                                    "model": "gan", "key": "000000000000"}))
    assert cs.data_modes(folder) is None
    assert "| 7.25 | – |" in cs.main([str(folder)])
