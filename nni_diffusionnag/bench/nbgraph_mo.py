"""``bench multiobjective --datasets ...``: validation performance x measured latency on NAS-Bench-Graph.

The second kind of column of the multi-objective benchmark (the first, NB201 accuracy x exact
cost, is :mod:`.multiobjective`): NAS-Bench-Graph's tables ship each architecture's *measured*
inference latency beside its validation and test performance, so latency here is an objective that
trials report, learned by a surrogate of its own, not a cost model. The space is the user-written
:class:`~.nbgraph.GraphCellSpace` (generic encoding, nothing special-cased), and the evaluator
reports ``{'default': validation %, 'latency_ms': ms}`` as a user's trial would.

Methods: ``DiffusionNAG-MO`` (``objectives=['latency_ms:min']``), ``DiffusionNAG-sum`` (the
single-objective search on a fixed weighted sum of the two range-normalised objectives),
``Random`` (NNI's, no repeats) through NNI's sequential engine, and Optuna's ``NSGAII`` and
multi-objective ``TPE`` samplers over the same choices. Hypervolume against the table's median
validation performance and its largest latency, as a fraction of the true front's (all entries;
isomorphic cells share an entry). Selection is on validation only; the test performance is not
used here.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import nni
import numpy as np
from nni.nas.evaluator import Evaluator

from ..search.pareto import hypervolume, hypervolume_curve, pareto_mask
from .nbgraph import GraphCellSpace, load_table, table_hash

__all__ = ["METHODS", "nbgraph_table", "run_one", "NasBenchGraphMOEvaluator", "top_entries", "front_split",
           "hv_with_top", "uniform_top_draws"]

METHODS = ("DiffusionNAG-MO", "DiffusionNAG-sum", "Random", "NSGAII", "TPE")


def _values(entry: Optional[Mapping[str, float]], fastest_ms: float) -> Tuple[float, float]:
    # the one cell the table lacks (every operation skip) scores 0, and nothing is faster
    if entry is None:
        return 0.0, fastest_ms
    return 100.0 * float(entry["valid_perf"]), 1000.0 * float(entry["latency"])


@nni.trace
class NasBenchGraphMOEvaluator(Evaluator):
    """Reports ``{'default': validation %, 'latency_ms': ms}`` of a :class:`GraphCellSpace` model
    from the table, or, with ``weighted=(lo, hi)``, the fixed weighted sum ``0.5 * valid' + 0.5 *
    (-latency)'`` of the two objectives normalised to ``[0, 1]`` by the table's range."""

    def __init__(self, dataset: str, weighted: Optional[Tuple[Sequence[float], Sequence[float]]] = None) -> None:
        super().__init__()
        self.dataset, self.weighted = dataset, weighted
        self.table = load_table(dataset)
        self.fastest = min(1000.0 * float(e["latency"]) for e in self.table.values())

    def evaluate(self, sample: Mapping[str, Any]) -> Any:
        valid, ms = _values(self.table.get(table_hash(sample)), self.fastest)
        if self.weighted is None:
            value: Any = {"default": valid, "latency_ms": ms}
        else:
            lo, hi = self.weighted
            value = 0.5 * (valid - lo[0]) / (hi[0] - lo[0]) + 0.5 * (-ms - lo[1]) / (hi[1] - lo[1])
        nni.report_final_result(value)
        return value

    def _execute(self, model: Any) -> Any:
        return self.evaluate(model.sample)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, NasBenchGraphMOEvaluator) and (other.dataset, other.weighted) == (
            self.dataset, self.weighted)


def nbgraph_table(dataset: str) -> Dict[str, Any]:
    """The table as maximised objectives ``[valid %, -latency ms]``, its reference point and true
    front's hypervolume."""
    table = load_table(dataset)
    fastest = min(1000.0 * float(e["latency"]) for e in table.values())
    y = np.array([_values(e, fastest) for e in table.values()]) * np.array([1.0, -1.0])
    ref = np.array([np.median(y[:, 0]), y[:, 1].min()])
    front = y[pareto_mask(y)]
    return {"dataset": dataset, "table": table, "fastest": fastest, "y": y, "ref": ref,
            "true_hv": hypervolume(front, ref), "front_size": len(front)}


def _point(t: Mapping[str, Any], sample: Mapping[str, Any]) -> Tuple[float, float]:
    valid, ms = _values(t["table"].get(table_hash(sample)), t["fastest"])
    return valid, -ms


def _run_nni(t: Mapping[str, Any], method: str, seed: int, budget: int, device: str) -> List[Tuple[float, float]]:
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.execution.event import ModelEventType
    from nni.nas.space import SimplifiedModelSpace
    from nni.nas.strategy import Random

    from ..integration.strategy import DiffusionNAG
    from .multiobjective import method_settings
    from .search import _no_tpe_sleep, ablation_base

    extra = method_settings(method)  # 'DiffusionNAG-MO:key=value', as bench search reads ablations
    method = ablation_base(method)
    weighted = None
    if method == "DiffusionNAG-sum":
        weighted = (t["y"].min(axis=0).tolist(), t["y"].max(axis=0).tolist())
    space = SimplifiedModelSpace.from_model(GraphCellSpace(), NasBenchGraphMOEvaluator(t["dataset"], weighted))
    points: List[Tuple[float, float]] = []
    engine = SequentialExecutionEngine(max_model_count=budget, continue_on_failure=True)
    engine.register_model_event_callback(ModelEventType.FinalMetric,
                                         lambda event: points.append(_point(t, event.model.sample)))
    strategy = {"DiffusionNAG-MO": lambda: DiffusionNAG(seed=seed, device=device, objectives=["latency_ms:min"], **extra),
                "DiffusionNAG-sum": lambda: DiffusionNAG(seed=seed, device=device, **extra),
                "Random": lambda: Random(seed=seed, dedup=True)}[method]()
    with _no_tpe_sleep():
        strategy(space, engine)
    nni.trial._params = None  # the sequential engine leaves trial params set (NNI 3.0)
    return points


