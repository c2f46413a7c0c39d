"""The tables' figures (experiments/figures.py) are drawn from the runs' numbers: bars and curves are the seeds' means
and stds (read back from the drawn artists), a run without a sample is left out with a note, not drawn as an empty
panel, and the modes of a 2D scatter are circles of 3 data stds around the true centres (callbacks/plots.py)."""

from __future__ import annotations

import statistics

import lightning as L
import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.patches import Circle, Rectangle

from callbacks import SampleScatter
from callbacks.plots import draw_samples_over_modes, load_points, points_path, save_points
from experiments import cache, figures, report
from tests.factories import quiet_trainer, tiny_model, tiny_ring

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run(model, seed, curve=None, **metrics):
    return {"model": model, "seed": seed, "key": "k", "status": "ok", "wall_s": 1.0, "metrics": metrics,
            "plots": [], **({"curve": curve} if curve is not None else {})}


def test_bars_are_the_seeds_mean_and_std_with_the_published_value_beside_its_model():
    hq, kl = {0: 80.0, 1: 90.0, 2: 73.0}, {0: 0.5, 1: 0.25, 2: 0.125}
    results = [run("gan", s, modes=8.0 - s, hq=hq[s], kl=kl[s]) for s in range(3)]
    results += [run("mgan", s, modes=8.0, hq=60.0 + 10 * s, kl=float("nan") if s else 0.01) for s in range(2)]
    published = [{"method": "GAN", "modes": "6.3 ± 0.5", "hq": 98.2, "kl": None, "source": "PacGAN Table 1 (10 runs)"},
                 {"method": "VEEGAN", "modes": 8, "hq": 52.9, "kl": None, "source": "VEEGAN Table 1"}]
    rows = report.aggregate(results, ["modes", "hq", "kl"])
    bars = figures.metric_bars(rows, ["modes", "hq", "kl"], published)
    gan = {metric: next(b for b in bars[metric] if b.model == "gan") for metric in bars}
    assert gan["hq"].mean == pytest.approx(statistics.mean(hq.values()))
    assert gan["hq"].std == pytest.approx(statistics.stdev(hq.values()))
    assert gan["kl"].mean == pytest.approx(statistics.mean(kl.values()))
    assert gan["modes"].published == [("PacGAN Table 1", 6.3)] and gan["hq"].published == [("PacGAN Table 1", 98.2)]
    assert gan["kl"].published == []  # the source has no KL for it: no marker
    mgan_kl = next(b for b in bars["kl"] if b.model == "mgan")
    assert (mgan_kl.mean, mgan_kl.counted, mgan_kl.seeds) == (0.01, 1, 2)  # the NaN seed is not averaged in

    fig = figures.draw_bars("ring8", bars)
    try:
        for ax, metric in zip(fig.axes, bars):
            widths = [p.get_width() for p in ax.patches if isinstance(p, Rectangle)]
            assert widths == pytest.approx([b.mean for b in bars[metric]])  # bar lengths: the seeds' means
            # the error bar of GAN (the first row, at y 0) spans mean ± the seeds' std
            (segment,) = [seg for c in ax.collections for seg in c.get_segments() if np.allclose(seg[:, 1], 0)]
            assert sorted(segment[:, 0]) == pytest.approx([gan[metric].mean - gan[metric].std,
                                                           gan[metric].mean + gan[metric].std])
            markers = [line for line in ax.lines if line.get_marker() not in (None, "None", "", "|")]
            assert [(float(m.get_xdata()[0]), float(m.get_ydata()[0])) for m in markers] == \
                [(v, 0.0) for _, v in gan[metric].published]  # VEEGAN has no row of ours: no marker
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="GAN's hq 'about 90' is not a number"):
        figures.metric_bars(rows, ["hq"], [{"method": "GAN", "hq": "about 90", "source": "x"}])


