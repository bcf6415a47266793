"""``nni-diffusionnag bench speed``: seconds to the first trial, per proposal round, and validity.

For each space (:data:`SPACES`), measured in this process on the generator's device:

- ``first_metric_s``: from calling the DiffusionNAG strategy on the space with NNI's
  ``SequentialExecutionEngine`` to the first result of a trivial evaluator: what a user waits
  before the first trial starts (space encoding, prior, first proposal), NNI's engine included;
- ``round_s``: one guided proposal round as the strategy runs it (``n_candidates`` graphs guided
  by a surrogate fitted on ``n_results`` random architectures, ranked, ``batch_size`` returned),
  split into the surrogate fit and the generation; the median of ``repeats`` rounds;
- ``valid``: the fraction of ``n_valid`` proposed architectures that the NNI model space
  ``contains`` (constraints included) after decoding: strict validity as the trial sees it.

The prior is whatever ``prior_kind='auto'`` picks for the space (reported). Timings depend on the
machine and on what else runs on it: time benchmarks alone.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

from ..integration import compat

compat.install()  # NNI's warnings filter before nni.nas.nn is imported

import nni  # noqa: E402
import torch.nn as tnn  # noqa: E402
from nni.mutable import ensure_frozen  # noqa: E402
from nni.mutable.annotation import ExpressionConstraint  # noqa: E402
from nni.nas.evaluator import Evaluator  # noqa: E402
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, model_context  # noqa: E402

from .common import machine_info, peak_rss_mb, write_json  # noqa: E402

__all__ = ["SPACES", "run_speed_bench", "summarize"]

_logger = logging.getLogger(__name__)


class ConstrainedSpace(ModelSpace):
    """A user space with dependencies: widths tied by a constraint, and a 2-of-4 ``InputChoice``."""

    def __init__(self) -> None:
        super().__init__()
        widths = [16, 32, 64, 128]
        self.w1 = self.add_mutable(nni.choice("width1", widths))
        self.w2 = self.add_mutable(nni.choice("width2", widths))
        ensure_frozen(self.w1), ensure_frozen(self.w2)
        self.add_mutable(ExpressionConstraint(self.w1 + self.w2 <= 128, label="width_budget"))
        self.ops = tnn.ModuleList([LayerChoice([tnn.ReLU(), tnn.Tanh(), tnn.GELU(), tnn.Identity()], label=f"act{i}")
                                   for i in range(6)])
        self.skip = InputChoice(4, n_chosen=2, label="skip")

    def freeze(self, sample):  # NNI 3.0 asks a space that calls add_mutable to rebuild itself
        self.validate(sample)
        with model_context(sample):
            return ConstrainedSpace()


def _nb201():
    from nni.nas.hub.pytorch import NasBench201

    return NasBench201()


def _mbv3():
    from nni.nas.hub.pytorch import MobileNetV3Space

    return MobileNetV3Space()


def _proxyless():
    from nni.nas.hub.pytorch import ProxylessNAS

    return ProxylessNAS()


def _nbgraph():
    from .nbgraph import GraphCellSpace

    return GraphCellSpace()


#: name -> factory of the NNI model space.
SPACES: Dict[str, Callable[[], Any]] = {
    "nasbench201": _nb201,
    "mobilenetv3": _mbv3,
    "proxylessnas": _proxyless,
    "constrained": ConstrainedSpace,
    "nbgraph": _nbgraph,
}


@nni.trace
class _Instant(Evaluator):
    """Reports 0 at once: the first-trial clock stops at the first result."""

    def _execute(self, model: Any) -> float:
        nni.report_final_result(0.0)
        return 0.0


def _first_metric_seconds(model_space: Any, device: str) -> float:
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import SimplifiedModelSpace

    from ..integration.strategy import DiffusionNAG

    t0 = time.perf_counter()
    space = SimplifiedModelSpace.from_model(model_space, _Instant())
    DiffusionNAG(seed=0, device=device)(space, SequentialExecutionEngine(max_model_count=1))
    seconds = time.perf_counter() - t0
    nni.trial._params = None  # the sequential engine leaves trial params set (NNI 3.0 bug)
    return seconds


def _measure(name: str, device: str, n_results: int, repeats: int, n_valid: int,
             overrides: Dict[str, Any]) -> Dict[str, Any]:
    from ..integration.mutables import space_for_model
    from ..search.config import SearchConfig
    from ..search.core import SearchCore

    model_space = SPACES[name]()
    first = _first_metric_seconds(model_space, device)
    space = space_for_model(model_space)
    config = SearchConfig.from_kwargs(seed=0, device=device, **overrides)
    core = SearchCore(space, config, model_space=model_space)
    gen, loop, acq = core.generator, config.loop, config.acquisition
    rng = np.random.default_rng(0)
    types = space.random_valid_types(n_results, rng) if hasattr(space, "random_valid_types") else \
        space.random_types(n_results, rng)
    values = rng.normal(size=len(types))  # the values do not change the cost of a round
    fits, gens = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        gen.fit(types, values)
        t1 = time.perf_counter()
        gen.propose(core.batch_size, set(), loop.n_candidates, core.scale, acq.acquisition, acq.kappa, seed=r)
        fits.append(t1 - t0)
        gens.append(time.perf_counter() - t1)
    proposed: List[np.ndarray] = []
    seed = 100
    while sum(map(len, proposed)) < n_valid and seed < 200:
        proposed.append(gen.propose(50, set(), 100, core.scale, acq.acquisition, acq.kappa, seed=seed))
        seed += 1
    cand = np.concatenate(proposed)[:n_valid]
    valid = float(np.mean([bool(model_space.contains(space.types_to_sample(t))) for t in cand])) if len(cand) else 0.0
    fit_s, gen_s = statistics.median(fits), statistics.median(gens)
    row = {"space": name, "encoding": space.name, "nodes": space.num_nodes, "types": space.num_types,
           "prior": getattr(core.generator.prior, "kind", type(core.generator.prior).__name__),
           "surrogate": type(core.generator.surrogate).__name__, "batch_size": core.batch_size,
           "first_metric_s": round(first, 3), "fit_s": round(fit_s, 3), "generate_s": round(gen_s, 3),
           "round_s": round(fit_s + gen_s, 3), "valid": valid, "checked": int(len(cand))}
    _logger.info("%s: %s", name, row)
    return row


def run_speed_bench(output: str | Path, spaces: Sequence[str] = tuple(SPACES), device: str = "cpu",
                    n_results: int = 20, repeats: int = 3, n_valid: int = 500, **overrides: Any) -> Dict[str, Any]:
    """Measure every space; writes ``speed.json`` and ``speed.png`` under ``output``.

    ``overrides``: DiffusionNAG settings by their flat names (default: the defaults) for the
    measured rounds; the first-result clock always uses the defaults.
    """
    unknown = [s for s in spaces if s not in SPACES]
    if unknown or not spaces:
        raise ValueError(f"unknown spaces {unknown}; choose from {list(SPACES)}")
    from tqdm.auto import tqdm

    from ..search.config import SearchConfig

    loop = SearchConfig.from_kwargs(**overrides).loop  # bad overrides fail here, before any measurement
    rows = [_measure(name, device, n_results, repeats, n_valid, overrides) for name in tqdm(spaces, desc="bench speed")]
    result = {"machine": machine_info(), "device": device, "n_results": n_results, "repeats": repeats,
              "n_candidates": loop.n_candidates, "batch_size": loop.batch_size, "threads": loop.threads,
              "overrides": {k: str(v) for k, v in overrides.items()}, "rows": rows, "peak_rss_mb": round(peak_rss_mb(), 1)}
    out = Path(output)
    write_json(out / "speed.json", result)
    _plot(result, out / "speed.png")
    return result


def summarize(result: Dict[str, Any]) -> str:
    lines = [f"{result['n_candidates']} guided candidates per round, surrogate on {result['n_results']} results, "
             f"device {result['device']}, {result['threads']} torch thread(s) per round", "",
             "| space | encoding (nodes x types) | prior | first result (s) | round (s) = fit + generate | valid |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['space']} | {r['encoding']} ({r['nodes']} x {r['types']}) | {r['prior']} | "
                     f"{r['first_metric_s']:.2f} | {r['round_s']:.2f} = {r['fit_s']:.2f} + {r['generate_s']:.2f} | "
                     f"{r['valid']:.1%} of {r['checked']} |")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    names = [r["space"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, [r["first_metric_s"] for r in rows], 0.4, label="to the first result")
    ax.bar(x + 0.2, [r["fit_s"] for r in rows], 0.4, label="round: surrogate fit")
    ax.bar(x + 0.2, [r["generate_s"] for r in rows], 0.4, bottom=[r["fit_s"] for r in rows],
           label="round: guided generation")
    ax.set(xticks=x, xticklabels=names, ylabel="seconds", title=f"DiffusionNAG speed ({result['device']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
