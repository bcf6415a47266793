"""Architectures drawn as graphs: a NAS-Bench-201 cell as its 4-node DAG with every edge labelled
by its operation (a ``none`` edge is absent), any other space as its chain of decisions (a row of
``label = value`` boxes, wrapped)."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

__all__ = ["nb201_cell", "architecture_figure", "format_value"]

# NB201's cell: nodes 0 (input) .. 3 (output), an edge i -> j for every i < j, labelled `<prefix>i_j`.
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
_EDGE_LABEL = re.compile(r"^(?P<prefix>.*?)(?P<i>\d)_(?P<j>\d)$")
# Nodes on a line; the two edges that skip one node arc above it, the input -> output edge below:
# the arc3 bend (matplotlib: the control point sits `rad` edge lengths off the chord, to the right
# of the direction of travel for rad > 0) and where its label goes.
_BEND = {(0, 2): -0.45, (1, 3): -0.45, (0, 3): 0.4}
_OP_COLOURS = {"conv_3x3": "tab:red", "conv_1x1": "tab:orange", "skip_connect": "tab:green",
               "avg_pool_3x3": "tab:blue"}
_CHAIN_COLUMNS = 4
_CHAIN_TEXT = 34  # characters of a box before it is cut


def nb201_cell(sample: Dict[str, Any]) -> Optional[Dict[Tuple[int, int], str]]:
    """``{(i, j): op}`` when ``sample`` is a NAS-Bench-201 cell (six string-valued labels
    ``<prefix>i_j``, one per edge of the 4-node DAG, one prefix), else None."""
    if len(sample) != len(NB201_EDGES):
        return None
    edges, prefixes = {}, set()
    for label, value in sample.items():
        match = _EDGE_LABEL.match(str(label))
        if match is None or not isinstance(value, str):
            return None
        edges[(int(match["i"]), int(match["j"]))] = value
        prefixes.add(match["prefix"])
    return edges if sorted(edges) == sorted(NB201_EDGES) and len(prefixes) == 1 else None


def format_value(value: Any) -> str:
    """A decision's value for a label: floats to 4 significant digits, anything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def architecture_figure(sample: Dict[str, Any], title: str) -> Figure:
    """The cell diagram of an NB201 sample, the decision chain of any other."""
    cell = nb201_cell(sample)
    return _cell_figure(cell, title) if cell is not None else _chain_figure(sample, title)


def _cell_figure(cell: Dict[Tuple[int, int], str], title: str) -> Figure:
    fig = Figure(figsize=(6.4, 3.0))
    ax = fig.add_subplot()
    ax.set_aspect("equal")  # arc3 bends in display space: equal scales keep the labels on the arcs
    ax.axis("off")
    nodes = {k: (1.5 * k, 0.0) for k in range(4)}
    for k, (x, y) in nodes.items():
        ax.add_patch(Circle((x, y), 0.2, facecolor="white", edgecolor="black", lw=1.5, zorder=3))
        ax.text(x, y, str(k), ha="center", va="center", fontsize=11, zorder=4)
    ax.text(nodes[0][0], -0.35, "input", ha="center", va="top", fontsize=8, color="0.4")
    ax.text(nodes[3][0], -0.35, "output", ha="center", va="top", fontsize=8, color="0.4")
    for (i, j), op in sorted(cell.items()):
        if op == "none":  # NB201's zero operation: no edge
            continue
        rad = _BEND.get((i, j), 0.0)
        (x1, y1), (x2, y2) = nodes[i], nodes[j]
        colour = _OP_COLOURS.get(op, "0.3")
        ax.add_patch(FancyArrowPatch((x1, y1), (x2, y2), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=12, shrinkA=12, shrinkB=12, color=colour, lw=1.6, zorder=2))
        # the quadratic Bezier's midpoint: halfway from the chord's middle to the control point
        dx, dy = x2 - x1, y2 - y1
        mx, my = (x1 + x2) / 2 + rad / 2 * dy, (y1 + y2) / 2 - rad / 2 * dx
        if rad == 0.0:
            my += 0.18
        ax.text(mx, my, op, ha="center", va="center", fontsize=8, color=colour, zorder=5,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9))
    ax.set_xlim(-0.4, 4.9)
    ax.set_ylim(-1.0, 1.0)
    ax.set_title(title, fontsize=10)
    return fig


def _chain_figure(sample: Dict[str, Any], title: str) -> Figure:
    items = [f"{label} = {format_value(value)}" for label, value in sample.items()] or ["(no decisions)"]
    items = [text if len(text) <= _CHAIN_TEXT else text[: _CHAIN_TEXT - 1] + "…" for text in items]
    cols = min(_CHAIN_COLUMNS, len(items))
    rows = int(np.ceil(len(items) / cols))
    fig = Figure(figsize=(2.4 * cols + 0.4, 0.55 * rows + 0.6))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)  # first row on top
    boxes = []
    for k, text in enumerate(items):
        r, c = divmod(k, cols)
        boxes.append(ax.text(c, r, text, ha="center", va="center", fontsize=8,
                             bbox=dict(boxstyle="round,pad=0.35", facecolor="#eef3fb", edgecolor="tab:blue")))
    for k in range(len(items) - 1):
        if (k + 1) % cols:  # along a row, from one box's right edge to the next one's left (rows read like text)
            # artist coordinates: fractions of each text's extent, wherever its length puts it
            ax.annotate("", xy=(0, 0.5), xycoords=boxes[k + 1], xytext=(1, 0.5), textcoords=boxes[k],
                        arrowprops=dict(arrowstyle="-|>", color="0.5", lw=0.8, shrinkA=5, shrinkB=5))
    ax.set_title(title, fontsize=10)
    return fig