def test_curves_are_the_seeds_mean_with_a_std_band_and_runs_without_history_are_named():
    def curve(values, steps=(100, 200, 300)):
        return [{"g_step": s, "hq": v, "modes": 8.0} for s, v in zip(steps, values)]

    results = [run("gan", 0, curve([10.0, 50.0, 80.0]), hq=80.0), run("gan", 1, curve([20.0, 70.0, 90.0]), hq=90.0),
               run("gan", 2, hq=85.0),  # trained before histories were kept
               run("mgan", 0, curve([5.0, 6.0, 7.0, 8.0], steps=(100, 200, 300, 400)), hq=8.0),
               run("mgan", 1, curve([1.0, 2.0, 3.0]), hq=3.0)]
    curves, notes = figures.metric_curves(results, ["hq", "kl"])
    assert set(curves) == {"hq"}  # no run recorded a KL: no KL panel, no made-up points
    gan = curves["hq"]["gan"]
    assert gan.steps == [100, 200, 300] and gan.seeds == 2
    assert gan.means == pytest.approx([15.0, 60.0, 85.0])
    assert gan.stds == pytest.approx([statistics.stdev([10, 20]), statistics.stdev([50, 70]), statistics.stdev([80, 90])])
    mgan = curves["hq"]["mgan"]
    assert mgan.steps == [100, 200, 300] and mgan.note == "1 step not evaluated by every seed left out"
    assert notes == ["Curves figure: GAN seed 2 kept no per-evaluation history in result.json (trained before it was "
                     "recorded): left out of the curves, which average the other seeds."]

    fig = figures.draw_curves("ring8", curves, {"gan": 3, "mgan": 2})
    try:
        (ax,) = [a for a in fig.axes if a.get_ylabel()]
        drawn = [line for line in ax.lines if list(line.get_xdata()) == gan.steps and
                 list(line.get_ydata()) == pytest.approx(gan.means)]
        assert len(drawn) == 1  # GAN's line: the means at the steps both its seeds evaluated
        band = ax.collections[0].get_paths()[0].vertices  # GAN's band: mean ± std at each step, nothing else
        expected = {(s, m + d) for s, m, d in zip(gan.steps, gan.means, gan.stds)} | \
                   {(s, m - d) for s, m, d in zip(gan.steps, gan.means, gan.stds)}
        assert {(round(x, 6), round(y, 6)) for x, y in band} == {(round(x, 6), round(y, 6)) for x, y in expected}
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend == ["GAN (2 of 3 seeds)", "MGAN (2 seeds; HQ %: 1 step not evaluated by every seed left out)"]
    finally:
        plt.close(fig)

    _, notes = figures.metric_curves([run("gan", 0, hq=1.0)], ["hq"])
    assert notes and notes[0].startswith("Curves: no run of this table kept its per-evaluation history")


