"""A table from its runs' results: per model the mean and sample std over seeds of every metric, rendered as
Markdown and CSV beside the published rows, its figures (experiments/figures.py), and optionally a W&B table."""

from __future__ import annotations

import csv
import math
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Optional

import yaml

from experiments.configs import LABELS, MODELS
from experiments.cache import (CHANGES_SHOWN, CODE_DIRS, CODE_FILES, ROOT, changes_since, code_state, commit,
                               cpu_text, run_threads, shown_path)

METRIC_LABELS = {"modes": "modes", "hq": "HQ %", "kl": "KL", "fid": "FID", "inception_score": "IS"}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value); NaNs are ignored."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(results: list[dict], metrics: list[str]) -> list[dict]:
    """One row per model (in MODELS order): per-metric mean/std over its successful seeds."""
    rows = []
    order = {m: i for i, m in enumerate(MODELS)}
    for model in sorted({r["model"] for r in results}, key=lambda m: order.get(m, len(order))):
        runs = [r for r in results if r["model"] == model]
        ok = [r for r in runs if r["status"] == "ok"]
        row = {"model": model, "label": LABELS.get(model, model), "seeds": len(ok),
               "seed_list": sorted(r["seed"] for r in ok), "failed": sorted(r["seed"] for r in runs if r["status"] != "ok"),
               "failed_logs": [r["log"] for r in runs if r["status"] != "ok"],
               "imported": sorted(r["seed"] for r in ok if r.get("imported")),
               "code": [{k: r.get(k) for k in ("seed", "code_hash", "commit", "restamped")} for r in ok]}
        for metric in metrics:
            values = [r["metrics"].get(metric, float("nan")) for r in ok]
            row[metric] = mean_std(values)
            # seeds whose value is missing or NaN (a metric added after they ran, a NaN figure): the cell
            # says how many seeds its mean is over
            row[f"{metric}_seeds"] = sum(v is not None and not math.isnan(v) for v in values)  # as mean_std counts
        row["wall_s"] = mean_std([r["wall_s"] for r in ok])[0]
        rows.append(row)
    return rows


