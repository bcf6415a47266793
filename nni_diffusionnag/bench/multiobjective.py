"""``nni-diffusionnag bench multiobjective``: hypervolume against trained architectures on NB201.

Two objectives per column: the table's accuracy (maximised; NB201's table holds *test* accuracy
only, there is no validation split) and the cell's exact cost (``params`` or ``flops``,
minimised, from :mod:`nni_diffusionnag.properties.nasbench201`). Every method gets the same
budget of table look-ups; a query that repeats an architecture still counts (a user would train
it again). Reported: the hypervolume of what each method found, as a fraction of the true
front's (all 15,625 cells), at 10/20/50/100 queries, and the queries to 95% of it. Reference
point: the table's median accuracy and its largest cost (stated in the JSON).

Methods: ``DiffusionNAG-MO`` (``objectives=[cost]``: per-graph Chebyshev guidance, batch picked by
hypervolume improvement), ``DiffusionNAG-sum`` (the single-objective search on a fixed weighted
sum of the two range-normalised objectives, weight 0.5 each), ``Random`` (uniform without repeats,
what NNI's Random strategy does), and Optuna's ``NSGAII`` and multi-objective ``TPE`` samplers
(Optuna is a benchmark-only dependency, in the ``bench`` extra).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from ..search.pareto import hypervolume, hypervolume_curve, pareto_mask
from .common import machine_info, nb201_truth, pad_curves, peak_rss_mb, search_nb201_table, write_json

__all__ = ["run_multiobjective_bench", "output_stem", "summarize", "METHODS", "COSTS"]

_logger = logging.getLogger(__name__)

METHODS = ("DiffusionNAG-MO", "DiffusionNAG-sum", "Random", "NSGAII", "TPE")
COSTS = ("params", "flops", "latency")  # latency: NAS-Bench-Graph's measured latency (bench/nbgraph_mo.py)
CHECKPOINTS = (10, 20, 50, 100)


def _table(table: str | Path, column: str, cost: str) -> Dict[str, Any]:
    from ..properties.nasbench201 import count
    from ..space import NasBench201Space

    space = NasBench201Space()
    types = space.enumerate_types()
    acc = nb201_truth(table, column)
    c = np.asarray(count(types, cost), dtype=np.float64)
    y = np.stack([acc, -c], axis=1)  # maximised
    # the table's median accuracy: below it nothing counts, so the figure is about the region a user
    # would pick from (with the worst accuracy, 10%, random search had 95% within 8 queries)
    ref = np.array([np.median(acc), -c.max()])
    front = pareto_mask(y)
    return {"space": space, "types": types, "acc": acc, "cost": c, "y": y, "ref": ref,
            "true_hv": hypervolume(y[front], ref), "front_size": int(front.sum())}


def _run_diffusionnag(t: Dict[str, Any], cost: str, seed: int, budget: int, mode: str, device: str,
                      extra: Optional[Dict[str, Any]] = None) -> List[int]:
    from ..search.config import SearchConfig
    from ..search.core import SearchCore

    space = t["space"]
    extra = extra or {}
    if mode == "MO":
        config = SearchConfig.from_kwargs(seed=seed, device=device, objectives=[cost], **extra)
        value = lambda i: float(t["acc"][i])  # noqa: E731
    else:
        lo, hi = t["y"].min(axis=0), t["y"].max(axis=0)
        norm = (t["y"] - lo) / (hi - lo)
        config = SearchConfig.from_kwargs(seed=seed, device=device, **extra)
        value = lambda i: float(0.5 * norm[i, 0] + 0.5 * norm[i, 1])  # noqa: E731
    return search_nb201_table(SearchCore(space, config), value, budget)


def _run_random(t: Dict[str, Any], seed: int, budget: int) -> List[int]:
    return np.random.default_rng(seed).permutation(len(t["types"]))[:budget].tolist()


def _run_optuna(t: Dict[str, Any], seed: int, budget: int, sampler_name: str) -> List[int]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ops = list(range(5))  # an edge's op code, in the order of NasBench201Space (bench/common.type_index)
    sampler = (optuna.samplers.NSGAIISampler(seed=seed) if sampler_name == "NSGAII"
               else optuna.samplers.TPESampler(seed=seed))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    rows: List[int] = []

    def objective(trial: Any) -> Sequence[float]:
        code = np.array([trial.suggest_categorical(f"edge{e}", ops) for e in range(6)])
        i = int((code * (5 ** np.arange(5, -1, -1))).sum())
        rows.append(i)
        return float(t["y"][i, 0]), float(t["y"][i, 1])

    study.optimize(objective, n_trials=budget)
    return rows


# set by the bench itself for every run: a method's settings may not change them
RESERVED_SETTINGS = ("seed", "device", "objectives")


def method_settings(method: str) -> Dict[str, Any]:
    """The DiffusionNAG settings of ``'DiffusionNAG-MO:key=value:...'`` (``{}`` for a plain name);
    ``ValueError`` for settings on another method or on what the bench sets itself."""
    from .search import ablation_kwargs

    extra = ablation_kwargs(method)
    if extra and not method.startswith("DiffusionNAG"):
        raise ValueError(f"{method!r}: only the DiffusionNAG methods take settings")
    reserved = sorted(set(extra) & set(RESERVED_SETTINGS))
    if reserved:
        raise ValueError(f"{method!r}: {reserved} are set by the bench (--seeds, --device, the method's name)")
    return extra


def run_one(t: Dict[str, Any], method: str, cost: str, seed: int, budget: int, device: str = "cpu") -> Dict[str, Any]:
    """One search; ``method`` is one of :data:`METHODS`, and a DiffusionNAG method may carry settings
    as ``'DiffusionNAG-MO:key=value:...'`` (read as ``bench search`` reads its ablations)."""
    from .search import ablation_base

    extra = method_settings(method)
    runners: Dict[str, Callable[[], List[int]]] = {
        "DiffusionNAG-MO": lambda: _run_diffusionnag(t, cost, seed, budget, "MO", device, extra),
        "DiffusionNAG-sum": lambda: _run_diffusionnag(t, cost, seed, budget, "sum", device, extra),
        "Random": lambda: _run_random(t, seed, budget),
        "NSGAII": lambda: _run_optuna(t, seed, budget, "NSGAII"),
        "TPE": lambda: _run_optuna(t, seed, budget, "TPE"),
    }
    t0 = time.time()
    rows = runners[ablation_base(method)]()
    seconds = time.time() - t0
    hv = hypervolume_curve(t["y"][rows], t["ref"]) / t["true_hv"]
    hit = np.flatnonzero(hv >= 0.95)
    return {"method": method, "seed": seed, "rows": rows, "hv_fraction": hv.round(5).tolist(),
            "queries_to_95": int(hit[0] + 1) if len(hit) else None, "distinct": len(set(rows)),
            "seconds": round(seconds, 2)}


def output_stem(costs: Sequence[str], column: str) -> str:
    """``multiobjective-<column>`` for the NB201 costs, ``multiobjective-nbgraph`` for NAS-Bench-Graph
    latency, both joined by ``+`` when one run has both."""
    parts = ([column] if any(c != "latency" for c in costs) else []) + (["nbgraph"] if "latency" in costs else [])
    return "multiobjective-" + "+".join(parts)


def run_multiobjective_bench(table: Optional[str | Path], output: str | Path, costs: Sequence[str] = COSTS,
                             column: str = "cifar10_test_acc", seeds: Sequence[int] = tuple(range(10)),
                             budget: int = 100, methods: Sequence[str] = METHODS, device: str = "cpu",
                             datasets: Sequence[str] = ()) -> Dict[str, Any]:
    """Every method x seed on each column: NB201 ``column`` x each exact cost (``params``,
    ``flops``), and for ``latency`` NAS-Bench-Graph validation x latency on each of ``datasets``;
    writes ``multiobjective-<what ran>.json`` and ``.png`` under ``output`` (:func:`output_stem`)."""
    out = Path(output)
    stem = output_stem(costs, column)
    result: Dict[str, Any] = {"machine": machine_info(), "column": column, "budget": budget, "seeds": list(seeds),
                              "note": "NB201 table values are test accuracies (no validation split); NAS-Bench-Graph "
                                      "columns select on validation; hypervolume as a fraction of the true front's; "
                                      "reference point: the table's median accuracy (validation performance) and "
                                      "its largest cost (latency)", "columns": {}}
    jobs: List[Tuple[str, Any, Callable[[str, int], Dict[str, Any]]]] = []
    for cost in costs:
        if cost == "latency":
            from . import nbgraph_mo

            for dataset in datasets:
                t = nbgraph_mo.nbgraph_table(dataset)
                title = (f"NAS-Bench-Graph {dataset}: validation % x latency (ms); true front {t['front_size']} "
                         f"entries, reference point validation {t['ref'][0]:.2f}%, latency {-t['ref'][1]:.3f} ms")
                jobs.append((f"{dataset} x latency", (t, title),
                             lambda m, s, t=t: nbgraph_mo.run_one(t, m, s, budget, device)))
        else:
            t = _table(table, column, cost)
            title = (f"NB201 accuracy ({column}, test) x {cost}: true front {t['front_size']} cells, reference point "
                     f"accuracy {t['ref'][0]:.2f}, {cost} {-t['ref'][1] / 1e6:.3f} M")
            jobs.append((f"accuracy x {cost}", (t, title), lambda m, s, t=t, c=cost: run_one(t, m, c, s, budget, device)))
    for name, (t, title), run_fn in jobs:
        runs = []
        for method in methods:
            for seed in tqdm(list(seeds), desc=f"{method} on {name}"):
                run = run_fn(method, seed)
                runs.append(run)
                _logger.info("%s on %s seed %d: HV@%d %.3f, 95%% at %s, %.1f s", method, name, seed, budget,
                             run["hv_fraction"][-1], run["queries_to_95"], run["seconds"])
            result["columns"][name] = {"title": title, "reference_point": t["ref"].tolist(),
                                       "true_hypervolume": t["true_hv"], "true_front_size": t["front_size"],
                                       "runs": runs}
            result["peak_rss_mb"] = round(peak_rss_mb(), 1)
            write_json(out / f"{stem}.json", result)  # after every method: a killed run keeps what it finished
    _plot(result, out / f"{stem}.png")
    return result


def _curves(runs: List[Dict[str, Any]], budget: int) -> np.ndarray:
    return pad_curves([r["hv_fraction"] for r in runs], budget, empty=0.0)


def summarize(result: Dict[str, Any]) -> str:
    budget = result["budget"]
    lines = []
    for col in result["columns"].values():
        lines += [f"{col['title']}; {len(result['seeds'])} seeds", "", "| method | HV @10 | @20 | @50 | @100 | median queries to 95% | reached | s / query |",
                  "|---|---|---|---|---|---|---|---|"]
        for method in dict.fromkeys(r["method"] for r in col["runs"]):
            runs = [r for r in col["runs"] if r["method"] == method]
            curve = _curves(runs, budget)
            at = [f"{curve[:, min(q, budget) - 1].mean():.3f}" for q in CHECKPOINTS]
            q = [r["queries_to_95"] if r["queries_to_95"] is not None else np.inf for r in runs]
            med = np.median(q)
            med_s = f"{med:.0f}" if np.isfinite(med) else f"> {budget}"
            per_query = np.mean([r["seconds"] / max(1, len(r["rows"])) for r in runs])
            lines.append(f"| {method} | {' | '.join(at)} | {med_s} | {sum(np.isfinite(q))}/{len(q)} | {per_query:.3f} |")
        lines.append("")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = result["budget"]
    cols = result["columns"]
    fig, axes = plt.subplots(1, len(cols), figsize=(6.5 * len(cols), 4.5), squeeze=False)
    for ax, (name, col) in zip(axes[0], cols.items()):
        for method in dict.fromkeys(r["method"] for r in col["runs"]):
            curve = _curves([r for r in col["runs"] if r["method"] == method], budget)
            x = np.arange(1, budget + 1)
            ax.plot(x, curve.mean(0), label=method)
            ax.fill_between(x, np.percentile(curve, 25, 0), np.percentile(curve, 75, 0), alpha=0.15)
        ax.axhline(0.95, ls="--", color="k", lw=0.8)
        ax.set(xlabel="trained architectures", ylabel="hypervolume / true front's",
               title=f"{name}: mean, IQR ({len(result['seeds'])} seeds)", ylim=(0.3, 1.0))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
