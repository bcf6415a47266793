"""``nni-diffusionnag bench durability``: what saving the search after every result costs.

A ``DiffusionNAGExperiment`` on NNI's sequential engine searches NAS-Bench-201 through the table
look-up evaluator (so the trials themselves cost nothing); every ``save_checkpoint`` call (the
experiment's checkpoint, strategy and engine state, written atomically after each result) is
timed, and so is the whole run. Reported: the mean and maximum time of one save, the checkpoint's
size, and the share of the run's wall time spent saving.
"""

from __future__ import annotations

import atexit
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from .common import machine_info, peak_rss_mb, write_json

__all__ = ["run_durability_bench", "summarize"]

_logger = logging.getLogger(__name__)


def run_durability_bench(table: str | Path, output: str | Path, budget: int = 50, seed: int = 0,
                         column: str = "cifar10_test_acc") -> Dict[str, Any]:
    import nni
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.hub.pytorch import NasBench201

    from ..integration.compat import DiffusionNAGExperiment
    from ..integration.evaluators import TabularEvaluator
    from ..integration.strategy import DiffusionNAG

    saves = []
    with tempfile.TemporaryDirectory() as work:
        config = NasExperimentConfig("sequential", "simplified", "local")
        config.max_trial_number = budget
        config.experiment_working_directory = work
        strategy = DiffusionNAG(seed=seed, device="cpu")
        exp = DiffusionNAGExperiment(NasBench201(), TabularEvaluator(str(table), column), strategy, config)
        real = exp.save_checkpoint

        def timed() -> None:
            t0 = time.perf_counter()
            real()
            saves.append(time.perf_counter() - t0)

        exp.save_checkpoint = timed
        t0 = time.perf_counter()
        exp.run()
        wall = time.perf_counter() - t0
        atexit.unregister(exp.stop)  # NNI registers a second stop() at exit: the folder is gone by then
        state = next(Path(work).rglob("state.ckpt*"))
        size = state.stat().st_size
    nni.trial._params = None  # the sequential engine leaves trial params set (NNI 3.0)
    result = {"budget": budget, "results": len(strategy.history()), "saves": len(saves),
              "save_ms_mean": 1000 * statistics.mean(saves), "save_ms_max": 1000 * max(saves),
              "checkpoint_kib": size / 1024, "wall_s": wall, "share_saving": sum(saves) / wall,
              "machine": machine_info(), "peak_rss_mb": peak_rss_mb()}
    write_json(Path(output) / "durability.json", result)
    return result


def summarize(result: Dict[str, Any]) -> str:
    return (f"{result['saves']} checkpoint saves for {result['results']} results: {result['save_ms_mean']:.1f} ms each "
            f"(max {result['save_ms_max']:.1f} ms), {result['checkpoint_kib']:.0f} KiB, "
            f"{100 * result['share_saving']:.1f}% of the run's {result['wall_s']:.1f} s")