def published_figure(value, method: str, metric: str) -> tuple[Optional[float], Optional[float]]:
    """A published cell as numbers: (value, error) from "6.3 ± 0.5", (value, None) from a plain number, (None,
    None) for a missing one. ValueError for anything else (it must be the source's number)."""
    if value is None:
        return None, None
    if isinstance(value, (int, float)):
        return float(value), None
    try:
        parts = [float(part.strip()) for part in str(value).split("±")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise ValueError(f"published.yaml: {method}'s {metric} {value!r} is not a number (or 'number ± error')")
    return parts[0], parts[1] if len(parts) == 2 else None


def source_name(source: str) -> str:
    """A published row's source without its parenthesised detail: "VEEGAN Table 1 (5 runs)" -> "VEEGAN Table 1"."""
    return source.split(" (")[0].strip()


def describes(pub: dict, row: dict) -> bool:
    """Whether published row `pub` is the figure of our table row `row`: its `model` key names the row's model, or
    its method is the row's label."""
    return pub.get("model") == row["model"] or pub["method"] == row["label"]


Z_WITHIN = 2.0  # |difference| / combined standard error at or under which ours and a published figure agree


def published_comparison(rows: list[dict], metrics: list[str], published: list[dict],
                         standard_errors: dict[str, int], suffix: str = "") -> list[str]:
    """Markdown lines comparing each of our rows with the published figures of its method whose "±" is a standard
    error over runs (their source is in `standard_errors`, {source name: runs}): per metric our mean and standard
    error (sample std / sqrt(seeds); with one seed, or a std of 0, the published runs' std, their s.e. x
    sqrt(runs), over sqrt(seeds)), the published value and standard error, the difference and z = difference /
    sqrt(ours² + published²), and whether |z| <= Z_WITHIN. Empty when no row has such a figure. z is a rough guide,
    not a test: a standard error from a few seeds is itself uncertain. `suffix` follows our rows' labels."""
    lines = []
    for row in rows:
        for pub in published:
            runs = standard_errors.get(source_name(pub["source"]))
            if not row["seeds"] or runs is None or not describes(pub, row):
                continue
            for metric in metrics:
                value, error = published_figure(pub.get(metric), pub["method"], metric)
                mean, std = row.get(metric, (float("nan"), float("nan")))
                n = row.get(f"{metric}_seeds", row["seeds"])
                if value is None or error is None or not n or math.isnan(mean):
                    continue
                # a spread of ours we can use: the seeds' std; with one seed, or seeds that all agree (8 of 8 modes
                # every time), the published runs' own spread instead (their s.e. x sqrt(runs))
                own = n > 1 and std > 0
                ours = (std if own else error * math.sqrt(runs)) / math.sqrt(n)
                combined = math.sqrt(ours ** 2 + error ** 2)
                z = (mean - value) / combined if combined > 0 else (0.0 if mean == value else math.inf)
                digits = 3 if metric == "kl" else 1
                lines.append("| " + " | ".join([
                    row["label"] + suffix, f"{pub['method']} ({source_name(pub['source'])}, {runs} runs)",
                    METRIC_LABELS.get(metric, metric),
                    f"{mean:.{digits}f} ± {ours:.{digits}f} ({n} seeds)" if own else
                    f"{mean:.{digits}f} ± {ours:.{digits}f} ({n} seed{'s' if n > 1 else ''}; s.e. from the published "
                    f"runs' spread)",
                    str(pub[metric]), f"{mean - value:+.{digits}f}", f"{z:+.1f}",
                    ("yes" if abs(z) <= Z_WITHIN else "no")]) + " |")
    if not lines:
        return []
    return ["", f"Against the published figures whose ± is a standard error over runs: z = (ours - published) / "
                f"sqrt(ours' s.e.² + published s.e.²), ours' s.e. = sample std / sqrt(seeds) (for one seed, or seeds that all "
                f"agree, the published runs' std, s.e. x sqrt(runs), stands in for ours); "
                f"\"within\" = |z| <= {Z_WITHIN:g}. A rough guide, not a test: a few seeds' s.e. is itself uncertain.", "",
            "| ours | published | metric | ours (mean ± s.e.) | published (± s.e.) | difference | z | within |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |", *lines]


def _fmt(mean: float, std: float, seeds: int, metric: str, counted: Optional[int] = None) -> str:
    """mean ± std to the metric's digits; with `counted` < `seeds`, how many of the row's seeds the figure is over."""
    if math.isnan(mean):
        return "–"
    digits = {"modes": 1, "hq": 1, "kl": 3}.get(metric, 3)
    if metric == "kl" and 0 < abs(mean) < 0.01:
        digits = 4
    counted = seeds if counted is None else counted
    text = f"{mean:.{digits}f} ± {std:.{digits}f}" if counted > 1 else f"{mean:.{digits}f}"
    return text + (f" ({counted} of {seeds} seeds)" if counted < seeds else "")


def restamp_note(record: dict) -> str:
    """One sentence on how a run was re-stamped (the table's footnote)."""
    old = f"code {record['from_code_hash']}" if record.get("from_code_hash") else \
        f"unknown code (commit {record.get('from_commit') or 'not recorded'})"
    if record.get("own_files"):
        return (f"re-stamped from {old} to {record['to_code_hash']} at commit {record.get('at_commit')}: none of the "
                f"{len(record['own_files'])} files its run depends on changed (experiments/cache.py, run_code_files)")
    checks = ", ".join(f"seed {c['seed']} ({c['folder']})" for c in record.get("checks", []))
    shortened = [c for c in record.get("checks", []) if c.get("trainer_max_steps")]
    if shortened:
        compared = ", ".join(str(c.get("evaluations_compared")) for c in shortened)
        return (f"re-stamped from {old} to {record['to_code_hash']} at commit {record.get('at_commit')}: rerun with "
                f"that code to trainer step {shortened[0]['trainer_max_steps']:,} only, {checks} recorded at each "
                f"evaluation both made ({compared}) the cached figures exactly; the rest of the cached run is not "
                f"compared")
    unshown = sorted({m for c in record.get("checks", []) for m in c.get("not_compared", [])})
    return (f"re-stamped from {old} to {record['to_code_hash']} at commit {record.get('at_commit')}: rerun with that code, "
            f"{checks} recorded metrics identical to the cached ones"
            + (f" (not compared, since the cached runs predate them and the row does not show them: "
               f"{', '.join(unshown)})" if unshown else ""))


def changes_note(entry: dict, state: str, code: list[dict]) -> Optional[str]:
    """For a stale run: the hashed files changed between its code and this tree (cache.changes_since), from its
    commit, or for a recorded hash from any clean commit among `code` that recorded the same hash (their hashed
    files are the same); None where git cannot tell."""
    commits = [entry.get("commit")]
    if state == "stale":
        commits += [e.get("commit") for e in code if e.get("code_hash") == entry["code_hash"]]
    for commit_text in commits:
        changes = changes_since(commit_text)
        if changes is None:
            continue
        which = f"code {entry['code_hash']}" if state == "stale" else f"commit {commit_text}"
        if not changes:
            return (f"{which}: no hashed file changed since commit {commit_text}" +
                    (" (the hash differs by files git does not track)" if state == "stale" else
                     " (its code was not recorded; it is likely the current one)"))
        lines = sum(int(n) for c in changes for n in re.findall(r"[+-](\d+)", c))
        shown = sorted(changes, key=lambda c: -sum(int(n) for n in re.findall(r"[+-](\d+)", c)))[:CHANGES_SHOWN]
        return (f"{which}: since commit {commit_text} the hashed code changed in {len(changes)} file"
                f"{'s' if len(changes) > 1 else ''} ({lines} lines added or removed), most in {', '.join(shown)}")
    return None


def code_cell(code: list[dict], current: str, notes: Optional[list[str]] = None) -> str:
    """Which code trained a row's runs, against the current tree's hash `current`: "current", "stale (code
    <hash>)", "stale (code unknown; commit <c>)", "current, re-stamped [n]", or "mixed: ..." with the seeds of
    each. With `notes`, re-stamp details become numbered footnotes appended to it (without, they are inline), and
    so do, for stale runs, the hashed files changed since their commit where git can tell (cache.changes_since)."""
    parts: dict[str, list[int]] = {}
    for entry in sorted(code, key=lambda e: e["seed"]):
        state = code_state(entry, current)
        if state == "current":
            record = entry.get("restamped")
            if record and record.get("to_code_hash") == current:
                note = restamp_note(record)
                if notes is not None:
                    if note not in notes:
                        notes.append(note)
                    label = f"current, re-stamped [{notes.index(note) + 1}]"
                else:
                    label = "current, re-stamped from " + (f"code {record['from_code_hash']}" if record.get("from_code_hash")
                                                           else f"unknown code (commit {record.get('from_commit')})")
            else:
                label = "current"
        elif state == "stale":
            label = f"stale (code {entry['code_hash']})"
        else:
            label = f"stale (code unknown; commit {entry.get('commit') or 'not recorded'})"
        note = changes_note(entry, state, code) if notes is not None and state != "current" else None
        if note is not None:
            if note not in notes:
                notes.append(note)
            label += f" [{notes.index(note) + 1}]"
        parts.setdefault(label, []).append(entry["seed"])
    if not parts:
        return "–"
    if len(parts) == 1:
        return next(iter(parts))
    return "mixed: " + "; ".join(f"{label} seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"
                                 for label, seeds in parts.items())


def refresh_block(results: list[dict], metrics: list[str], pub: dict) -> list[str]:
    """Lines for the tables whose published.yaml entry has `batchnorm_refresh` (the authors evaluated after
    refreshing the generator's BatchNorm statistics): our final figures after the same refresh, from the runs that
    recorded it (experiments/batchnorm_refresh.record), with the comparison against the published figures."""
    settings = pub.get("batchnorm_refresh")
    if not settings:
        return []
    key = "batchnorm_refresh"
    ok = [r for r in results if r["status"] == "ok"]
    done = [{**r, "metrics": r[key]["metrics"]} for r in ok if r.get(key)]
    head = (f"Final evaluation after the authors' BatchNorm refresh ({settings.get('updates', 50)} more "
            f"running-statistics updates of G's BatchNorm, weights frozen, {settings.get('batch', 100)} latents a "
            f"block, m blocks for PacGANm; then "
            f"{int(settings.get('samples', 2500)):,} samples from latents of seed {settings.get('latent_seed', 2333)}), "
            f"applied to each run's last checkpoint by experiments/batchnorm_refresh.py: {len(done)} of {len(ok)} "
            "finished runs (a run whose checkpoint was gone when its table was written has none). The table above "
            "evaluates with the statistics training left; training is the same either way.")
    if not done:
        return ["", head]
    rows = aggregate(done, metrics)
    left = {r["model"]: [] for r in done}
    for r in done:
        left[r["model"]].append(r[key]["metrics_left"])
    lines = ["", head, "", "| model | seeds | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics)
             + " | same latents, statistics left by training (modes / HQ % / KL) |", "|" + " --- |" * (len(metrics) + 3)]
    for row in rows:
        same = left[row["model"]]
        lefts = " / ".join(_fmt(*mean_std([f.get(m, float("nan")) for f in same]), len(same), m)
                           for m in ("modes", "hq", "kl"))
        lines.append(f"| {row['label']} (ours, refreshed) | {row['seeds']} | "
                     + " | ".join(_fmt(*row[m], row["seeds"], m, row.get(f"{m}_seeds")) for m in metrics)
                     + f" | {lefts} |")
    comparison = published_comparison(rows, metrics, pub.get("rows", []), pub.get("standard_errors") or {},
                                      suffix=" (refreshed)")
    return lines + comparison


LATE_FRACTION = 0.1  # the last tenth of a run's evaluations
LATE_MIN_EVALUATIONS = 50  # shown for runs evaluated at least this often (the per-epoch protocols)


def late_training(results: list[dict], metrics: list[str], fraction: float = LATE_FRACTION,
                  min_evaluations: int = LATE_MIN_EVALUATIONS) -> list[str]:
    """Lines for the table on the end of training rather than its last evaluation alone, for the models whose
    finished runs all kept a curve of at least `min_evaluations` evaluations: per run the mean of each metric over
    its last `fraction` of evaluations, then mean ± sample std over seeds; and the fewest modes any evaluation saw
    with the share of evaluations below the most modes any run captured. A generator that wanders between
    collapsed and not shows it here, where one final snapshot per seed can land anywhere."""
    order = {m: i for i, m in enumerate(MODELS)}
    top = max((e["modes"] for r in results if r["status"] == "ok" for e in r.get("curve") or []
               if e.get("modes") is not None), default=None)
    rows = []
    for model in sorted({r["model"] for r in results}, key=lambda m: order.get(m, len(order))):
        runs = [r for r in results if r["model"] == model and r["status"] == "ok"]
        if not runs or any(len(r.get("curve") or []) < min_evaluations for r in runs):
            continue
        late = [r["curve"][-max(1, round(fraction * len(r["curve"]))):] for r in runs]
        cells = []
        for metric in metrics:
            means = [mean_std([e.get(metric, float("nan")) for e in tail])[0] for tail in late]
            cells.append(_fmt(*mean_std(means), len(runs), metric))
        modes = [e["modes"] for r in runs for e in r["curve"] if e.get("modes") is not None]
        if modes and top is not None:
            below = sum(m < top for m in modes)
            cells += [f"{min(modes):g}", f"{below} of {len(modes)} ({100 * below / len(modes):.0f} %)"]
        else:
            cells += ["–", "–"]
        evaluations = sorted({len(r["curve"]) for r in runs})
        rows.append(f"| {LABELS.get(model, model)} (ours) | {len(runs)} | "
                    f"{'/'.join(map(str, evaluations))} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    below_text = f"below {top:g} modes, the most any run captured" if top is not None else "below the most modes"
    return ["", f"End of training: per run the mean over its last {fraction:.0%} of evaluations, then mean ± sample "
                f"std over seeds (the table above reads the last evaluation alone, as the papers do); the fewest modes "
                f"at any evaluation, and the evaluations {below_text}.", "",
            "| model | seeds | evaluations / run | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics)
            + (f" | fewest modes | evaluations below {top:g} |" if top is not None else " | fewest modes | – |"),
            "|" + " --- |" * (len(metrics) + 5), *rows]


def render_markdown(table: str, rows: list[dict], metrics: list[str], published: list[dict], header: str = "",
                    current_code: Optional[str] = None, figures: Optional[list[Path]] = None,
                    figure_notes: Optional[list[str]] = None, standard_errors: Optional[dict[str, int]] = None,
                    extra: Optional[list[str]] = None) -> str:
    """The table; with `current_code` (the tree's code hash) a "code" column marks the runs trained by other code;
    with `standard_errors` (published.yaml's) the comparison with the published figures that are means ± standard
    errors follows (published_comparison); `figures` (files beside the table) are linked under it, followed by
    `figure_notes` (what they leave out)."""
    cols = ["model", "seeds", *[METRIC_LABELS.get(m, m) for m in metrics], "wall s / run",
            *(["code"] if current_code else []), "source"]
    lines = [f"# {table}", "", header, "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    notes: list[str] = []
    for row in rows:
        cells = [row["label"] + " (ours)", str(row["seeds"])]
        cells += [_fmt(*row[m], row["seeds"], m, row.get(f"{m}_seeds")) for m in metrics]
        cells += ["–" if math.isnan(row["wall_s"]) else f"{row['wall_s']:.0f}"]
        if current_code:
            cells.append(code_cell(row.get("code", []), current_code, notes))
        cells += ["this repository, seeds " + ",".join(map(str, row["seed_list"])) if row["seeds"] else "no finished run"]
        if row.get("imported"):
            cells[-1] += f" (imported from train.py runs: seeds {','.join(map(str, row['imported']))}; see their result.json)"
        if row["failed"]:
            cells[-1] += f"; failed seeds {row['failed']} (logs: {', '.join(row['failed_logs'])})"
        lines.append("| " + " | ".join(cells) + " |")
    for pub in published:
        cells = [pub["method"], "", *[("–" if pub.get(m) is None else str(pub.get(m))) for m in metrics], "",
                 *([""] if current_code else []), pub["source"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Ours: mean ± sample standard deviation over seeds of the final evaluation. Published rows as "
                  "their sources report them (see experiments/published.yaml)."]
    lines += published_comparison(rows, metrics, published, standard_errors or {})
    lines += extra or []  # blocks after the comparison: refresh_block, late_training
    if current_code:
        lines += ["", f"Code: \"current\" = trained (or re-stamped) with the code of the tree that wrote this table, hash "
                      f"{current_code} (the *.py files of {', '.join(d + '/' for d in CODE_DIRS)} and "
                      f"{', '.join(CODE_FILES)}); \"stale\" = trained by other code (its hash shown), or by code not "
                      "recorded (runs from before code hashes were recorded; the commit they record is shown). "
                      "`--rerun-stale` retrains the stale runs."]
        lines += [f"[{i}] {note}." for i, note in enumerate(notes, 1)]
    if figures or figure_notes:
        names = {"samples": "final samples", "modes": "final metrics", "curves": "training curves"}
        links = [f"[{names.get(p.stem.removeprefix(table + '_'), p.stem)}]({p.name})" for p in figures or []]
        lines += ["", "Figures: " + (", ".join(links) if links else "none") + "."]
        lines += [f"- {note}" for note in figure_notes or []]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict], metrics: list[str], published: list[dict],
              current_code: Optional[str] = None) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "seeds", "failed_seeds", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")],
                    "wall_s_per_run", "source", *(["code"] if current_code else [])])
        for row in rows:
            w.writerow([row["label"], row["seeds"], " ".join(map(str, row["failed"])),
                        *[v for m in metrics for v in row[m]], row["wall_s"], "ours",
                        *([code_cell(row.get("code", []), current_code)] if current_code else [])])
        for pub in published:
            w.writerow([pub["method"], "", "", *[x for m in metrics for x in (pub.get(m), "")], "", pub["source"],
                        *([""] if current_code else [])])


