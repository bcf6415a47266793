"""The report's figures as matplotlib ``Figure`` objects, rendered to PNG bytes with the Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` and never through ``pyplot``: no global figure
state, and the caller's backend is left as it is (a report made inside a notebook changes nothing).
"""

from __future__ import annotations

import io
import itertools
import textwrap
from typing import List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .analysis import Front, best_so_far, spearman
from .reading import Prediction, Trial

__all__ = ["png", "note_figure", "progress_figure", "front_figure", "hypervolume_figure", "predictions_figure",
           "MAX_PANEL_OBJECTIVES"]

DPI = 100
MAX_PANEL_OBJECTIVES = 4  # pairwise panels of the first 4 objectives: 6 panels, still readable
_FRONT = "tab:red"
_TRIAL = "tab:blue"


def png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (the Agg canvas, whatever the process's backend)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def note_figure(text: str, title: Optional[str] = None) -> Figure:
    """A figure holding only a short note (a section with nothing to plot still shows its figure)."""
    fig = Figure(figsize=(6.4, 1.4))
    ax = fig.add_subplot()
    ax.axis("off")
    if title:
        ax.set_title(title)
    ax.text(0.5, 0.5, textwrap.fill(text, 90), ha="center", va="center", fontsize=10, color="0.3",
            transform=ax.transAxes)
    return fig


def progress_figure(finished: List[Trial], mode: str) -> Figure:
    """Each trial's ``default`` (dots) and the best so far (line), against the trial's number in
    order of end."""
    points = [(i + 1, t.value("default")) for i, t in enumerate(finished) if t.value("default") is not None]
    if not points:
        return note_figure("No trial has reported a final 'default' metric yet.", "best default so far")
    x, y = (np.array(v, dtype=np.float64) for v in zip(*points))
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    ax.scatter(x, y, s=18, color=_TRIAL, alpha=0.6, label="trial")
    ax.step(x, best_so_far(y, mode), where="post", color=_FRONT, lw=2, label="best so far")
    ax.set_xlabel("trial (in order of end)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"default ({'max' if mode == 'maximize' else 'min'})")
    ax.set_title(f"best default so far: {_fmt(best_so_far(y, mode)[-1])} after {len(finished)} trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if mode == "maximize" else "upper right", fontsize=8)  # below/above the best
    return fig


def front_figure(front: Front) -> Figure:
    """Two objectives: every trial, the front highlighted and connected. More: pairwise panels of
    the first MAX_PANEL_OBJECTIVES, the front (in all objectives) highlighted in each."""
    names = [o.short for o in front.objectives]
    m = len(names)
    if m == 2:
        fig = Figure(figsize=(6.4, 4.6))
        ax = fig.add_subplot()
        _front_panel(ax, front, 0, 1, connect=True)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"Pareto front: {int(front.mask.sum())} of {len(front.trials)} trials")
        return fig
    pairs = list(itertools.combinations(range(min(m, MAX_PANEL_OBJECTIVES)), 2))
    cols = min(3, len(pairs))
    rows = int(np.ceil(len(pairs) / cols))
    fig = Figure(figsize=(4.0 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (i, j) in zip(axes, pairs):
        _front_panel(ax, front, i, j, connect=False)
    for ax in axes[len(pairs):]:
        ax.axis("off")
    axes[0].legend(loc="best", fontsize=7)
    fig.suptitle(f"Pareto front in {m} objectives: {int(front.mask.sum())} of {len(front.trials)} trials")
    fig.tight_layout()
    return fig


def _front_panel(ax, front: Front, i: int, j: int, connect: bool) -> None:
    x, y, on = front.values[:, i], front.values[:, j], front.mask
    ax.scatter(x[~on], y[~on], s=16, color=_TRIAL, alpha=0.5, label="trial")
    ax.scatter(x[on], y[on], s=40, color=_FRONT, edgecolor="black", lw=0.5, zorder=3, label="Pareto front")
    if connect and on.sum() > 1:
        # the boundary of the dominated region, sorted by the first objective: between two
        # neighbours it keeps the value of the one better in the first objective (the right one
        # when that is maximised, so the step comes before it; the left one when minimised)
        order = np.argsort(x[on])
        where = "pre" if front.objectives[i].mode == "maximize" else "post"
        ax.step(x[on][order], y[on][order], where=where, color=_FRONT, lw=1.2, alpha=0.8)
    ax.set_xlabel(front.objectives[i].short)
    ax.set_ylabel(front.objectives[j].short)
    ax.grid(alpha=0.3)


def hypervolume_figure(front: Front, n_finished: int) -> Figure:
    """The hypervolume of the front of the trials so far, against the trial number."""
    x = front.positions[front.curve_index]
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    every = len(front.curve_index) == len(front.trials)
    if every:
        ax.step(np.append(x, n_finished), np.append(front.curve, front.curve[-1]), where="post", color=_FRONT, lw=2)
    else:
        ax.plot(x, front.curve, "o-", ms=3, color=_FRONT, lw=1.5)
    ax.set_xlabel("trial (in order of end)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("hypervolume")
    ax.set_xlim(0.5, max(n_finished, 1) + 0.5)
    ax.set_title(f"hypervolume of the front: {_fmt(front.hypervolume)}")
    ax.grid(alpha=0.3)
    return fig


def predictions_figure(pairs: Sequence[Tuple[Trial, Prediction]]) -> Figure:
    """The surrogate's mean +- std against the observed ``default``, with Spearman's rho."""
    observed = np.array([t.value("default") for t, _ in pairs])
    mean = np.array([p.mean for _, p in pairs])
    std = np.array([p.std for _, p in pairs])
    rho = spearman(observed, mean)
    fig = Figure(figsize=(5.4, 4.6))
    ax = fig.add_subplot()
    ax.errorbar(observed, mean, yerr=std, fmt="o", ms=4, color=_TRIAL, ecolor="0.6", capsize=2, label="trial")
    low = float(min(observed.min(), (mean - std).min()))
    high = float(max(observed.max(), (mean + std).max()))
    ax.plot([low, high], [low, high], "--", color="0.5", lw=1, label="prediction = observed")
    ax.set_xlabel("observed default")
    ax.set_ylabel("predicted default (mean ± std)")
    ax.set_title(f"surrogate vs observed: Spearman ρ = {'n/a' if rho is None else f'{rho:.2f}'} ({len(pairs)} trials)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4g}"
