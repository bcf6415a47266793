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

__all__ = ["METHODS", "nbgraph_table", "run_one", "NasBenchGraphMOEvaluator"]

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
    from .search import _no_tpe_sleep

    weighted = None
    if method == "DiffusionNAG-sum":
        weighted = (t["y"].min(axis=0).tolist(), t["y"].max(axis=0).tolist())
    space = SimplifiedModelSpace.from_model(GraphCellSpace(), NasBenchGraphMOEvaluator(t["dataset"], weighted))
    points: List[Tuple[float, float]] = []
    engine = SequentialExecutionEngine(max_model_count=budget, continue_on_failure=True)
    engine.register_model_event_callback(ModelEventType.FinalMetric,
                                         lambda event: points.append(_point(t, event.model.sample)))
    strategy = {"DiffusionNAG-MO": lambda: DiffusionNAG(seed=seed, device=device, objectives=["latency_ms:min"]),
                "DiffusionNAG-sum": lambda: DiffusionNAG(seed=seed, device=device),
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
    if method in ("NSGAII", "TPE"):
        points = _run_optuna(t, method, seed, budget)
    else:
        points = _run_nni(t, method, seed, budget, device)
    seconds = time.time() - t0
    hv = hypervolume_curve(np.array(points).reshape(-1, 2), t["ref"]) / t["true_hv"]
    hit = np.flatnonzero(hv >= 0.95)
    return {"method": method, "seed": seed, "points": [list(p) for p in points], "rows": list(range(len(points))),
            "hv_fraction": hv.round(5).tolist(), "queries_to_95": int(hit[0] + 1) if len(hit) else None,
            "seconds": round(seconds, 2)}