def log_table_to_wandb(table: str, rows: list[dict], metrics: list[str], out: Path) -> None:
    import wandb

    sys.path.insert(0, str(ROOT))
    from callbacks.wandb_logger import resolve_wandb_mode

    columns = ["model", "seeds", *[f"{m}_{s}" for m in metrics for s in ("mean", "std")], "wall_s_per_run"]
    data = [[r["label"], r["seeds"], *[v for m in metrics for v in r[m]], r["wall_s"]] for r in rows]
    run = wandb.init(project="gan-mode-collapse", group=table, job_type="table", name=f"{table}-table",
                     mode=resolve_wandb_mode("auto"), dir=str(out))
    run.log({f"{table}/table": wandb.Table(columns=columns, data=data)})
    run.finish()



# ---------------------------------------------------------------------------------- the table's files
def published(table: str, experiments: Path) -> dict:
    """The published rows to compare `table` with and the metrics it reports, from `experiments`/published.yaml."""
    published_all = yaml.safe_load((experiments / "published.yaml").read_text())
    # the CPU-sized protocol of a benchmark is compared with that benchmark's published rows
    return (published_all.get(table) or published_all.get(table.removesuffix("_cpu"))
            or {"metrics": ["modes", "hq", "kl"], "rows": []})


def _thread_counts(results: list[dict]) -> dict[str, int]:
    """How many of the finished runs used each recorded thread count."""
    counts: dict[str, int] = {}
    for r in results:
        if r["status"] == "ok":
            label = run_threads(r) or "not recorded"
            counts[label] = counts.get(label, 0) + 1
    return counts


