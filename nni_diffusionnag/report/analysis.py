"""The numbers behind the report's figures (numpy only): which objectives and in which direction,
best-so-far, the Pareto front and its hypervolume over trials, the top trials, and the surrogate's
predictions next to what the trials measured."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..search.pareto import hypervolume, hypervolume_curve, pareto_mask, to_maximise
from .reading import ExperimentRecord, Prediction, Trial, sample_key

__all__ = ["Objective", "Front", "HV_MAX_OBJECTIVES", "HV_MAX_EVALS", "REF_MARGIN", "choose_objectives",
           "default_direction", "best_so_far", "pareto_front", "top_trials", "match_predictions", "spearman"]

_logger = logging.getLogger(__name__)

_MODES = {"max": "maximize", "maximize": "maximize", "maximise": "maximize",
          "min": "minimize", "minimize": "minimize", "minimise": "minimize"}
# The exact hypervolume (search/pareto.py) slices along one objective per level of recursion, so
# its cost grows by about a factor of the front size per objective: for three objectives and a
# front of 300 trials one evaluation takes ~0.3 s on one core, for four ~100 s. So the curve over
# trials is drawn for up to three objectives, and beyond HV_MAX_EVALS trials (three objectives)
# evaluated at that many evenly spaced trials instead of at every change of the front.
HV_MAX_OBJECTIVES = 3
HV_MAX_EVALS = 50
# The reference point: each objective's worst observed value, moved this fraction of its observed
# range further from the best (so that the worst trials still add some volume).
REF_MARGIN = 0.01


@dataclass(frozen=True)
class Objective:
    """A key of the final metric and its direction; ``why`` says how the direction was chosen."""

    name: str
    mode: str
    why: str

    @property
    def short(self) -> str:
        return f"{self.name} ({'max' if self.mode == 'maximize' else 'min'})"


def _default_mode(record: ExperimentRecord, minimize: bool) -> Tuple[str, str]:
    if minimize:
        return "minimize", "--minimize"
    if record.optimize_mode is not None:
        return record.optimize_mode, "the optimize_mode in the experiment's config"
    if record.experiment_type == "nas":
        return "maximize", ("assumed: the experiment config records no optimize_mode (a NAS strategy's is not "
                            "saved there); pass --minimize if the search minimised")
    return "maximize", ("assumed: the tuner's classArgs in the experiment config set no optimize_mode (the "
                        "DiffusionNAG tuner then maximises; some NNI tuners minimise); pass --minimize if the "
                        "search did")


def choose_objectives(record: ExperimentRecord, spec: Optional[str] = None, minimize: bool = False) -> List[Objective]:
    """The objectives of the report.

    Parameters
    ----------
    record
        The experiment.
    spec
        ``'default:max,latency_ms:min'``: keys of the final metric, each with ``:max`` or ``:min``
        (``default`` without one takes the experiment's direction, another key is minimised).
        None: ``default`` in the experiment's direction, and every other key that all final
        metrics report as a number, minimised (taken as costs).
    minimize
        ``default`` is minimised (NAS experiments do not record their strategy's direction).

    Raises
    ------
    ValueError
        A malformed spec, a direction other than max/min, a key named twice, or one that no
        trial reports (the message lists the keys that exist).
    """
    mode, why = _default_mode(record, minimize)
    finished = record.finished()
    if spec is None:
        objectives = [Objective("default", mode, why)]
        costs = [k for k in record.metric_keys() if k != "default" and finished
                 and all(t.value(k) is not None for t in finished)]
        objectives += [Objective(k, "minimize", "taken as a cost") for k in costs]
        return objectives
    objectives: List[Objective] = []
    for item in spec.split(","):
        name, _, direction = item.strip().partition(":")
        name, direction = name.strip(), direction.strip().lower()
        if not name:
            raise ValueError(f"--objectives {spec!r}: an empty name; write NAME:max or NAME:min, comma-separated")
        if any(o.name == name for o in objectives):
            raise ValueError(f"--objectives {spec!r}: {name!r} is named twice")
        if direction and direction not in _MODES:
            raise ValueError(f"--objectives: {item.strip()!r}: the direction must be max or min")
        if direction:
            objectives.append(Objective(name, _MODES[direction], "--objectives"))
        elif name == "default":
            objectives.append(Objective(name, mode, why))
        else:
            objectives.append(Objective(name, "minimize", "--objectives without a direction: taken as a cost"))
    reported = {k for k in record.metric_keys() if any(t.value(k) is not None for t in finished)}
    for o in objectives:
        if o.name not in reported:
            keys = record.metric_keys()
            raise ValueError(f"objective {o.name!r} is not reported as a number by any trial of experiment "
                             f"{record.experiment_id}; the final metrics have the keys {keys}"
                             if keys else f"objective {o.name!r}: no trial of experiment {record.experiment_id} "
                             "has a final metric yet")
    return objectives


def default_direction(record: ExperimentRecord, objectives: List[Objective], minimize: bool = False) -> str:
    """The direction of ``default``: its objective's, else (objectives without it) the experiment's."""
    return next((o.mode for o in objectives if o.name == "default"), None) or _default_mode(record, minimize)[0]


def best_so_far(values: Sequence[float], mode: str) -> np.ndarray:
    """``[n]``: the best of ``values[: i + 1]`` in direction ``mode``."""
    values = np.asarray(values, dtype=np.float64)
    return np.maximum.accumulate(values) if mode == "maximize" else np.minimum.accumulate(values)


@dataclass(frozen=True)
class Front:
    """The Pareto front of the finished trials that report every objective.

    Shapes: ``values: [n, m]`` (the objectives' own units, trials in order of end), ``mask: [n]``
    (on the front), ``positions: [n]`` (each trial's number among all finished trials, from 1),
    ``ref: [m]`` (the hypervolume's reference point, own units), ``curve: [k]`` (the hypervolume
    after the trials ``curve_index: [k]``, indices into ``trials``: every one, or HV_MAX_EVALS
    evenly spaced ones ending with the last; None with more than HV_MAX_OBJECTIVES objectives).
    ``skipped``: finished trials left out for lack of some objective.
    """

    objectives: List[Objective]
    trials: List[Trial]
    values: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    ref: np.ndarray
    curve: Optional[np.ndarray]
    curve_index: Optional[np.ndarray]
    skipped: int

    @property
    def hypervolume(self) -> Optional[float]:
        return None if self.curve is None or not len(self.curve) else float(self.curve[-1])


def pareto_front(finished: List[Trial], objectives: List[Objective]) -> Front:
    """The front of ``finished`` (in order of end) under ``objectives``, with the hypervolume over
    trials against the reference point of REF_MARGIN."""
    names, modes = [o.name for o in objectives], [o.mode for o in objectives]
    rows = [(i + 1, t, [t.value(n) for n in names]) for i, t in enumerate(finished)]
    rows = [r for r in rows if all(v is not None for v in r[2])]
    m = len(objectives)
    values = np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, m)
    positions = np.array([r[0] for r in rows], dtype=np.int64)
    if not len(rows):
        none = np.zeros(0) if m <= HV_MAX_OBJECTIVES else None
        return Front(objectives, [], values, np.zeros(0, dtype=bool), positions, np.full(m, np.nan), none,
                     None if none is None else np.zeros(0, dtype=np.int64), len(finished))
    y = to_maximise(values, modes)
    worst, best = y.min(axis=0), y.max(axis=0)
    span = best - worst
    margin = np.where(span > 0, REF_MARGIN * span, REF_MARGIN * np.maximum(np.abs(worst), 1.0))
    ref_y = worst - margin
    sign = np.array([1.0 if mode == "maximize" else -1.0 for mode in modes])
    curve, index = _curve(y, ref_y) if m <= HV_MAX_OBJECTIVES else (None, None)
    return Front(objectives, [r[1] for r in rows], values, pareto_mask(y), positions, ref_y * sign, curve, index,
                 len(finished) - len(rows))


def _curve(y: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The hypervolume of ``y[: i + 1]`` (maximised) for every ``i``, or for HV_MAX_EVALS evenly
    spaced ``i`` (three objectives, more trials than that: see HV_MAX_OBJECTIVES)."""
    n = len(y)
    if y.shape[1] <= 2 or n <= HV_MAX_EVALS:
        return hypervolume_curve(y, ref), np.arange(n)
    index = np.unique(np.linspace(0, n - 1, HV_MAX_EVALS).round().astype(np.int64))
    return np.array([hypervolume(y[: i + 1], ref) for i in index]), index


def top_trials(finished: List[Trial], mode: str, k: int) -> List[Trial]:
    """The ``k`` best trials by ``default`` (ties: the earlier one first)."""
    scored = [t for t in finished if t.value("default") is not None]
    sign = -1.0 if mode == "maximize" else 1.0
    return sorted(scored, key=lambda t: sign * t.value("default"))[:k]


def match_predictions(finished: List[Trial], predictions: List[Prediction]) -> List[Tuple[Trial, Prediction]]:
    """Each finished trial with a finite ``default`` whose architecture was predicted, with that
    prediction (the last one written when the search predicted it more than once)."""
    by_key = {sample_key(p.sample): p for p in predictions}
    pairs = []
    for t in finished:
        if t.sample is not None and t.value("default") is not None:
            p = by_key.get(sample_key(t.sample))
            if p is not None:
                pairs.append((t, p))
    return pairs


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> Optional[float]:
    """Spearman's rank correlation of two equally long sequences; None with fewer than 2 points
    or when either one is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"spearman: lengths {len(a)} and {len(b)} differ")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a) - (len(a) + 1) / 2, _ranks(b) - (len(b) + 1) / 2
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return None if denom == 0 else float((ra * rb).sum() / denom)