def _run_optuna(t: Mapping[str, Any], sampler_name: str, seed: int, budget: int) -> List[Tuple[float, float]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = {label: list(m.values) for label, m in GraphCellSpace().simplify().items()}
    sampler = (optuna.samplers.NSGAIISampler(seed=seed) if sampler_name == "NSGAII"
               else optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    points: List[Tuple[float, float]] = []

    def objective(trial: Any) -> Tuple[float, float]:
        points.append(_point(t, {label: trial.suggest_categorical(label, values) for label, values in choices.items()}))
        return points[-1]

    study.optimize(objective, n_trials=budget)
    return points


def run_one(t: Mapping[str, Any], method: str, seed: int, budget: int, device: str = "cpu") -> Dict[str, Any]:
    """One search of ``budget`` queries; its hypervolume curve as a fraction of the true front's."""
    t0 = time.time()
    if method in ("NSGAII", "TPE"):  # settings are refused for them by method_settings
        points = _run_optuna(t, method, seed, budget)
    else:
        points = _run_nni(t, method, seed, budget, device)
    seconds = time.time() - t0
    hv = hypervolume_curve(np.array(points).reshape(-1, 2), t["ref"]) / t["true_hv"]
    hit = np.flatnonzero(hv >= 0.95)
    return {"method": method, "seed": seed, "points": [list(p) for p in points], "rows": list(range(len(points))),
            "hv_fraction": hv.round(5).tolist(), "queries_to_95": int(hit[0] + 1) if len(hit) else None,
            "seconds": round(seconds, 2)}


# --- where the missing hypervolume lies (docs/benchmarks.md §11 'What 95% of the front takes') ---

_TIE = 1e-6


def top_entries(y: np.ndarray, top_fraction: float = 0.01) -> np.ndarray:
    """Indices of the table's entries in the top ``top_fraction`` by the first objective
    (validation): at least ``ceil(top_fraction * n)`` of them, every entry tied with the last one
    included (the table's values repeat; 1e-6 absorbs their float rounding), best first."""
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must lie in (0, 1], got {top_fraction}")
    order = np.argsort(-y[:, 0], kind="stable")
    threshold = y[order[int(np.ceil(top_fraction * len(y))) - 1], 0]
    return order[y[order, 0] >= threshold - _TIE]


def front_split(y: np.ndarray, ref: np.ndarray, top_fraction: float = 0.01) -> Dict[str, Any]:
    """Split the true front of ``y`` (maximised objectives, the first one validation) into its
    entries in the validation top ``top_fraction`` and the rest.

    Returns the top's indices (``top``, :func:`top_entries`), the true front's hypervolume
    (``true_hv``), the top front entries' validation ranks (1 = best of the table), the front's
    entries of each part and ``top_share``: the fraction of the true front's hypervolume that only
    the top entries hold (what a search that never reaches them must lose)."""
    front_idx = np.flatnonzero(pareto_mask(y))
    top = top_entries(y, top_fraction)
    in_top = np.isin(front_idx, top)
    rank = lambda i: int((y[:, 0] > y[i, 0] + _TIE).sum()) + 1  # noqa: E731 (ties share the better rank)
    true_hv = hypervolume(y[front_idx], ref)
    rest = y[front_idx[~in_top]]
    return {"top": top, "true_hv": true_hv, "front_size": len(front_idx),
            "top_ranks": sorted(rank(i) for i in front_idx[in_top]),
            "top_points": y[front_idx[in_top]], "rest_points": rest,
            "top_share": 1.0 - (hypervolume(rest, ref) if len(rest) else 0.0) / true_hv}


def hv_with_top(points: np.ndarray, split: Mapping[str, Any], ref: np.ndarray) -> float:
    """The hypervolume fraction of a run's ``points`` had it also found the front's top entries
    (``split`` from :func:`front_split`)."""
    both = np.vstack([np.asarray(points, dtype=np.float64).reshape(-1, 2), split["top_points"]])
    return hypervolume(both[pareto_mask(both)], ref) / split["true_hv"]


def uniform_top_draws(y: np.ndarray, ref: np.ndarray, split: Mapping[str, Any], target: float = 0.95,
                      repeats: int = 200, seed: int = 0) -> np.ndarray:
    """Draws to ``target`` of the true front's hypervolume for a sampler that is *given* the rest
    of the front and then draws the validation top (``split`` from :func:`front_split`) uniformly
    without repeats: a search that reaches the top but cannot rank inside it. ``[repeats]``;
    ``len(top) + 1`` where even all of the top falls short."""
    top = split["top"]
    rng = np.random.default_rng(seed)
    draws = np.full(repeats, len(top) + 1)
    for r in range(repeats):
        found = split["rest_points"]
        for i, j in enumerate(rng.permutation(top), 1):
            found = np.vstack([found, y[j]])
            found = found[pareto_mask(found)]
            if hypervolume(found, ref) >= target * split["true_hv"]:
                draws[r] = i
                break
    return draws