def _cpu_counts(results: list[dict]) -> dict[str, int]:
    """How many of the finished runs computed on each recorded CPU (cache.cpu_identity; a continued run counts under
    each CPU its attempts ran on, "and" joining them); empty while no run recorded one. Figures are bit-exact only
    on the same CPU kernels, so a re-stamp check or a rerun on another CPU may differ without any code change."""
    finished = [r for r in results if r["status"] == "ok"]
    if not any(r.get("cpu") for r in finished):
        return {}
    counts: dict[str, int] = {}
    for r in finished:
        cpus = [a.get("cpu") for a in r.get("resumed") or []] + [r.get("cpu")]
        labels = list(dict.fromkeys(cpu_text(c) for c in cpus))
        label = " and ".join(labels)
        counts[label] = counts.get(label, 0) + 1
    return counts


def _input_counts(results: list[dict]) -> dict[str, int]:
    """How many of the finished runs used each recorded input file (runner.input_files), as "path sha256 <hash>
    (test accuracy 97.81 %)" labels; the runs that recorded none count under "not recorded" once any run did."""
    counts: dict[str, int] = {}
    finished = [r for r in results if r["status"] == "ok"]
    if not any(r.get("inputs") for r in finished):
        return counts
    for r in finished:
        for path, identity in (r.get("inputs") or {"": None}).items():
            if identity is None:
                label = "not recorded"
            else:
                accuracy = identity.get("test_accuracy")
                label = f"{path} sha256 {identity.get('sha256')}" + (
                    f" (test accuracy {100 * accuracy:.2f} %)" if isinstance(accuracy, (int, float)) else "")
            counts[label] = counts.get(label, 0) + 1
    return counts


