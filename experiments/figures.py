"""The figures of a table, drawn from its runs' result.json files (and the samples kept beside them):

- `<table>_samples.png`: the final samples, one row per model and one column per seed (or, with at most two seeds
  a model, the panels in rows of five), each panel titled with its run's figures (modes, HQ %, KL). 2D runs are
  drawn again from the points `callbacks.SampleScatter` keeps (the modes as thin translucent 3-std circles, which
  leave the samples visible); image runs show their final sample grid. A run with no sample kept is left out,
  never drawn as an empty panel; `write_figures` returns a note naming it for the table's text.
- `<table>_modes.png`: the final value of each metric of the table (modes, HQ %, KL, ...), one panel per metric and
  one bar per model: the mean over seeds with the seeds' sample std as error bar, and the published value of the
  same metric (experiments/published.yaml) as a marker beside the model it names.
- `<table>_curves.png`: each metric against the generator step, one line per model: the mean over seeds of the
  per-evaluation history each run's result.json keeps (`curve`), with a band of ± the seeds' sample std. A run
  that kept no history is left out and named in a note; no point is made up.

Each figure has a pure function that gathers its numbers (`sample_panels`, `metric_bars`, `metric_curves`), one
that draws them and returns the matplotlib figure (`draw_samples`, `draw_bars`, `draw_curves`), and
`write_figures` saves them. Aggregation is the table's (`report.mean_std`: NaNs left out, sample std).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from experiments.cache import code_state, sample_plot
from experiments.configs import LABELS, MODELS
from experiments.report import METRIC_LABELS, describes, mean_std, published_figure, source_name

AXIS_LABELS = {"modes": "modes captured", "hq": "high-quality samples (%)", "kl": "KL(generated ‖ true) over modes",
               "spread": "within-mode spread (in std)", "fid": "FID", "inception_score": "Inception score"}
TITLE_METRICS = ("modes", "hq", "kl")  # the figures of a run in its samples panel's title
SAMPLE_COLUMNS = 5  # seeds shown per model in the samples figure
PANEL_INCHES = 2.4
MARKER_SIZE = 1.0  # a sample's marker in the samples figure's panels (points^2)
PUBLISHED_MARKERS = ["D", "^", "s", "v", "P", "X", "*"]


def model_color(model: str):
    """The colour of `model` in every figure (tab20, its strong colours first, by the model's place in MODELS)."""
    import matplotlib

    index = MODELS.index(model) if model in MODELS else len(MODELS) + sum(map(ord, model))
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return matplotlib.colormaps["tab20"](order[index % 20])


def label(model: str) -> str:
    return LABELS.get(model, model)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seeds(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"


def _by_model(pairs: list[tuple[str, int]]) -> str:
    """"GAN seeds 0, 1; MGAN seed 2" from (model, seed) pairs, models in MODELS order."""
    models = sorted({m for m, _ in pairs}, key=lambda m: MODELS.index(m) if m in MODELS else len(MODELS))
    return "; ".join(f"{label(m)} {_seeds([s for mm, s in pairs if mm == m])}" for m in models)


# ---------------------------------------------------------------------------------- samples
@dataclass
class Panel:
    """One run's panel: its final samples as points to draw (`points`, SampleScatter's .npz) or as an image."""

    model: str
    seed: int
    title: str
    points: Optional[Path] = None
    image: Optional[Path] = None
    legacy_scatter: bool = False  # a scatter PNG drawn by the code of its time (the points were not kept)


def run_title(result: dict) -> str:
    """The seed and the run's final figures: "seed 3\\n8 modes · HQ 91.3 % · KL 0.0012"."""
    parts = []
    for metric in TITLE_METRICS:
        if metric not in result["metrics"]:
            continue
        value = result["metrics"][metric]
        if value is None or math.isnan(value):
            parts.append(f"{'modes' if metric == 'modes' else 'HQ' if metric == 'hq' else 'KL'} n/a")
        elif metric == "modes":
            parts.append(f"{value:.0f} modes" if float(value).is_integer() else f"{value:.1f} modes")
        elif metric == "hq":
            parts.append(f"HQ {value:.1f} %")
        else:
            parts.append(f"KL {value:.4f}" if 0 < abs(value) < 0.01 else f"KL {value:.3f}")
    return f"seed {result['seed']}" + ("\n" + " · ".join(parts) if parts else "")


def run_folder(out: Path, result: dict) -> Path:
    return out / "runs" / result["model"] / f"seed{result['seed']}-{result['key']}"


def sample_files(out: Path, result: dict) -> tuple[Optional[Path], Optional[Path]]:
    """The run's final samples at hand: (points, image), each None when absent. The copies kept beside result.json
    first (see cache.keep_sample_plot), else the files in the run's own log folder."""
    if not (result.get("sample_points") or result.get("sample_plot") or result.get("plots")):
        return None, None  # it recorded none (e.g. imported from train.py runs)
    folder = run_folder(out, result)
    kept_points = folder / result["sample_points"] if result.get("sample_points") else None
    kept_image = folder / result["sample_plot"] if result.get("sample_plot") else None
    plot = sample_plot(result)
    source = None if plot is None else (Path(plot) if Path(plot).is_absolute() else folder / plot)
    points = next((p for p in (kept_points, source and source.with_suffix(".npz")) if p and p.exists()), None)
    image = next((p for p in (kept_image, source) if p and p.exists()), None)
    return points, image


def sample_panels(out: Path, results: list[dict], models: list[str], columns: int = SAMPLE_COLUMNS
                  ) -> tuple[list[list[Panel]], list[str]]:
    """Per model of `models` with a sample at hand, the panels of its finished runs (by seed, up to `columns`), and
    notes for the table's text: the runs left out for want of a sample, those beyond `columns`, and the scatter
    PNGs shown as drawn at their time (runs trained before the points were kept)."""
    rows, missing, beyond, legacy = [], [], [], []
    for model in models:
        panels = []
        for r in sorted((r for r in results if r["model"] == model and r["status"] == "ok"), key=lambda r: r["seed"]):
            points, image = sample_files(out, r)
            if points is None and image is None:
                missing.append((model, r["seed"]))
            elif len(panels) == columns:
                beyond.append((model, r["seed"]))
            else:
                scatter = points is None and Path(sample_plot(r) or image.name).name.startswith("scatter")
                panels.append(Panel(model, r["seed"], run_title(r), points=points,
                                    image=None if points is not None else image, legacy_scatter=scatter))
                if scatter:
                    legacy.append((model, r["seed"]))
        if panels:
            rows.append(panels)
    notes = []
    if missing:
        notes.append(f"Samples figure: no sample kept for {_by_model(missing)}: left out.")
    if beyond:
        notes.append(f"Samples figure: the first {columns} seeds with samples of each model; not shown: "
                     f"{_by_model(beyond)}.")
    if legacy:
        notes.append(f"Samples figure: {_by_model(legacy)} kept their final scatter plot but not its points (trained "
                     "before the points were kept), so their panels show that plot as the run drew it, with its own "
                     "title and axes (the code of the time marked the modes with red crosses).")
    return rows, notes


def draw_samples(table: str, rows: list[list[Panel]]):
    """The samples figure of `rows` (see sample_panels): a model's panels side by side, one per seed, models one below
    the other and labelled at the left; when the models have few seeds each (at most SAMPLE_COLUMNS / 2), the panels
    run on in rows of up to SAMPLE_COLUMNS, the model in each panel's title. Returns the matplotlib figure."""
    import matplotlib.image as mpimg

    from callbacks.plots import MODE_RADIUS_STD, draw_samples_over_modes, load_points, scatter_legend_handles

    plt = _pyplot()
    per_model = max(len(panels) for panels in rows)
    matrix = len(rows) == 1 or 2 * per_model > SAMPLE_COLUMNS
    if matrix:
        cells = [(i, j, panel) for i, panels in enumerate(rows) for j, panel in enumerate(panels)]
        n_rows, n_cols = len(rows), per_model
    else:
        flat = [panel for panels in rows for panel in panels]
        n_rows = math.ceil(len(flat) / SAMPLE_COLUMNS)
        n_cols = math.ceil(len(flat) / n_rows)  # the rows as even as they can be
        cells = [(k // n_cols, k % n_cols, panel) for k, panel in enumerate(flat)]
    any_points = any(panel.points is not None for _, _, panel in cells)
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, layout="constrained",
                             figsize=(PANEL_INCHES * n_cols + (0.6 if matrix else 0.2),
                                      (PANEL_INCHES + 0.3) * n_rows + (0.8 if any_points else 0.4)))
    for ax in axes.flat:
        ax.axis("off")
    for i, j, panel in cells:
        ax = axes[i][j]
        ax.axis("on")
        if panel.points is not None:
            samples, centers, std = load_points(panel.points)
            draw_samples_over_modes(ax, samples, centers, std, MARKER_SIZE)
        else:
            ax.imshow(mpimg.imread(panel.image))
            for spine in ax.spines.values():
                spine.set_visible(False)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(panel.title if matrix else f"{textwrap.fill(label(panel.model), 30)}, {panel.title}", fontsize=8)
        if matrix and j == 0:
            ax.set_ylabel(textwrap.fill(label(panel.model), 22), fontsize=9, fontweight="bold")
    fig.suptitle(f"{table}: final samples" + (" (rows: models; columns: seeds)" if matrix and per_model > 1 else ""),
                 fontsize=10)
    if any_points:
        fig.legend(handles=scatter_legend_handles(6.0, MODE_RADIUS_STD), loc="outside lower center", ncols=2,
                   fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------------- final metrics
@dataclass
class Bar:
    """One model's bar in one metric's panel: the mean and sample std over `counted` of its `seeds` finished
    seeds (those with a finite value), and the published values of that metric for the method it names."""

    model: str
    mean: float
    std: float
    counted: int
    seeds: int
    published: list[tuple[str, float]] = field(default_factory=list)  # (source, value)


def metric_bars(rows: list[dict], metrics: list[str], published: list[dict]) -> dict[str, list[Bar]]:
    """Per metric with a value in some row, one Bar per row (model) with finished seeds, from the table's rows
    (report.aggregate). A published row goes beside the model whose label is its method (or which it names in a
    `model` key)."""
    bars: dict[str, list[Bar]] = {}
    for metric in metrics:
        if not any(row["seeds"] and not math.isnan(row[metric][0]) for row in rows if metric in row):
            continue
        bars[metric] = []
        for row in rows:
            if not row["seeds"]:
                continue
            pub = [(source_name(p["source"]), published_figure(p.get(metric), p["method"], metric)[0])
                   for p in published if describes(p, row)]
            bars[metric].append(Bar(row["model"], *row[metric], counted=row.get(f"{metric}_seeds", row["seeds"]),
                                    seeds=row["seeds"], published=[(s, v) for s, v in pub if v is not None]))
    return bars


def _value(value: float, metric: str) -> str:
    """A bar's value as the table writes it (modes and HQ % to 0.1, KL to 0.001, or 0.0001 under 0.01)."""
    if metric in ("modes", "hq"):
        return f"{value:.1f}"
    return f"{value:.4f}" if 0 < abs(value) < 0.01 else f"{value:.3f}"


def draw_bars(table: str, bars: dict[str, list[Bar]]):
    """One horizontal bar chart per metric, models down the side; returns the matplotlib figure."""
    plt = _pyplot()
    models = list(dict.fromkeys(b.model for metric_bars_ in bars.values() for b in metric_bars_))
    sources = list(dict.fromkeys(s for metric_bars_ in bars.values() for b in metric_bars_ for s, _ in b.published))
    marker = {s: PUBLISHED_MARKERS[i % len(PUBLISHED_MARKERS)] for i, s in enumerate(sources)}
    n_cols = len(bars) if len(bars) <= 3 else 2
    n_rows = math.ceil(len(bars) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.3 * n_cols + 1.9, n_rows * (0.34 * len(models) + 1.0) + 0.5),
                             sharey=True, squeeze=False, layout="constrained")
    fig.get_layout_engine().set(wspace=0.06, hspace=0.08)
    for ax in axes.flat[len(bars):]:
        ax.axis("off")
    y = {m: i for i, m in enumerate(models)}
    for ax, (metric, metric_bars_) in zip(axes.flat, bars.items()):
        # the values in a column just right of the panel, clear of the bars and markers
        reach = max([b.mean + (b.std if b.counted > 1 else 0) for b in metric_bars_ if not math.isnan(b.mean)]
                    + [v for b in metric_bars_ for _, v in b.published])
        column = ax.get_yaxis_transform()  # x in axes fraction, y in data
        ax.text(1.02, 1.0, "mean", transform=ax.transAxes, va="bottom", ha="left", fontsize=6.5, color="0.2",
                fontstyle="italic")
        for b in metric_bars_:
            if math.isnan(b.mean):
                ax.text(1.02, y[b.model], "n/a", transform=column, va="center", ha="left", fontsize=6.5, color="0.4")
                continue
            ax.barh(y[b.model], b.mean, xerr=b.std if b.counted > 1 else None, color=model_color(b.model), height=0.7,
                    error_kw={"elinewidth": 0.9, "capsize": 2.5, "ecolor": "0.15"})
            note = f"\n{b.counted} of {b.seeds} seeds" if b.counted < b.seeds else ""
            ax.text(1.02, y[b.model], _value(b.mean, metric) + note, transform=column, va="center", ha="left",
                    fontsize=6.5, color="0.2", linespacing=0.9)
            for source, value in b.published:
                ax.plot(value, y[b.model], marker=marker[source], markersize=5.5, markerfacecolor="white",
                        markeredgecolor="black", markeredgewidth=0.9, linestyle="none", zorder=3, clip_on=False)
        ax.set_xlabel(AXIS_LABELS.get(metric, metric), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
        ax.set_xlim(0, reach * 1.06 if reach > 0 else 1)
    seeds = {b.model: b.seeds for metric_bars_ in bars.values() for b in metric_bars_}
    axes[0][0].set_yticks(range(len(models)), [f"{label(m)} ({seeds[m]} seed{'s' if seeds[m] > 1 else ''})"
                                               for m in models], fontsize=8)
    axes[0][0].invert_yaxis()
    handles = [plt.Line2D([], [], marker=marker[s], markerfacecolor="white", markeredgecolor="black", linestyle="none",
                          label=f"published: {s}") for s in sources]
    fig.suptitle(f"{table}: final evaluation, mean ± sample std over seeds", fontsize=10)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=7, frameon=False)
    return fig


# ---------------------------------------------------------------------------------- curves
@dataclass
class Curve:
    """One model's curve of one metric: at each generator step every one of its `seeds` runs with a history
    evaluated, the mean and sample std of their values (NaNs left out, as in the table's cells); how many of the
    runs are stale (None: not asked), the seeds with a NaN at some step, and the steps left out for not being
    evaluated by every seed."""

    steps: list[int]
    means: list[float]
    stds: list[float]
    seeds: int
    stale: Optional[int] = None
    nan_seeds: list[int] = field(default_factory=list)
    dropped: int = 0

    @property
    def note(self) -> str:
        return "; ".join([f"{self.stale} stale"] * bool(self.stale) + self.metric_notes())

    def metric_notes(self) -> list[str]:
        return ([f"NaN at some steps: {_seeds(self.nan_seeds)}"] * bool(self.nan_seeds)
                + [f"{self.dropped} step{'s' if self.dropped > 1 else ''} not evaluated by every seed left out"]
                * bool(self.dropped))


def mean_curves(results: list[dict], metric: str, current: Optional[str] = None) -> dict[str, Curve]:
    """Per model, the Curve of `metric` over its finished runs that kept a history of it (`curve` in result.json),
    with `current` (the tree's code hash) counting the stale ones."""
    curves: dict[str, Curve] = {}
    for model in sorted(dict.fromkeys(r["model"] for r in results), key=lambda m: MODELS.index(m) if m in MODELS
                        else len(MODELS)):
        runs = [r for r in results if r["model"] == model and r["status"] == "ok" and r.get("curve")]
        per_run = [{e["g_step"]: e[metric] for e in r["curve"] if e.get(metric) is not None} for r in runs]
        runs, per_run = [r for r, v in zip(runs, per_run) if v], [v for v in per_run if v]
        if not runs:
            continue
        steps = sorted(set.intersection(*(set(values) for values in per_run)))
        if not steps:
            continue
        stats = [mean_std([values[s] for values in per_run]) for s in steps]
        curves[model] = Curve(
            steps, [m for m, _ in stats], [s for _, s in stats], len(runs),
            stale=None if current is None else sum(code_state(r, current) != "current" for r in runs),
            nan_seeds=[r["seed"] for r, values in zip(runs, per_run) if any(math.isnan(values[s]) for s in steps)],
            dropped=len(set.union(*(set(values) for values in per_run))) - len(steps))
    return curves


def metric_curves(results: list[dict], metrics: list[str], current: Optional[str] = None
                  ) -> tuple[dict[str, dict[str, Curve]], list[str]]:
    """The curves of each metric some run recorded ({metric: {model: Curve}}), and notes for the table's text on
    the finished runs that kept no history (left out of the curves)."""
    curves = {metric: mean_curves(results, metric, current) for metric in metrics}
    curves = {metric: c for metric, c in curves.items() if c}
    ok = [r for r in results if r["status"] == "ok"]
    without = [(r["model"], r["seed"]) for r in ok if not r.get("curve")]
    notes = []
    if without and len(without) == len(ok):
        notes.append("Curves: no run of this table kept its per-evaluation history in result.json (all were trained "
                     "before it was recorded), so there is no curves figure.")
    elif without:
        notes.append(f"Curves figure: {_by_model(without)} kept no per-evaluation history in result.json (trained "
                     "before it was recorded): left out of the curves, which average the other seeds.")
    return curves, notes


METRIC_RANGES = {"modes": (0.0, math.inf), "hq": (0.0, 100.0), "kl": (0.0, math.inf), "spread": (0.0, math.inf)}


def draw_curves(table: str, curves: dict[str, dict[str, Curve]], seeds: dict[str, int]):
    """One panel per metric against the generator step, one line per model with a band of ± the seeds' std (cut
    to the metric's range: no negative modes, HQ % or KL); `seeds`: the finished seeds per model (the legend says
    when a curve averages fewer). Returns the matplotlib figure."""
    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    n_cols = len(curves) if len(curves) != 4 else 2
    n_rows = math.ceil(len(curves) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.9 * n_cols + 0.3, 2.9 * n_rows + 0.9), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(curves):]:
        ax.axis("off")
    handles = {}
    for ax, (metric, by_model) in zip(axes.flat, curves.items()):
        low, high = METRIC_RANGES.get(metric, (-math.inf, math.inf))
        for model, c in by_model.items():
            color = model_color(model)
            (line,) = ax.plot(c.steps, c.means, color=color, linewidth=1.1)
            if c.seeds > 1:
                ax.fill_between(c.steps, [max(low, m - s) for m, s in zip(c.means, c.stds)],
                                [min(high, m + s) for m, s in zip(c.means, c.stds)], color=color, alpha=0.2,
                                linewidth=0)
            handles.setdefault(model, line)
        ax.set_xlabel("generator step", fontsize=8)
        ax.set_ylabel(AXIS_LABELS.get(metric, metric), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(linewidth=0.4, alpha=0.5)
        if max(step for c in by_model.values() for step in c.steps) >= 10000:
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
        if low > -math.inf:
            ax.set_ylim(bottom=low)
    fig.suptitle(f"{table}: evaluations during training, mean ± sample std over seeds", fontsize=10)
    fig.legend(list(handles.values()), [curve_legend(model, curves, seeds.get(model)) for model in handles],
               loc="outside lower center", ncols=min(3, len(handles)), fontsize=7, frameon=False)
    return fig


def curve_legend(model: str, curves: dict[str, dict[str, Curve]], finished: Optional[int]) -> str:
    """A model's legend entry: its label, the seeds its curves average (of its `finished` seeds) and what the
    curves leave out, by metric where it is one metric's: "GAN (2 of 3 seeds; 1 stale; KL: NaN at some steps:
    seed 1)"."""
    mine = {metric: by_model[model] for metric, by_model in curves.items() if model in by_model}
    counts = {metric: c.seeds for metric, c in mine.items()}
    most = max(counts.values())
    parts = [f"{most} of {finished} seeds" if finished is not None and most < finished else
             f"{most} seed{'s' if most > 1 else ''}"]
    parts += [f"{METRIC_LABELS.get(m, m)}: {n} seed{'s' if n > 1 else ''}" for m, n in counts.items() if n < most]
    stale = next((c.stale for c in mine.values() if c.seeds == most), None)
    parts += [f"{stale} stale"] if stale else []
    parts += [f"{METRIC_LABELS.get(m, m)}: {note}" for m, c in mine.items() for note in c.metric_notes()]
    return f"{label(model)} ({'; '.join(parts)})"


# ---------------------------------------------------------------------------------- files
def write_figures(out: Path, table: str, results: list[dict], rows: list[dict], metrics: list[str],
                  published: list[dict], current: Optional[str] = None) -> tuple[list[Path], list[str]]:
    """Writes the table's figures into `out` and returns their paths and the notes for the table's text. A figure
    with nothing to draw is not written, and an older file of that name is removed (it would show other runs)."""
    plt = _pyplot()
    written, notes = [], []
    models = [row["model"] for row in rows]

    def save(fig, name: str) -> None:
        path = out / f"{table}_{name}.png"
        fig.savefig(path, dpi=130)
        plt.close(fig)
        written.append(path)

    def none(name: str) -> None:
        (out / f"{table}_{name}.png").unlink(missing_ok=True)

    panels, sample_notes = sample_panels(out, results, models)
    notes += sample_notes
    if panels:
        save(draw_samples(table, panels), "samples")
    else:
        none("samples")
    bars = metric_bars(rows, metrics, published)
    if bars:
        save(draw_bars(table, bars), "modes")
    else:
        none("modes")
    curves, curve_notes = metric_curves(results, metrics, current)
    notes += curve_notes
    if curves:
        save(draw_curves(table, curves, {row["model"]: row["seeds"] for row in rows}), "curves")
    else:
        none("curves")
    return written, notes
