"""``nni-diffusionnag bench transfer``: transferable NAS on the NB201 table (docs/benchmarks.md §4).

For each direction (CIFAR-10 -> CIFAR-100, CIFAR-100 -> CIFAR-10) a meta-surrogate is trained on
the whole *source* column, then the *target* column is searched through :func:`run_one` (NNI's
sequential engine, stop at the target optimum, same budget) by DiffusionNAG with the meta-surrogate,
DiffusionNAG without it, and NNI's ``RegularizedEvolution(20, 5, 0.2)``. Reported: queries (trained
architectures) to the target optimum per seed and their median. The table holds *test* accuracy
only (no validation split): picking and scoring by it is optimistic for every strategy alike, and
the two columns are strongly correlated (same architectures, related datasets), which is what
makes transfer easy here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from .common import machine_info, peak_rss_mb, write_json
from .search import run_one

__all__ = ["run_transfer_bench", "summarize", "DIRECTIONS", "TRANSFER_STRATEGIES"]

_logger = logging.getLogger(__name__)

DIRECTIONS: Tuple[Tuple[str, str], ...] = (("cifar10_test_acc", "cifar100_test_acc"),
                                           ("cifar100_test_acc", "cifar10_test_acc"))
TRANSFER_STRATEGIES = ("DiffusionNAG+transfer", "DiffusionNAG", "RegularizedEvolution")


def run_transfer_bench(table: str | Path, output: str | Path, seeds: int = 10, budget: int = 300,
                       strategies: Sequence[str] = TRANSFER_STRATEGIES, prior_path: Optional[str] = None,
                       device: str = "cpu", meta_steps: int = 1500) -> Dict[str, Any]:
    import dataclasses

    from ..transfer.meta import DEFAULT_META_CONFIG, read_task_csv, train_meta
    from ..space import NasBench201Space

    space = NasBench201Space()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"machine": machine_info(), "budget": budget, "seeds": seeds,
                              "note": "NB201 table values are test accuracies (no validation split)",
                              "directions": []}
    for source, target in DIRECTIONS:
        types, values = read_task_csv(space, table, source)
        _, tvalues = read_task_csv(space, table, target)
        optimum = float(np.nanmax(tvalues))
        meta_path = out / f"meta-{source}.pt"
        t0 = time.time()
        train_meta(space, {source: (types, values)}, dataclasses.replace(DEFAULT_META_CONFIG, steps=meta_steps),
                   output=meta_path, progress=True, device=device)
        meta_seconds = time.time() - t0
        runs: List[Dict[str, Any]] = []
        for name in strategies:
            for seed in tqdm(range(seeds), desc=f"{name}: {source} -> {target}"):
                run = run_one(name, table, target, seed, budget, prior_path, device, stop_at=optimum - 1e-9,
                              meta_predictor=str(meta_path))
                best = np.maximum.accumulate(run["metrics"]) if run["metrics"] else np.array([np.nan])
                hit = np.nonzero(best >= optimum - 1e-9)[0]
                run["queries_to_optimum"] = int(hit[0] + 1) if len(hit) else None
                run["first5_mean"] = float(np.mean(run["metrics"][:5])) if run["metrics"] else None
                runs.append(run)
                _logger.info("%s %s->%s seed %d: optimum at %s (%.1f s)", name, source, target, seed,
                             run["queries_to_optimum"], run["seconds"])
        result["directions"].append({"source": source, "target": target, "target_optimum": optimum,
                                     "meta_train_seconds": round(meta_seconds, 1), "runs": runs})
        write_json(out / "transfer.json", result)  # partial results survive an interruption
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(out / "transfer.json", result)
    (out / "transfer.md").write_text(summarize(result) + "\n")
    return result


def _median(q: List[Optional[int]]) -> float:
    return float(np.median([x if x is not None else np.inf for x in q]))


def summarize(result: Dict[str, Any]) -> str:
    budget = result["budget"]
    lines = [f"Transfer on the NB201 table (test accuracy only), budget {budget}, {result['seeds']} seeds; "
             "queries = trained architectures until the target optimum", "",
             "| source -> target | strategy | median queries | reached | per seed | mean of first 5 |",
             "|---|---|---|---|---|---|"]
    for d in result["directions"]:
        names = list(dict.fromkeys(r["strategy"] for r in d["runs"]))
        for name in names:
            runs = [r for r in d["runs"] if r["strategy"] == name]
            q = [r["queries_to_optimum"] for r in runs]
            med = _median(q)
            med_s = f"{med:.0f}" if np.isfinite(med) else f"> {budget}"
            per = ", ".join("-" if x is None else str(x) for x in q)
            f5 = np.mean([r["first5_mean"] for r in runs if r["first5_mean"] is not None])
            lines.append(f"| {d['source'].split('_')[0]} -> {d['target'].split('_')[0]} | {name} | {med_s} | "
                         f"{sum(x is not None for x in q)}/{len(q)} | {per} | {f5:.2f} |")
    return "\n".join(lines)