def _counted(title: str, counts: dict[str, int]) -> str:
    """ "<title>: <label> (<n> runs); ... . " for the header, or nothing where `counts` is empty."""
    if not counts:
        return ""
    return f"{title}: " + "; ".join(f"{label} ({n} run{'s' if n > 1 else ''})" for label, n in counts.items()) + ". "


def table_header(table: str, seeds: list[int], models: list[str], out: Path, overrides: list[str], report_only: bool,
                 results: list[dict], current: str, missing: list[str], table_models: Optional[list[str]] = None,
                 in_progress: Optional[dict[str, str]] = None, others: int = 0) -> str:
    """The paragraph under the table's title: the command that writes it, the commits, machine and thread counts
    of its runs, whether they were trained by the current code (hash `current`), the runs not trained yet and, of
    those, the interrupted ones with how far they got (`in_progress`: {run: runner.interrupted_summary}); `others`:
    how many of the runs were finished by other invocations in the folder (their models and seeds are in the
    command)."""
    n_stale = sum(code_state(r, current) != "current" for r in results if r["status"] == "ok")
    thread_counts = _thread_counts(results)
    seed_args = f"--seeds {len(seeds)}" if seeds == list(range(len(seeds))) else f"--seed-list {','.join(map(str, seeds))}"
    return (f"Command: `python experiments/reproduce.py {table} {seed_args}"
            + (f" --models {','.join(models)}" if models != (table_models or MODELS) else "")
            + (f" --out {shown_path(out)}" if out != (ROOT / "results" / table).resolve() else "")
            + "".join(f" --set {shlex.quote(f'{a[2:]}={b}')}" for a, b in zip(overrides[::2], overrides[1::2]))
            + (" --report-only" if report_only else "") + "`"
            + (f" (with {others} run{'s' if others > 1 else ''} finished in the folder by other invocations)" if others
               else "") + ". "
            + (f"Runs trained at commit {', '.join(sorted({r.get('commit') or 'unknown' for r in results}))}; "
               if results else "No run finished yet; ")
            + f"table written at commit {commit()}; {_machine()}. "
            + _counted("Threads per run", thread_counts) + _counted("CPU per run", _cpu_counts(results))
            + _counted("Input files", _input_counts(results))
            + f"Code: hash {current}"
            + (f"; {n_stale} of {sum(r['status'] == 'ok' for r in results)} runs stale (see the code column)."
               if n_stale else "; every run trained (or re-stamped) with it." if thread_counts else ".")
            + (f" Not run yet ({len(missing)}): {', '.join(missing)}." if missing else "")
            + (f" Of those, interrupted and to be continued with the code they started with ({len(in_progress)}): "
               + "; ".join(f"{name} {summary}" for name, summary in in_progress.items()) + "."
               if in_progress else ""))


def write_table(table: str, out: Path, results: list[dict], pub: dict, header_text: str, current: str,
                use_wandb: bool = False) -> tuple[list[dict], list[Path]]:
    """Writes `table`.md, `table`.csv and the figures into `out` (and logs the table to W&B with `use_wandb`);
    returns the rows and the files written."""
    from experiments.figures import write_figures  # it draws from this module's aggregation

    metrics = pub["metrics"]
    rows = aggregate(results, metrics)
    figures, figure_notes = write_figures(out, table, results, rows, metrics, pub["rows"], current)
    (out / f"{table}.md").write_text(render_markdown(table, rows, metrics, pub["rows"], header_text, current_code=current,
                                                     figures=figures, figure_notes=figure_notes,
                                                     standard_errors=pub.get("standard_errors"),
                                                     extra=refresh_block(results, metrics, pub)
                                                     + late_training(results, metrics)))
    write_csv(out / f"{table}.csv", rows, metrics, pub["rows"], current_code=current)
    if use_wandb:
        log_table_to_wandb(table, rows, metrics, out)
    return rows, [out / f"{table}.md", out / f"{table}.csv", *figures]


def _machine() -> str:
    import platform

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001
        gpu = "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}"

