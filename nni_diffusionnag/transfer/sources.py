"""Several source tasks, each weighed by how well it predicts the target's own results.

A pooled meta-surrogate (:mod:`.meta`) learns the average of its tasks. When the target resembles
some sources and not others (NAS-Bench-Graph: cora ranks architectures like citeseer and pubmed,
unlike cs, physics and photo; docs/benchmarks.md §4), that average misleads it. Here every source
task keeps a noise-aware surrogate of its own (:class:`SourceTasks`) and the search combines them
with weights read from the target's results so far (docs/design.md, 'Transfer from several tasks').

In the standardised (rank-normal) units every task is trained in, the target prediction is

    mu(x) = c * m(x) + r(x),      m(x) = sum_s w_s f_s(x) / sum_s w_s

- ``w_s = max(0, tau_s)``, with ``tau_s`` Kendall's tau between source ``s``'s predictions and the
  target's results: a source that orders them no better than chance, or the wrong way, gets none;
- ``c = sin(pi/2 * tau_c)`` with ``tau_c`` the tau of ``m`` itself: for standardised normal scores
  that is their correlation (Greiner's relation), the slope of the best linear prior mean, so a
  weakly related combination is a weak prior;
- ``r``: the loop's own surrogate, fitted to the residuals ``y - c m(x)``: where the target's
  results disagree with the sources it takes over, and a target unlike every source (every
  ``tau_s <= 0``) is searched as if there were no sources at all.

Before ``min_results`` target results the weights are equal and ``c = 1``: the first proposals
are the sources' consensus. A source whose share ``c * w_s`` is below ``MIN_WEIGHT`` is dropped
(:func:`effective_weights`): it would cost guidance time for next to no change of the prediction. The combination is a stack of a prior mean and a residual model in
the spirit of Google Vizier's transfer (Golovin et al., KDD 2017), with rank-based weights as in
ranking-weighted ensembles (Feurer et al., 2018).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..diffusion.decoding import to_features
from ..diffusion.sde import SDE
from ..nn.config import SurrogateConfig
from ..nn.stacked import stack_members, stacked_forward
from ..nn.surrogate import SurrogateEnsemble
from ..prior.checkpoint import save_checkpoint
from ..space.base import GraphSpace
from .meta import checkpoint_header, cpu_state, ensemble_reader, train_meta

__all__ = ["SourceTasks", "WeightedSources", "source_weights", "effective_weights", "train_sources", "load_sources",
           "MIN_RESULTS", "MIN_WEIGHT", "DEFAULT_SOURCE_CONFIG"]

_logger = logging.getLogger(__name__)

#: Target results before the weights are read from them (Kendall's tau on fewer is mostly noise).
MIN_RESULTS = 5

#: Smallest share ``c * w_s`` of the prior mean a source keeps (:func:`effective_weights`).
MIN_WEIGHT = 0.05

#: Per-source training settings: the meta-surrogate's, with 2 members instead of 5. Only the
#: sources' mean is used (the spread comes from the residual model), and every member of every
#: source is evaluated at each guidance step: five sources of 5 members cost 3.5-4.7 s per
#: proposal on NAS-Bench-Graph on this CPU (docs/benchmarks.md §4).
DEFAULT_SOURCE_CONFIG = SurrogateConfig(hidden=32, num_layers=3, ensemble=2, steps=1500, batch_size=256, lr=3e-3)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(a, b).statistic  # tau-b: ties (equal results) are handled
    return 0.0 if tau is None or not math.isfinite(float(tau)) else float(tau)


def source_weights(predictions: np.ndarray, targets: np.ndarray, min_results: int = MIN_RESULTS
                   ) -> Tuple[np.ndarray, float]:
    """Weights ``w [S]`` (summing to 1, or all 0) and the scale ``c`` of the sources' prior mean.

    Parameters
    ----------
    predictions
        ``[S, n]``: each source's prediction for the target's ``n`` results so far.
    targets
        ``[n]``: the target's results, higher is better (any monotone units: only ranks count).
    min_results
        Below this many results: equal weights and ``c = 1``.
    """
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n_sources = len(predictions)
    if predictions.ndim != 2 or predictions.shape[1] != len(targets):
        raise ValueError(f"predictions must be [S, {len(targets)}], got {predictions.shape}")
    if len(targets) < max(2, min_results):
        return np.full(n_sources, 1.0 / n_sources), 1.0
    w = np.array([max(0.0, _kendall(p, targets)) for p in predictions])
    if w.sum() <= 0:
        return np.zeros(n_sources), 0.0
    w = w / w.sum()
    tau_c = _kendall(w @ predictions, targets)
    return w, max(0.0, math.sin(math.pi / 2 * tau_c))


def effective_weights(weights: np.ndarray, scale: float, min_weight: float = MIN_WEIGHT) -> np.ndarray:
    """``[S]``: ``scale * weights`` with every entry below ``min_weight`` set to 0.

    A source with a tiny share of the prior mean changes it by less than the residual model's own
    error, yet costs as much guidance time as any other (all its members run at every sampler
    step); dropped, it costs nothing (:class:`WeightedSources` skips zero weights).
    """
    eff = scale * np.asarray(weights, dtype=np.float64)
    return np.where(eff >= min_weight, eff, 0.0)


class WeightedSources(nn.Module):
    """``(mean, std)`` of ``c * sum_s w_s f_s(x) + r(x)`` for guidance and ranking.

    The sources are frozen; ``residual`` (the loop's surrogate fitted on what the sources miss) may
    be ``None`` before any target results, the std is then 0 (the sources' consensus is ranked by
    its mean alone).
    """

    def __init__(self, sources: Sequence[SurrogateEnsemble], weights: np.ndarray, residual: Optional[nn.Module] = None
                 ) -> None:
        super().__init__()
        weights = np.asarray(weights, dtype=np.float64)
        pairs = [(float(w), s) for w, s in zip(weights, sources) if w != 0.0]  # a source without weight costs nothing
        active = [s for _, s in pairs]
        self.template = active[0].members[0] if active else None
        # all members of all weighted sources in one batched network (nn/stacked.py): the sum over
        # sources and their members' mean is then one linear map of the members' raw outputs
        self.stack = stack_members([m for s in active for m in s.members]) if active else None
        coef = [w * float(s.y_std) / len(s.members) for w, s in pairs for _ in s.members]
        self.register_buffer("coef", torch.tensor(coef, dtype=torch.float32))
        self.register_buffer("offset", torch.tensor(sum(w * float(s.y_mean) for w, s in pairs), dtype=torch.float32))
        self.residual = residual
        # the label scale the generator divides guidance by: every term here is in standardised units
        self.register_buffer("y_std", torch.ones(()))

    def forward(self, x: torch.Tensor, noise_level: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.stack is None:
            mean = x.new_zeros(len(x))
        else:
            mean = self.coef.to(x.device) @ stacked_forward(self.stack, self.template, x, noise_level) + self.offset
        if self.residual is None:
            return mean, torch.zeros_like(mean)
        r_mean, r_std = self.residual(x, noise_level)
        return mean + r_mean, r_std


class SourceTasks:
    """One trained surrogate per source task (standardised units), their SDE and task names."""

    def __init__(self, space: GraphSpace, surrogates: Mapping[str, SurrogateEnsemble], sde: SDE,
                 info: Optional[Dict[str, Any]] = None) -> None:
        if not surrogates:
            raise ValueError("SourceTasks needs at least one source task")
        self.space, self.sde = space, sde
        self.tasks = list(surrogates)
        self.surrogates = [s.eval().requires_grad_(False) for s in surrogates.values()]
        self.info = dict(info or {})

    @property
    def config(self) -> SurrogateConfig:
        return self.surrogates[0].config

    @torch.no_grad()
    def predict_each(self, types: np.ndarray, eps: float = 1e-5) -> np.ndarray:
        """``[S, B]``: every source's standardised prediction for clean graphs ``[B, N]``."""
        dev = self.surrogates[0].y_mean.device
        x = to_features(torch.as_tensor(np.asarray(types), dtype=torch.long, device=dev), self.space.num_types)
        level = self.sde.noise_level(torch.full((len(x),), eps, device=dev))
        return np.stack([s(x, level)[0].cpu().numpy() for s in self.surrogates])

    def combine(self, weights: np.ndarray, residual: Optional[nn.Module] = None) -> WeightedSources:
        return WeightedSources(self.surrogates, weights, residual)

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, "meta", self.space.signature(), {
            **checkpoint_header(self.tasks, self.config, self.sde, self.info),
            "sources": {t: cpu_state(s) for t, s in zip(self.tasks, self.surrogates)},
        })


