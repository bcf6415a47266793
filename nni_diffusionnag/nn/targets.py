"""How observed values become a surrogate's regression targets (pure numpy; no torch, no NNI).

A surrogate fitted by least squares on raw metrics spends its capacity on the bulk and the tail
of the distribution: on NAS-Bench-201 a few cells with 10% accuracy (a cut data path) stretch the
scale, while the search only needs the order among the best. ``'rank'`` labels (a Gaussian copula:
the normal quantile of each value's rank, ties averaged, as HEBO warps its outputs) keep the order
and nothing else, so every result weighs the same and the top is resolved as finely as the
bottom; ``'zscore'`` keeps the metric's own scale. Measured in docs/benchmarks.md §3 ('Rank labels').
"""

from __future__ import annotations

import numpy as np

from .config import SURROGATE_LABELS as LABELS

__all__ = ["LABELS", "standardise", "to_metric_units"]


def standardise(values: np.ndarray, labels: str) -> np.ndarray:
    """``[n]`` values -> ``[n]`` targets: ``'zscore'`` (mean 0, std 1) or ``'rank'`` (the normal
    quantile of ``(rank - 0.5) / n``, ties sharing their mean rank)."""
    v = np.asarray(values, dtype=np.float64)
    if labels == "zscore":
        return (v - v.mean()) / max(float(v.std()), 1e-9)
    if labels != "rank":
        raise ValueError(f"labels must be one of {list(LABELS)}, got {labels!r}")
    from scipy.stats import norm, rankdata

    return norm.ppf((rankdata(v) - 0.5) / len(v))


def to_metric_units(pred: np.ndarray, targets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Predictions in target units back in the metric's units: the monotone map that takes
    ``targets`` to ``values``, linear in between, clamped to the observed range outside it."""
    order = np.argsort(targets, kind="stable")
    return np.interp(np.asarray(pred, dtype=np.float64), np.asarray(targets)[order], np.asarray(values)[order])
