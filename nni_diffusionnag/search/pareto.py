"""Pareto fronts and hypervolumes of objective vectors, all to *maximise* (pure numpy).

A minimised objective enters with its sign flipped (:func:`to_maximise`). The hypervolume of a
set ``Y: [n, m]`` against a reference point ``ref: [m]`` (worse than every point in every
objective) is the measure of the region that some point of ``Y`` dominates and that dominates
``ref``. Exact: a sweep for two objectives, recursive slicing along the last objective for more
(fine for the fronts of a NAS search: tens of points, two to four objectives).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["to_maximise", "pareto_mask", "hypervolume", "hypervolume_improvement", "hypervolume_curve"]


def to_maximise(values: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """``values: [n, m]`` with ``modes[i]`` in ``{'maximize', 'minimize'}`` -> all maximised."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(modes):
        raise ValueError(f"expected values of shape [n, {len(modes)}], got {values.shape}")
    bad = [m for m in modes if m not in ("maximize", "minimize")]
    if bad:
        raise ValueError(f"objective modes must be 'maximize' or 'minimize', got {bad}")
    sign = np.array([1.0 if m == "maximize" else -1.0 for m in modes])
    return values * sign


def pareto_mask(y: np.ndarray) -> np.ndarray:
    """``[n]`` bool: the points of ``y: [n, m]`` that no other point dominates (duplicates: the
    first copy only)."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if y.ndim == 2 and y.shape[1] == 2 and n:
        # one sort and a sweep (a whole table of 26k entries in milliseconds): in the order of the
        # first objective, then the second, descending (ties by index), a point is on the front
        # iff its second objective beats every point before it
        order = np.lexsort((np.arange(n), -y[:, 1], -y[:, 0]))
        second = y[order, 1]
        before = np.concatenate([[-np.inf], np.maximum.accumulate(second)[:-1]])
        keep = np.zeros(n, dtype=bool)
        keep[order] = second > before
        return keep
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        ge = (y >= y[i]).all(axis=1)
        gt = (y > y[i]).any(axis=1)
        if (ge & gt).any():
            keep[i] = False
            continue
        same = (y == y[i]).all(axis=1)
        same[: i + 1] = False
        keep[same] = False  # later copies of a kept point
    return keep


def hypervolume(y: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of ``y: [n, m]`` (maximised) above ``ref: [m]``; points not above ``ref`` in
    every objective add nothing."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, len(ref))
    ref = np.asarray(ref, dtype=np.float64)
    y = y[(y > ref).all(axis=1)]
    if len(y) == 0:
        return 0.0
    return float(_hv(y[pareto_mask(y)] - ref))


def _hv(y: np.ndarray) -> float:
    """Hypervolume above the origin of non-negative points ``y`` (maximised)."""
    m = y.shape[1]
    if m == 1:
        return float(y.max())
    if m == 2:
        order = np.argsort(-y[:, 0])  # sweep from the largest first objective down
        best1, area = 0.0, 0.0
        for x0, x1 in y[order]:
            if x1 > best1:
                area += x0 * (x1 - best1)
                best1 = x1
        return area
    # slice along the last objective: between consecutive levels, the points at or above the
    # slab's top level span an (m-1)-dimensional volume
    levels = np.unique(y[:, -1])[::-1]
    total = 0.0
    for top, below in zip(levels, np.append(levels[1:], 0.0)):
        slab = y[y[:, -1] >= top][:, :-1]
        slab = slab[pareto_mask(slab)]
        total += _hv(slab) * (top - below)
    return total


def hypervolume_improvement(candidates: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``[k]``: how much each of ``candidates: [k, m]`` alone would add to the hypervolume of
    ``front: [n, m]``. Two objectives: vectorised over the front's staircase (thousands of
    candidates in milliseconds, as Monte Carlo expected improvement needs); more: one
    hypervolume per candidate."""
    ref = np.asarray(ref, dtype=np.float64)
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, len(ref))
    front = np.asarray(front, dtype=np.float64).reshape(-1, len(ref))
    if len(ref) == 2:
        return _hvi_2d(candidates, front, ref)
    base = hypervolume(front, ref) if len(front) else 0.0
    return np.array([hypervolume(np.vstack([front, c[None]]), ref) - base for c in candidates])


def _hvi_2d(c: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Two maximised objectives: the area of ``[ref, c]`` above the front's staircase. Along the
    first objective the front dominates up to height ``h(x) = max{f_1 : f_0 >= x}``; ``c`` adds
    ``sum over the staircase's segments of length * max(0, c_1 - h)`` for ``x`` in ``(ref_0, c_0]``."""
    f = front[(front > ref).all(axis=1)] if len(front) else front
    # segment edges: ref_0 and the front's first coordinates, ascending; h is constant in between
    xs = np.unique(np.concatenate([[ref[0]], f[:, 0]])) if len(f) else np.array([ref[0]])
    heights = np.array([f[f[:, 0] >= x, 1].max() if len(f) and (f[:, 0] >= x).any() else ref[1]
                        for x in xs[1:]] + [ref[1]])  # on (xs[i-1], xs[i]]; beyond the last edge: ref
    lefts = xs
    rights = np.concatenate([xs[1:], [np.inf]])
    # segment i spans (lefts[i], rights[i]] with height heights[i]
    length = np.clip(np.minimum(c[:, :1], rights[None, :]) - lefts[None, :], 0.0, None)  # [k, s]
    rise = np.clip(c[:, 1:2] - np.maximum(heights[None, :], ref[1]), 0.0, None)
    return (length * rise).sum(axis=1)


def hypervolume_curve(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``[n]``: the hypervolume of the first ``i + 1`` points of ``y`` (in arrival order)."""
    y = np.asarray(y, dtype=np.float64)
    out = np.zeros(len(y))
    front = np.zeros((0, y.shape[1]))
    value = 0.0
    for i, point in enumerate(y):
        if not len(front) or not ((front >= point).all(axis=1)).any():
            front = np.vstack([front, point[None]])
            front = front[pareto_mask(front)]
            value = hypervolume(front, ref)
        out[i] = value
    return out
