"""One self-contained HTML page on an experiment (figures embedded as base64 PNG data URIs, inline
CSS, nothing fetched), and the same figures as PNG files next to it."""

from __future__ import annotations

import base64
import collections
import datetime
import html
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from . import figures
from .analysis import (HV_MAX_EVALS, HV_MAX_OBJECTIVES, REF_MARGIN, Front, Objective, choose_objectives,
                       default_direction, match_predictions, pareto_front, top_trials)
from .architectures import architecture_figure, format_value
from .reading import (PREDICTIONS_FILE, ExperimentRecord, Prediction, Trial, find_experiment, load_experiment,
                      load_predictions)

__all__ = ["ReportFigure", "build_page", "write_report", "PAGE_NAME"]

_logger = logging.getLogger(__name__)

PAGE_NAME = "report.html"
_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 1.5em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 900px; }
.meta, .file { color: #666; font-size: 0.9em; }
.tops { display: flex; flex-wrap: wrap; gap: 0.5em 1.5em; }
table { border-collapse: collapse; font-size: 0.85em; } th, td { border: 1px solid #ddd; padding: 2px 6px; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.front td { background: #fdeaea; } code { font-size: 0.95em; }
"""


@dataclass(frozen=True)
class ReportFigure:
    """One figure of the page: ``name`` is its PNG file's stem, ``data`` the PNG bytes."""

    name: str
    alt: str
    caption: str
    data: bytes


def write_report(experiment: Union[str, Path], output: Optional[Path] = None, objectives: Optional[str] = None,
                 minimize: bool = False, top: int = 5) -> Path:
    """Write the report of ``experiment`` (a directory or an id, see :func:`find_experiment`).

    Parameters
    ----------
    output
        The folder for ``report.html`` and the PNG files (default:
        ``nni-diffusionnag-report-<id>`` in the current directory).
    objectives, minimize
        See :func:`choose_objectives`.
    top
        How many of the best architectures to draw.

    Returns
    -------
    The path of the page.
    """
    record = load_experiment(find_experiment(str(experiment)))
    chosen = choose_objectives(record, objectives, minimize)
    output = Path(output) if output is not None else Path(f"nni-diffusionnag-report-{record.experiment_id}")
    page, figs = build_page(record, chosen, default_direction(record, chosen, minimize), top=top,
                            automatic=objectives is None)
    output.mkdir(parents=True, exist_ok=True)
    for fig in figs:
        (output / f"{fig.name}.png").write_bytes(fig.data)
    path = output / PAGE_NAME
    path.write_text(page, encoding="utf-8")
    _logger.info("report of experiment %s: %s (and %d PNG files next to it)", record.experiment_id, path, len(figs))
    return path


def build_page(record: ExperimentRecord, objectives: List[Objective], default_mode: str, top: int = 5,
               automatic: bool = False) -> Tuple[str, List[ReportFigure]]:
    """The HTML of the page and its figures; ``default_mode`` is the direction of ``default``
    (the best-so-far and the top trials use it whatever the objectives)."""
    exp_id = html.escape(record.experiment_id)
    finished = record.finished()
    predictions = load_predictions(record.directory)
    pairs = match_predictions(finished, predictions or [])
    figs: List[ReportFigure] = []
    body: List[str] = []

    def figure(name: str, fig, alt: str, caption: str) -> None:
        item = ReportFigure(name, alt, caption, figures.png(fig))
        figs.append(item)
        data = base64.b64encode(item.data).decode("ascii")
        body.append(f'<figure id="{name}"><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
                    f'<figcaption>{caption} <span class="file">({name}.png)</span></figcaption></figure>')

    counts = collections.Counter(t.status for t in record.trials)
    statuses = ", ".join(f"{n} {html.escape(s)}" for s, n in counts.items())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body.append(f"<h1>Experiment {exp_id}: DiffusionNAG report</h1>")
    body.append(f'<p class="meta">{html.escape(record.name or "")} {html.escape(record.experiment_type)} experiment in '
                f"<code>{html.escape(str(record.directory))}</code>: {len(record.trials)} trials"
                f"{' (' + statuses + ')' if statuses else ''}, {len(finished)} with a final metric. "
                f"Written {when}.</p>")
    body.append(f"<h2>Objectives of {exp_id}</h2><ul>")
    body += [f"<li><b>{html.escape(o.name)}</b>: {_past(o.mode)} ({html.escape(o.why)})</li>" for o in objectives]
    body.append("</ul>")
    if automatic and len(objectives) > 1:
        body.append("<p>Chosen automatically: <code>default</code> and every other key that all final metrics "
                    "report as a number, those treated as costs (minimised). Choose others with "
                    "<code>--objectives NAME:max,NAME:min</code>.</p>")

    body.append(f"<h2>1. Best so far in {exp_id}</h2>")
    unscored = sum(t.value("default") is None for t in finished)
    figure("progress", figures.progress_figure(finished, default_mode), "best default so far against trial number",
           f"Each dot is a trial's final <code>default</code> ({_past(default_mode)}); the line is the best so far. "
           "Trials are numbered in the order they ended"
           + (f"; {unscored} finished trial(s) without a numeric default are not drawn." if unscored else "."))

    body.append(f"<h2>2. Pareto front of {exp_id}</h2>")
    front = None
    if len(objectives) == 1:
        body.append(f"<p>One objective (<code>{html.escape(objectives[0].name)}</code>): the front is the best trial, "
                    "shown by the best-so-far above. Name more with <code>--objectives</code> for a front.</p>")
    else:
        front = pareto_front(finished, objectives)
        _front_section(front, len(finished), figure, body)

    body.append(f"<h2>3. Surrogate predictions in {exp_id}</h2>")
    _predictions_section(predictions, pairs, len(finished), figure)

    body.append(f"<h2>4. Top architectures of {exp_id}</h2>")
    _top_section(top_trials(finished, default_mode, top), default_mode, figure, body)

    body.append(f"<h2>5. All trials of {exp_id}</h2>")
    body.append(_trials_table(record, finished, front, pairs))
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>DiffusionNAG report: experiment {exp_id}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    return page, figs


def _front_section(front: Front, n_finished: int, figure, body: List[str]) -> None:
    names = ", ".join(f"<code>{html.escape(o.short)}</code>" for o in front.objectives)
    left_out = f" {front.skipped} finished trial(s) lack an objective and are left out." if front.skipped else ""
    if not len(front.trials):
        body.append(f"<p>No finished trial reports every objective ({names}).</p>")
        return
    shown = front.objectives[: figures.MAX_PANEL_OBJECTIVES]
    if len(front.objectives) == 2:
        what = "Every finished trial; red: the Pareto front, connected along the boundary of the region it dominates."
    else:
        what = (f"Pairwise panels of {', '.join(html.escape(o.name) for o in shown)}: every finished trial, the Pareto "
                f"front in all {len(front.objectives)} objectives in red.")
    figure("front", figures.front_figure(front), "Pareto front",
           f"{what} A trial is on the front when no other is at least as good in every objective ({names}) and "
           f"better in one.{left_out}")
    if front.curve is None:
        body.append(f"<p>The hypervolume over trials is drawn for up to {HV_MAX_OBJECTIVES} objectives (its exact "
                    f"computation grows too costly beyond); name at most {HV_MAX_OBJECTIVES} with "
                    "<code>--objectives</code>.</p>")
        return
    ref = ", ".join(f"{html.escape(o.name)} = {v:.4g}" for o, v in zip(front.objectives, front.ref))
    sampled = ("" if len(front.curve_index) == len(front.trials) else
               f" Evaluated at {HV_MAX_EVALS} evenly spaced trials (the exact hypervolume in three objectives is "
               "costly).")
    figure("hypervolume", figures.hypervolume_figure(front, n_finished),
           "hypervolume of the front against trial number",
           "The hypervolume of the front of the trials ended so far: the measure of the objective region they "
           f"dominate, up to the reference point ({ref}), which is each objective's worst observed value moved "
           f"{REF_MARGIN:.0%} of its observed range further from the best (by {REF_MARGIN:.0%} of the value when "
           f"all trials agree).{sampled}")


def _top_section(best: List[Trial], default_mode: str, figure, body: List[str]) -> None:
    if not best:
        body.append("<p>No trial has a numeric <code>default</code> yet.</p>")
        return
    body.append(f"<p>The {len(best)} best trials by <code>default</code> ({_past(default_mode)}). A NAS-Bench-201 cell "
                "is drawn as its DAG, nodes 0 (input) to 3 (output), each edge labelled by its operation, "
                "<code>none</code> edges left out; any other space as its decisions in order.</p>")
    body.append('<div class="tops">')
    for rank, trial in enumerate(best, start=1):
        title = f"#{rank}: trial {trial.trial_id}, default = {trial.value('default'):.4g}"
        if trial.sample is None:
            fig = figures.note_figure("The architecture of this trial is not in its parameters.", title)
        else:
            fig = architecture_figure(trial.sample, title)
        metrics = ", ".join(f"{k} = {format_value(v)}" for k, v in (trial.metric or {}).items())
        figure(f"top-{rank}", fig, f"architecture of trial {trial.trial_id}",
               f"Trial {html.escape(trial.trial_id)} ({html.escape(trial.status)}): {html.escape(metrics)}.")
    body.append("</div>")


def _past(mode: str) -> str:
    return "maximised" if mode == "maximize" else "minimised"


def _predictions_section(predictions: Optional[List[Prediction]], pairs: Sequence[Tuple[Trial, Prediction]],
                         n_finished: int, figure) -> None:
    path = html.escape(str(PREDICTIONS_FILE))
    title = "surrogate predictions"
    if predictions is None:
        figure("predictions", figures.note_figure(
            f"No surrogate predictions: {PREDICTIONS_FILE} is absent from the experiment directory (the DiffusionNAG "
            "search writes it; other strategies and tuners do not).", title), "no surrogate predictions",
            f"The search's surrogate predictions would be read from <code>{path}</code>.")
        return
    if not pairs:
        figure("predictions", figures.note_figure(
            f"None of the {len(predictions)} predictions in {PREDICTIONS_FILE} is of the architecture of a finished "
            "trial with a numeric default.", title), "no matched surrogate predictions",
            f"Predictions read from <code>{path}</code>.")
        return
    figure("predictions", figures.predictions_figure(pairs), "surrogate predictions against observed default",
           "The surrogate's prediction for each finished trial's architecture (mean ± std, in the units of "
           f"<code>default</code>), as the search wrote it to <code>{path}</code> when it proposed the architecture, "
           f"against the trial's observed <code>default</code>; dashed: prediction = observed. {len(pairs)} of "
           f"{n_finished} finished trials matched ({len(predictions)} predictions in the file).")


def _trials_table(record: ExperimentRecord, finished: List[Trial], front: Optional[Front],
                  pairs: Sequence[Tuple[Trial, Prediction]]) -> str:
    keys = record.metric_keys()
    predictions = {id(t): p for t, p in pairs}
    on_front = {id(t) for t, on in zip(front.trials, front.mask) if on} if front is not None else set()
    number = {id(t): i + 1 for i, t in enumerate(finished)}
    rows = finished + [t for t in record.trials if t.metric is None]
    head = ["#", "trial", "status", "architecture", *keys] + (["predicted"] if predictions else []) + (
        ["front"] if front is not None else [])
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for t in rows:
        arch = ("" if t.sample is None else
                ", ".join(f"{html.escape(str(k))}={html.escape(format_value(v))}" for k, v in t.sample.items()))
        cells = [f'<td class="num">{number.get(id(t), "")}</td>', f"<td>{html.escape(t.trial_id)}</td>",
                 f"<td>{html.escape(t.status)}</td>", f"<td><code>{arch}</code></td>"]
        for k in keys:
            value = (t.metric or {}).get(k, "")
            cells.append(f'<td class="num">{html.escape(format_value(value))}</td>')
        if predictions:
            p = predictions.get(id(t))
            cells.append(f'<td class="num">{"" if p is None else f"{p.mean:.4g} ± {p.std:.2g}"}</td>')
        if front is not None:
            cells.append(f"<td>{'yes' if id(t) in on_front else ''}</td>")
        css = ' class="front"' if id(t) in on_front else ""
        out.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
