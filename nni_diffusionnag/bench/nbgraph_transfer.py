"""``nni-diffusionnag bench nbgraph-transfer``: leave-one-dataset-out transfer on NAS-Bench-Graph.

One architecture space (:class:`~.nbgraph.GraphCellSpace`, written as a user writes an NNI space)
measured on several graph datasets. For each *target* dataset, the other datasets are the sources:
a surrogate per source is trained on its validation results (every raw cell the table covers,
through the generic encoding; ``train_sources``), and DiffusionNAG searches the target with them
(``meta_predictor=``, weighed by the target's results as they come, transfer/sources.py). Each
source surrogate is trained once and reused for every target it is a source of.

Compared, on the same engine and evaluator as ``bench nbgraph`` (the metric is the table's
validation performance, so every strategy selects on validation): DiffusionNAG with transfer,
DiffusionNAG without it and NNI's ``RegularizedEvolution(20, 5, 0.2)``. Reported per target:
queries to the best-validation architecture, validation regret and the test regret of the
best-by-validation pick at 5, 10 and 20 queries, and the weights the sources ended with.

Also reported, as a bound that no method built on these sources can beat: the rank of the target's
best-validation entry under each source's own *table* (a perfect source surrogate) and under their
mean rank score.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from .common import machine_info, peak_rss_mb, write_json
from .hpo import parse_seeds
from .nbgraph import (DATASETS, check_installed, load_table, plot_panels, regret_cells, regrets, run_one,
                      table_summary)

__all__ = ["run_nbgraph_transfer_bench", "summarize", "STRATEGIES", "ALL_STRATEGIES", "CHECKPOINTS", "source_tables"]

_logger = logging.getLogger(__name__)

STRATEGIES = ("DiffusionNAG+transfer", "DiffusionNAG", "RegularizedEvolution")
#: Also accepted: one meta-surrogate trained on the sources pooled (no weighing), the ablation of §4.1.
ALL_STRATEGIES = STRATEGIES + ("DiffusionNAG+pooled",)
CHECKPOINTS = (5, 10, 20)


def _graph_space():
    """The generic graph space DiffusionNAG reads :class:`GraphCellSpace` through."""
    from nni.nas.space import SimplifiedModelSpace

    from ..integration.mutables import space_for_model
    from .nbgraph import GraphCellSpace

    return space_for_model(SimplifiedModelSpace.from_model(GraphCellSpace()))


def source_tables(space: Any, tables: Mapping[str, Mapping[int, Mapping[str, float]]]
                  ) -> Tuple[np.ndarray, Dict[str, np.ndarray], np.ndarray]:
    """Every raw cell ``types [M, N]``, its validation performance (%) per dataset of ``tables``
    ``{d: [M]}`` and its table hash ``[M]`` (isomorphic cells share one). The cell the table lacks
    (no GNN layer) is left out."""
    from .nbgraph import table_hash

    types = space.enumerate_types()
    if types is None:
        raise ValueError("the NAS-Bench-Graph space should be enumerable")
    hashes = np.array([table_hash(space.types_to_sample(t)) for t in types])
    first = next(iter(tables.values()))
    keep = np.array([h in first for h in hashes])
    values = {d: np.array([100.0 * float(t[h]["valid_perf"]) for h in hashes[keep]]) for d, t in tables.items()}
    return types[keep], values, hashes[keep]


def oracle_ranks(target: str, sources: Sequence[str], tables: Mapping[str, Mapping[int, Mapping[str, float]]]
                 ) -> Dict[str, Any]:
    """Rank (1 = best) of the target's best-validation entry under each source table and under
    their mean normal score: how far perfect source knowledge points from the target's best."""
    from ..nn.targets import standardise

    keys = sorted(tables[target])
    best_hashes = set(table_summary(tables[target])["best_valid_hashes"])
    best = np.array([k in best_hashes for k in keys])

    def rank_of(score: np.ndarray) -> int:
        order = np.argsort(-score, kind="stable")
        ranks = np.empty(len(score), dtype=int)
        ranks[order] = np.arange(1, len(score) + 1)
        return int(ranks[best].min())

    scores = {s: standardise(np.array([tables[s][k]["valid_perf"] for k in keys]), "rank") for s in sources}
    return {"entries": len(keys), "per_source": {s: rank_of(v) for s, v in scores.items()},
            "mean_of_sources": rank_of(np.mean(list(scores.values()), axis=0))}


