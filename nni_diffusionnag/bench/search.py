"""``nni-diffusionnag bench search``: DiffusionNAG against NNI's built-in strategies on the NB201 table.

Every strategy runs through NNI's own ``SequentialExecutionEngine`` with the same budget of trained
architectures on the same tabular evaluator, over several seeds. Reported: best-so-far accuracy
against the number of trained architectures, queries to reach the table optimum, seconds per
decision (strategy wall time / architectures, the table lookup itself costs ~0), and the peak
memory of the process. The table holds *test* accuracy only: a search that picks by it and reports
it is optimistic, for every strategy alike.

Built-in settings: ``Random``; ``RegularizedEvolution(population_size=20, sample_size=5,
mutation_prob=0.2)``; ``TPE(optimize_mode='maximize')`` (NNI's default minimises). NNI's TPE strategy
sleeps 1 s after every submission (``nni/nas/strategy/hpo.py``); that sleep is patched out here so
its seconds per decision measure the algorithm, not the sleep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from .common import machine_info, nb201_truth, pad_curves, peak_rss_mb, write_json

__all__ = ["run_search_bench", "run_one", "run_strategy", "STRATEGIES"]

_logger = logging.getLogger(__name__)


def _make(name: str, seed: int, prior_path: Optional[str], device: str, meta_predictor: Optional[str] = None):
    from nni.nas.strategy import TPE, Random, RegularizedEvolution

    from ..integration.strategy import DiffusionNAG

    if name == "DiffusionNAG":
        return DiffusionNAG(seed=seed, prior=prior_path, device=device)
    if name.startswith("DiffusionNAG:"):  # an ablation: DiffusionNAG:local_fraction=0:surrogate.labels=zscore
        return DiffusionNAG(seed=seed, prior=prior_path, device=device, **ablation_kwargs(name))
    if name == "DiffusionNAG-exact":  # the closed-form prior of independent edges instead of the shipped one
        return DiffusionNAG(seed=seed, prior_kind="exact", device=device)
    if name == "DiffusionNAG-exact-gp":  # and the GP over decisions instead of the GNN ensemble (refit per result)
        return DiffusionNAG(seed=seed, prior_kind="exact", surrogate={"kind": "gp"}, device=device)
    if name == "DiffusionNAG+transfer":
        if not meta_predictor:
            raise ValueError("DiffusionNAG+transfer needs a meta_predictor checkpoint")
        return DiffusionNAG(seed=seed, prior=prior_path, device=device, meta_predictor=meta_predictor)
    if name == "Random":
        return Random(seed=seed)
    if name == "RegularizedEvolution":
        return RegularizedEvolution(population_size=20, sample_size=5, mutation_prob=0.2, seed=seed)
    if name == "TPE":
        return TPE(optimize_mode="maximize", seed=seed)
    raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES} or an ablation "
                     "'DiffusionNAG:key=value:...'")


def ablation_base(name: str) -> str:
    """The strategy (or method) an ablation runs: ``'DiffusionNAG:warmup=5'`` -> ``'DiffusionNAG'``."""
    return name.split(":")[0]


def ablation_kwargs(name: str) -> Dict[str, Any]:
    """``'DiffusionNAG:key=value:group.key=value'`` -> DiffusionNAG keyword arguments (values read
    as JSON where they parse, else as strings; ``surrogate.labels=zscore`` goes into ``surrogate``)."""
    kwargs: Dict[str, Any] = {}
    for item in name.split(":")[1:]:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"ablation {name!r}: write each setting as key=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        group, dot, field = key.partition(".")
        if dot:
            kwargs.setdefault(group, {})[field] = value
        else:
            kwargs[key] = value
    return kwargs


STRATEGIES = ("DiffusionNAG", "Random", "RegularizedEvolution", "TPE", "DiffusionNAG-exact", "DiffusionNAG-exact-gp")


@contextlib.contextmanager
def _no_tpe_sleep() -> Iterator[None]:
    import nni.nas.strategy.hpo as hpo

    real = hpo.time
    hpo.time = SimpleNamespace(sleep=lambda _s: None, time=real.time)
    try:
        yield
    finally:
        hpo.time = real


def run_strategy(name: str, table: str | Path, column: str, seed: int, budget: int, prior_path: Optional[str] = None,
                 device: str = "cpu", stop_at: Optional[float] = None, meta_predictor: Optional[str] = None,
                 concurrency: int = 1) -> Tuple[Any, List[float], float]:
    """One search through NNI's sequential engine; returns the strategy object, the metrics in the
    order they arrived and the wall time in seconds.

    With ``stop_at``, the engine reports no budget left once a metric >= ``stop_at`` arrived: the
    best-so-far curve is flat from there, so the rest of the budget would only cost time.

    With ``concurrency`` c > 1 the engine keeps c trials in flight, as a training service with c
    workers and trials of equal length would: a submitted model is trained (its result arrives)
    only once c - 1 later ones have been submitted, so every decision after the first c is taken
    with c - 1 results outstanding. Results still arrive in submission order, so queries to the
    optimum count the same way as with one worker; when the optimum's result arrives, c - 1 more
    architectures are already in training.
    """
    import nni
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.execution.event import ModelEventType
    from nni.nas.hub.pytorch import NasBench201
    from nni.nas.space import SimplifiedModelSpace

    from ..integration.evaluators import TabularEvaluator

    space = SimplifiedModelSpace.from_model(NasBench201(), TabularEvaluator(str(table), column))
    metrics: List[float] = []

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1 (trials in flight), got {concurrency}")

    class Engine(SequentialExecutionEngine):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.in_flight: Deque[Any] = deque()

        def budget_available(self) -> bool:
            reached = stop_at is not None and metrics and max(metrics) >= stop_at
            return not reached and super().budget_available()

        def _run_single_model(self, model: Any) -> None:  # called by submit_models, one model at a time
            self.in_flight.append(model)
            while len(self.in_flight) >= concurrency:
                super()._run_single_model(self.in_flight.popleft())

        def wait_models(self, *models: Any) -> None:  # the strategy is done: the trials in flight finish
            while self.in_flight:
                super()._run_single_model(self.in_flight.popleft())

    engine = Engine(max_model_count=budget, continue_on_failure=True)
    engine.register_model_event_callback(ModelEventType.FinalMetric, lambda e: metrics.append(float(e.metric)))
    strategy = _make(name, seed, prior_path, device, meta_predictor)
    t0 = time.time()
    with _no_tpe_sleep():
        strategy(space, engine)
        engine.wait_models()  # trials still in flight finish, as on a training service (NNI's Random does not wait)
    seconds = time.time() - t0
    nni.trial._params = None  # the sequential engine leaves trial params set (NNI 3.0 bug)
    return strategy, metrics, seconds


def run_one(name: str, table: str | Path, column: str, seed: int, budget: int, prior_path: Optional[str] = None,
            device: str = "cpu", stop_at: Optional[float] = None, meta_predictor: Optional[str] = None,
            concurrency: int = 1) -> Dict[str, Any]:
    """One search (:func:`run_strategy`); returns the metrics in the order they arrived and the wall time."""
    _, metrics, seconds = run_strategy(name, table, column, seed, budget, prior_path, device, stop_at, meta_predictor,
                                       concurrency)
    return {"strategy": name, "seed": seed, "metrics": metrics, "seconds": round(seconds, 2),
            "seconds_per_decision": seconds / max(1, len(metrics))}


def run_search_bench(table: str | Path, column: str, output: str | Path, seeds: int = 10, budget: int = 300,
                     strategies: Sequence[str] = STRATEGIES[:4], prior_path: Optional[str] = None,
                     device: str = "cpu", stop_at_optimum: bool = True, concurrency: int = 1) -> Dict[str, Any]:
    """All strategies x seeds; writes ``search-<column>.json`` and ``.png`` under ``output``.

    ``stop_at_optimum`` ends a run once it has found the table optimum (its best-so-far curve is
    flat afterwards), for every strategy alike; ``concurrency`` trials in flight (:func:`run_strategy`).
    """
    truth = nb201_truth(table, column)
    optimum = float(truth.max())
    runs: List[Dict[str, Any]] = []
    for name in strategies:
        for seed in tqdm(range(seeds), desc=f"{name} on {column}"):
            run = run_one(name, table, column, seed, budget, prior_path, device,
                          stop_at=optimum - 1e-9 if stop_at_optimum else None, concurrency=concurrency)
            best = np.maximum.accumulate(run["metrics"]) if run["metrics"] else np.array([np.nan])
            hit = np.nonzero(best >= optimum - 1e-9)[0]
            run["queries_to_optimum"] = int(hit[0] + 1) if len(hit) else None
            run["best_so_far"] = best.tolist()
            runs.append(run)
            _logger.info("%s seed %d: best %.2f, optimum at %s, %.3f s/decision", name, seed, best[-1],
                         run["queries_to_optimum"], run["seconds_per_decision"])
    result = {"machine": machine_info(), "column": column, "table_optimum": optimum, "budget": budget,
              "stop_at_optimum": stop_at_optimum, "concurrency": concurrency,
              "seeds": seeds, "note": "NB201 table values are test accuracies (no validation split)",
              "runs": runs, "peak_rss_mb": round(peak_rss_mb(), 1)}
    out = Path(output)
    write_json(out / f"search-{column}.json", result)
    _plot(result, out / f"search-{column}.png")
    return result


def _curve(runs: List[Dict[str, Any]], budget: int) -> np.ndarray:
    """Best-so-far ``[seeds, budget]``; a run that stopped early keeps its last best."""
    return pad_curves([r["best_so_far"] for r in runs], budget)


def summarize(result: Dict[str, Any]) -> str:
    budget = result["budget"]
    names = list(dict.fromkeys(r["strategy"] for r in result["runs"]))
    lines = [f"{result['column']} (table optimum {result['table_optimum']:.2f}, test accuracy), budget {budget}, "
             f"{result['seeds']} seeds, {result.get('concurrency', 1)} trial(s) in flight",
             "", "| strategy | mean best @10 | @20 | @50 | @100 | @" + str(budget) + " | median queries to optimum | reached "
             "| s / decision |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        runs = [r for r in result["runs"] if r["strategy"] == name]
        curve = _curve(runs, budget)
        at = lambda q: curve[:, min(q, budget) - 1].mean()  # noqa: E731
        q = [r["queries_to_optimum"] for r in runs]
        reached = [x for x in q if x is not None]
        med = np.median([x if x is not None else np.inf for x in q])
        med_s = f"{med:g}" if np.isfinite(med) else f"> {budget}"  # 30.5, not a rounded 30
        lines.append(f"| {name} | {at(10):.2f} | {at(20):.2f} | {at(50):.2f} | {at(100):.2f} | {at(budget):.2f} | {med_s} | "
                     f"{len(reached)}/{len(q)} | {np.mean([r['seconds_per_decision'] for r in runs]):.3f} |")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = result["budget"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["strategy"] for r in result["runs"]):
        curve = _curve([r for r in result["runs"] if r["strategy"] == name], budget)
        x = np.arange(1, budget + 1)
        ax.plot(x, curve.mean(0), label=name)
        ax.fill_between(x, np.percentile(curve, 25, 0), np.percentile(curve, 75, 0), alpha=0.15)
    ax.axhline(result["table_optimum"], ls="--", color="k", lw=0.8, label="table optimum")
    lo = np.percentile([r["best_so_far"][0] for r in result["runs"]], 50)
    ax.set(xscale="log", xlabel="trained architectures", ylabel="best test accuracy so far (%)",
           title=f"NB201 {result['column']}: mean best-so-far, IQR band ({result['seeds']} seeds)",
           ylim=(lo, result["table_optimum"] + 0.3))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