def train_sources(space: GraphSpace, tasks: Mapping[str, Tuple[np.ndarray, np.ndarray]],
                  config: SurrogateConfig = DEFAULT_SOURCE_CONFIG,
                  sde: Optional[SDE] = None, seed: int = 0, output: Optional[str | Path] = None,
                  progress: bool = True, device: str = "cpu", labels: str = "rank") -> SourceTasks:
    """One meta-surrogate per task (:func:`.meta.train_meta` on each alone), saved together."""
    if len(tasks) < 2:
        raise ValueError(f"per-task sources need at least 2 tasks, got {len(tasks)}; one task is a plain "
                         "meta-surrogate (train_meta)")
    t0 = time.time()
    trained = {name: train_meta(space, {name: table}, config, sde=sde, seed=seed + i, progress=progress,
                                device=device, labels=labels)
               for i, (name, table) in enumerate(tasks.items())}
    first = next(iter(trained.values()))
    out = SourceTasks(space, {n: m.surrogate for n, m in trained.items()}, first.sde,
                      {"labels": labels, "seconds": round(time.time() - t0, 1), "seed": seed,
                       "rows": {n: m.info["rows"] for n, m in trained.items()},
                       "train_mse": {n: m.info["train_mse"] for n, m in trained.items()}})
    if output is not None:
        out.save(output)
    return out


def load_sources(ckpt: Mapping[str, Any], space: GraphSpace, device: str = "cpu") -> SourceTasks:
    """:class:`SourceTasks` from a loaded ``meta`` checkpoint that holds ``sources``."""
    sde, build = ensemble_reader(ckpt, space, device)
    return SourceTasks(space, {name: build(ckpt["sources"][name]) for name in ckpt["tasks"]}, sde, ckpt.get("info"))
