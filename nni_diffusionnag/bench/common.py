"""Helpers shared by the benchmarks: the NB201 truth table, timing, memory, output files."""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

from ..space import NasBench201Space

__all__ = ["nb201_truth", "peak_rss_mb", "write_json", "machine_info", "search_nb201_table"]


def nb201_truth(csv_path: str | Path, column: str) -> np.ndarray:
    """Values of ``column`` for every cell, indexed like ``NasBench201Space().enumerate_types()``."""
    from ..integration.evaluators import load_nb201_table

    space = NasBench201Space()
    table = load_nb201_table(csv_path, column)
    return np.array([table[space.types_to_arch(t)] for t in space.enumerate_types()], dtype=np.float64)


def type_index(types: np.ndarray) -> np.ndarray:
    """Row of each NB201 graph ``[B, 8]`` in ``enumerate_types()`` order (base-5 op codes)."""
    ops = np.asarray(types)[..., 1:-1] - 2
    return (ops * (5 ** np.arange(5, -1, -1))).sum(-1)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info() -> Dict[str, Any]:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_json(path: Path, payload: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=float))


def pad_curves(curves: List[Any], budget: int, empty: float = float("nan")) -> np.ndarray:
    """Per-run curves (best-so-far, hypervolume...) as ``[runs, budget]``: a run that stopped early
    keeps its last value, a longer one is cut at ``budget``, an empty one is ``empty`` throughout."""
    rows = []
    for c in curves:
        c = np.asarray(c, dtype=float)[:budget]
        rows.append(np.concatenate([c, np.full(budget - len(c), c[-1] if len(c) else empty)]))
    return np.stack(rows)


def search_nb201_table(core: Any, value: Callable[[int], float], budget: int) -> List[int]:
    """Drive an NNI-free ``SearchCore`` on NB201 for ``budget`` queries, ``value(row)`` answering
    each proposal (``row``: its index in :func:`type_index` order); the rows in query order."""
    rows: List[int] = []
    while len(rows) < budget:
        samples = core.propose(min(core.batch_size, budget - len(rows)))
        if not samples:
            break
        for sample in samples:
            i = int(type_index(np.array(core.key_of(sample)))[()])
            rows.append(i)
            core.observe(sample, value(i))
    return rows