def test_a_run_without_a_sample_is_left_out_of_the_samples_figure_and_named_once(tmp_path):
    out = tmp_path / "table"
    centers, std = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0]]), 0.05
    results = [run("gan", s, modes=3.0, hq=90.0 + s, kl=0.01) for s in range(3)] + [run("mgan", 0, modes=2.0, hq=1.0, kl=1.0)]
    kept = figures.run_folder(out, results[0])
    kept.mkdir(parents=True)
    save_points(str(kept / "samples.npz"), centers[torch.arange(300) % 3] + std * torch.randn(300, 2), centers, std)
    results[0]["sample_points"] = "samples.npz"
    grid = figures.run_folder(out, results[2])  # an image table's grid, still in the run's log folder
    (grid / "runs/samples").mkdir(parents=True)
    plt.imsave(grid / "runs/samples/grid_g0000010.png", np.zeros((8, 8, 3)))
    results[2]["plots"] = ["runs/samples/grid_g0000010.png"]

    rows = report.aggregate(results, ["modes", "hq", "kl"])
    panels, notes = figures.sample_panels(out, results, [r["model"] for r in rows])
    assert [[(p.model, p.seed) for p in row] for row in panels] == [[("gan", 0), ("gan", 2)]]
    assert panels[0][0].points == kept / "samples.npz" and panels[0][1].image.name == "grid_g0000010.png"
    assert panels[0][0].title == "seed 0\n3 modes · HQ 90.0 % · KL 0.010"
    assert notes == ["Samples figure: no sample kept for GAN seed 1; MGAN seed 0: left out."]

    fig = figures.draw_samples("ring8", panels)
    try:
        shown = [ax for ax in fig.axes if ax.axison]
        assert [ax.get_title() for ax in shown] == [p.title for p in panels[0]]  # two panels, no empty one
        texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
        assert not any("not found" in t for t in texts)
    finally:
        plt.close(fig)

    _, written = report.write_table("ring8", out, results, {"metrics": ["modes", "hq", "kl"], "rows": []}, "", "h")
    text = (out / "ring8.md").read_text()
    assert text.count("no sample kept for GAN seed 1; MGAN seed 0") == 1
    assert "[final samples](ring8_samples.png)" in text and out / "ring8_samples.png" in written
    for r in results:  # no run with a sample: no samples figure (an old one would show other runs)
        r.pop("sample_points", None)
        r["plots"] = []
    report.write_table("ring8", out, results, {"metrics": ["modes", "hq", "kl"], "rows": []}, "", "h")
    assert not (out / "ring8_samples.png").exists() and "[final samples]" not in (out / "ring8.md").read_text()


def test_mode_circles_are_3_data_stds_around_the_true_centres_and_leave_the_samples_visible(tmp_path):
    L.seed_everything(0)
    data = tiny_ring(std=0.05)
    callback = SampleScatter(num_samples=200)
    trainer = quiet_trainer(callbacks=[callback], limit_val_batches=1, default_root_dir=str(tmp_path))
    trainer.validate(tiny_model("GAN"), datamodule=data, verbose=False)
    samples, centers, std = load_points(points_path(callback.last_path))  # kept beside the PNG the callback drew
    assert samples.shape == (200, 2) and std == 0.05 and torch.equal(centers, data.centers)

    fig, ax = plt.subplots()
    try:
        circles = draw_samples_over_modes(ax, samples, centers, std, marker_size=1.0)
        assert [c.center for c in circles] == [tuple(xy) for xy in data.centers.tolist()]
        assert all(isinstance(c, Circle) and c.get_radius() == pytest.approx(3 * 0.05) for c in circles)
        assert all(not c.get_fill() and c.get_linewidth() <= 1 and c.get_alpha() < 1 for c in circles)  # outlines
        (points,) = ax.collections
        assert np.allclose(points.get_offsets(), samples.numpy())  # every sample drawn
    finally:
        plt.close(fig)


def test_the_points_are_kept_beside_result_json_with_the_plot(tmp_path):
    folder = tmp_path / "run"
    (folder / "runs/samples").mkdir(parents=True)
    plt.imsave(folder / "runs/samples/scatter_g0000010.png", np.zeros((8, 8, 3)))
    save_points(str(folder / "runs/samples/scatter_g0000010.npz"), torch.zeros(5, 2), torch.ones(2, 2), 0.02)
    result = {"plots": ["runs/samples/scatter_g0000010.png"]}
    assert cache.keep_sample_plot(result, folder)
    assert result["sample_plot"] == "samples.png" and result["sample_points"] == "samples.npz"
    assert load_points(folder / "samples.npz")[2] == pytest.approx(0.02)
    assert not cache.keep_sample_plot(result, folder)  # nothing new to record
    # a result kept before points were: its points are added once the run folder has them
    legacy = {"plots": ["runs/samples/scatter_g0000010.png"], "sample_plot": "samples.png"}
    assert cache.keep_sample_plot(legacy, folder) and legacy["sample_points"] == "samples.npz"