def run_nbgraph_transfer_bench(output: str | Path, datasets: Sequence[str] = DATASETS, seeds: Any = 10,
                               budget: int = 20, strategies: Sequence[str] = STRATEGIES, device: str = "cpu",
                               meta_steps: int = 1500) -> Dict[str, Any]:
    """Leave each of ``datasets`` out in turn; writes ``nbgraph-transfer.json`` / ``.md`` / ``.png``."""
    import dataclasses

    from ..transfer.meta import DEFAULT_META_CONFIG, train_meta
    from ..transfer.sources import DEFAULT_SOURCE_CONFIG, SourceTasks

    check_installed()
    seeds = parse_seeds(seeds)
    bad = [s for s in strategies if s not in ALL_STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"unknown strategies {bad}; choose from {list(ALL_STRATEGIES)}")
    if len(datasets) < 2 or any(d not in DATASETS for d in datasets):
        raise ValueError(f"need at least 2 of {list(DATASETS)}, got {list(datasets)}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    space = _graph_space()
    tables = {d: load_table(d) for d in datasets}
    result: Dict[str, Any] = {"machine": machine_info(), "budget": budget, "seeds": seeds, "datasets": list(datasets),
                              "strategies": list(strategies), "meta_steps": meta_steps, "targets": [],
                              "note": "metric = table validation performance (%); sources = the other datasets' "
                                      "validation results; test regret = best test - test of the best-by-validation pick"}
    surrogates: Dict[str, Any] = {}
    sde = None
    if {"DiffusionNAG+transfer", "DiffusionNAG+pooled"} & set(strategies):
        types, values, _ = source_tables(space, tables)
    if "DiffusionNAG+transfer" in strategies:
        config = dataclasses.replace(DEFAULT_SOURCE_CONFIG, steps=meta_steps)
        t0 = time.time()
        for i, d in enumerate(datasets):
            meta = train_meta(space, {d: (types, values[d])}, config, seed=i, progress=True, device=device)
            surrogates[d], sde = meta.surrogate, meta.sde
        result["meta_train_seconds"] = round(time.time() - t0, 1)
        result["meta_rows_per_source"] = int(len(types))
    for target in datasets:
        sources = [d for d in datasets if d != target]
        ref = table_summary(tables[target])
        entry: Dict[str, Any] = {"target": target, "sources": sources, "table": ref,
                                 "oracle": oracle_ranks(target, sources, tables), "runs": []}
        path = out / f"sources-for-{target}.pt"
        if surrogates:
            SourceTasks(space, {s: surrogates[s] for s in sources}, sde, {"labels": "rank"}).save(path)
        pooled = out / f"pooled-for-{target}.pt"
        if "DiffusionNAG+pooled" in strategies:  # one network for the average of the sources
            train_meta(space, {s: (types, values[s]) for s in sources},
                       dataclasses.replace(DEFAULT_META_CONFIG, steps=meta_steps), output=pooled, progress=True,
                       device=device)
        with tqdm(total=len(strategies) * len(seeds), desc=f"transfer to {target}", unit="run") as bar:
            for name in strategies:
                for seed in seeds:
                    kw = {"DiffusionNAG+transfer": {"meta_predictor": str(path)},
                          "DiffusionNAG+pooled": {"meta_predictor": str(pooled)}}.get(name, {})
                    base = "DiffusionNAG" if name.startswith("DiffusionNAG") else name
                    run = run_one(base, target, seed, budget, device, tables[target], **kw)
                    run["strategy"] = name
                    run.update(regrets(run, ref, budget))
                    entry["runs"].append(run)
                    bar.update(1)
        result["targets"].append(entry)
        write_json(out / "nbgraph-transfer.json", result)  # partial results survive an interruption
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(out / "nbgraph-transfer.json", result)
    (out / "nbgraph-transfer.md").write_text(summarize(result) + "\n")
    _plot(result, out / "nbgraph-transfer.png")
    return result


def _median(q: List[Any], budget: int) -> str:
    med = float(np.median([x if x is not None else np.inf for x in q]))
    return f"{med:.0f}" if np.isfinite(med) else f"> {budget}"


def summarize(result: Mapping[str, Any]) -> str:
    budget = result["budget"]
    cols = [q for q in CHECKPOINTS if q <= budget]
    lines = [f"NAS-Bench-Graph leave-one-dataset-out, budget {budget}, {len(result['seeds'])} seeds; mean validation "
             "regret / mean test regret of the best-by-validation pick (points)", "",
             "| target | strategy | " + " | ".join(f"@{q}" for q in cols) +
             " | median queries to best valid (found) | s / query |", "|---|---|" + "---|" * (len(cols) + 2)]
    for t in result["targets"]:
        for name in result["strategies"]:
            runs = [r for r in t["runs"] if r["strategy"] == name]
            if not runs:
                continue
            q = [r["queries_to_best"] for r in runs]
            lines.append(f"| {t['target']} | {name} | " + " | ".join(regret_cells(runs, cols)) +
                f" | {_median(q, budget)} ({sum(x is not None for x in q)}/{len(q)}) | "
                f"{np.mean([r['seconds_per_query'] for r in runs]):.2f} |")
    lines += ["", "Rank of the target's best-validation entry (of 26,206) under each source's own table and under "
              "their mean (a bound for any transfer from these sources):", ""]
    for t in result["targets"]:
        o = t["oracle"]
        lines.append(f"- {t['target']}: mean of sources {o['mean_of_sources']}; " +
                     ", ".join(f"{s} {r}" for s, r in o["per_source"].items()))
    return "\n".join(lines)


def _plot(result: Mapping[str, Any], path: Path) -> None:
    panels = [(f"target {t['target']}", t["runs"]) for t in result["targets"]]
    plot_panels(panels, result["strategies"], "test_regret", result["budget"],
                f"NAS-Bench-Graph leave-one-dataset-out ({len(result['seeds'])} seeds; picked by validation)", path,
                ylabel="test regret of the pick (points)")
