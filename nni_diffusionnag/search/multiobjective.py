"""Multi-objective guided generation: one batch spread along the Pareto front (docs/design.md,
"Multi-objective search").

The trial's ``default`` metric is objective 0; the configuration's
:class:`~nni_diffusionnag.search.config.Objective` entries follow: costs with an exact model
(``params``/``flops``: computed, relaxed for guidance as their expectation under the noisy
features) and metrics the trials report (a surrogate ensemble each). Everything here works on
*maximised* values (a minimised objective enters negated).

- **Guidance by a per-graph scalarisation of the learned objectives** (ParEGO, Knowles 2006):
  every graph of a generated batch draws its own weights ``w ~ Dirichlet(1)`` and is pushed up
  the augmented Chebyshev scalarisation ``-(max_j w_j d_j + rho sum_j w_j d_j)`` of its distances
  ``d_j = 1 - v_j`` to the ideal point, with ``v_j`` the optimistic prediction (mean + kappa std)
  normalised by the observed front's box. Only objectives a surrogate predicts take part (the
  default metric and reported ones); an exact cost's gradient is exact and strong and, measured
  on NB201, pulled whole batches to the cheapest cells, where the young accuracy surrogate is
  most wrong. Exact costs enter at selection instead, where they are exact.
- **Batch selection by expected hypervolume improvement**: candidates are picked greedily, each
  the one whose Monte Carlo expected improvement (:data:`EHVI_SAMPLES` Gaussian draws from the
  surrogates' mean and spread; costs exact) of the observed front plus the picks so far is
  largest; a pick joins the front at its mean. Reference point (:func:`_reference`): the median
  result in the trial metric, below the worst result in the other objectives. When nothing
  improves it, a candidate is ranked by its own scalarisation. An optimistic (mean + kappa std)
  improvement instead trusted the surrogate where it knew least.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

import numpy as np
import torch

from ..diffusion.guidance import GuidanceTerm
from ..nn.factory import Surrogate
from .config import Objective
from .generator import GuidedGenerator
from .pareto import hypervolume_improvement, pareto_mask

__all__ = ["MultiObjective", "RHO"]

_logger = logging.getLogger(__name__)

RHO = 0.05  # weight of the sum in the augmented Chebyshev scalarisation (ParEGO's value)
EHVI_SAMPLES = 64  # Monte Carlo draws of the expected hypervolume improvement


class MultiObjective:
    """The objectives of a search beside its default metric (see the module docstring).

    Parameters
    ----------
    objectives
        The extra objectives (the configuration's).
    generator
        The search's generator: its surrogate learns the default metric.
    model_space
        The NNI model space, for cost models that read it (MobileNetV3).
    default_mode
        ``'maximize'`` or ``'minimize'``: the direction of the default metric.
    """

    def __init__(self, objectives: Sequence[Objective], generator: GuidedGenerator, model_space: Any = None,
                 default_mode: str = "maximize", latency_model: Any = None) -> None:
        from ..properties.budgets import budget_for_space, latency_for_space

        self.objectives = list(objectives)
        self.names = ["default"] + [o.name for o in self.objectives]
        self.sign = np.array([1.0 if default_mode == "maximize" else -1.0]
                             + [1.0 if o.mode == "maximize" else -1.0 for o in self.objectives])
        self.generator = generator
        # a cost model is the exact cost and its relaxation: the ones a budget on that cost uses
        # (latency: the fitted model's prediction as it is; the confidence margin is for budgets)
        self.costs: Dict[str, Any] = {
            o.name: (latency_for_space(latency_model, 1.0, confidence=None) if o.name == "latency"
                     else budget_for_space(o.name, 1.0))(generator.space, model_space)
            for o in self.objectives if o.is_cost}
        self.reported = [o.name for o in self.objectives if not o.is_cost]
        self.models: Dict[str, Surrogate] = {}

    # --- values --------------------------------------------------------------------------------
    def cost(self, name: str, types: np.ndarray) -> np.ndarray:
        return np.asarray(self.costs[name].exact(np.asarray(types)), dtype=np.float64)

    def observed(self, types: np.ndarray, default: Sequence[float], extras: Sequence[Dict[str, float]]) -> np.ndarray:
        """``[n, m]`` objective values as reported/computed (NaN where a trial did not report one)."""
        out = np.full((len(types), len(self.names)), np.nan)
        out[:, 0] = default
        for j, name in enumerate(self.names[1:], start=1):
            if name in self.costs:
                out[:, j] = self.cost(name, types) if len(types) else []
            else:
                out[:, j] = [e.get(name, np.nan) for e in extras]
        return out

    # --- surrogates ----------------------------------------------------------------------------
    def fit(self, types: np.ndarray, maximised: np.ndarray) -> None:
        """Fit one surrogate per reported objective on the results that have it (>= 2)."""
        gen = self.generator
        for name in self.reported:
            j = self.names.index(name)
            have = np.isfinite(maximised[:, j])
            if have.sum() < 2:
                continue
            model = self.models.get(name)
            if model is None:
                model = gen.new_surrogate()
                self.models[name] = model
            gen.fit_model(model, types[have], maximised[have, j], seed=gen._seed + int(have.sum()) + 7919 * j)
            model.eval()

    def _active(self) -> List[int]:
        """Objectives that can be predicted now: default (fitted), costs, fitted reported ones."""
        return [0] + [j for j, n in enumerate(self.names) if j and (n in self.costs or n in self.models)]

    def _learned(self) -> List[int]:
        """Objectives of :meth:`_active` that a surrogate predicts (the default metric, reported ones)."""
        return [j for j in self._active() if self.names[j] not in self.costs]

    def _predict_torch(self, x: torch.Tensor, t: torch.Tensor, kappa: float) -> torch.Tensor:
        """``[B, len(learned)]`` optimistic maximised predictions of the learned objectives
        (:meth:`_learned`) on (noisy) features: what guidance scalarises."""
        level = self.generator.sde.noise_level(t)
        cols = []
        for j in self._learned():
            mean, std = (self.generator.surrogate if j == 0 else self.models[self.names[j]])(x, level)
            cols.append(mean + kappa * std)
        return torch.stack(cols, dim=-1)

    @torch.no_grad()
    def predict_dist(self, types: np.ndarray) -> tuple:
        """``(mean, std)``, each ``[n, m_active]``, maximised, of clean graphs (costs: exact, std 0)."""
        gen = self.generator
        x = gen.features(types)
        level = gen.sde.noise_level(torch.full((len(x),), gen.sampler.eps, device=gen.device))
        mean = np.zeros((len(types), len(self._active())))
        std = np.zeros_like(mean)
        for col, j in enumerate(self._active()):
            name = self.names[j]
            if name in self.costs:
                mean[:, col] = self.sign[j] * self.cost(name, types)
            else:
                m, sd = (gen.surrogate if j == 0 else self.models[name])(x, level)
                mean[:, col], std[:, col] = m.cpu().numpy(), sd.cpu().numpy()
        return mean, std

    # --- guidance and selection ----------------------------------------------------------------
    def guidance(self, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, kappa: float, scale: float
                 ) -> GuidanceTerm:
        """The per-graph Chebyshev term over the learned objectives (:meth:`_learned`);
        ``weights: [n, len(learned)]`` (row ``i`` for graph ``i``), ``lo``/``hi`` their box."""
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.generator.device)
        lo_t = torch.as_tensor(lo, dtype=torch.float32, device=w.device)
        span = torch.as_tensor(np.maximum(hi - lo, 1e-9), dtype=torch.float32, device=w.device)

        def value(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            v = (self._predict_torch(x, t, kappa) - lo_t) / span
            rows = w[torch.arange(len(x), device=x.device) % len(w)]
            return chebyshev(v.to(rows.dtype), rows)

        return GuidanceTerm(value, scale, "pareto-chebyshev")

    def propose(self, k: int, exclude: set, n_candidates: int, scale: float, kappa: float,
                observed: np.ndarray, rng: np.random.Generator, max_rounds: int = 5) -> np.ndarray:
        """Up to ``k`` new graphs: generated under per-graph weights, picked by hypervolume
        improvement over the observed front (``observed``: ``[n, m]`` maximised, NaN allowed)."""
        gen = self.generator
        active = self._active()
        obs = observed[:, active]
        obs = obs[np.isfinite(obs).all(axis=1)]
        lo, hi = _front_box(obs)
        learned = [active.index(j) for j in self._learned()]
        seen = set(exclude)
        pool: List[np.ndarray] = []
        pool_w: List[np.ndarray] = []
        saved_targets = gen.targets
        try:
            for r in range(max_rounds):
                weights = rng.dirichlet(np.ones(len(active)), size=n_candidates)
                guide = weights[:, learned] / weights[:, learned].sum(axis=1, keepdims=True)
                gen.targets = saved_targets + [self.guidance(guide, lo[learned], hi[learned], kappa, scale / (2**r))]
                batch = gen.generate(n_candidates, scale=0.0)  # the default metric guides through the term
                for i in np.flatnonzero(gen.admissible(batch.types, seen)):
                    seen.add(gen.identity(batch.types[i]))
                    pool.append(batch.types[i])
                    pool_w.append(weights[i])
                if len(pool) >= 2 * k:
                    break
        finally:
            gen.targets = saved_targets
        if not pool:
            return np.zeros((0, gen.space.num_nodes), dtype=np.int64)
        cand, cand_w = np.stack(pool), np.stack(pool_w)
        mean, std = self.predict_dist(cand)
        return cand[self.select(mean, cand_w, obs, k, lo, hi, _reference(obs, lo, hi), std=std, rng=rng)]

    @staticmethod
    def select(pred: np.ndarray, weights: np.ndarray, observed: np.ndarray, k: int, lo: np.ndarray,
               hi: np.ndarray, ref: np.ndarray, std: Any = None, rng: Any = None, samples: int = EHVI_SAMPLES
               ) -> List[int]:
        """Greedy hypervolume-improvement picks (indices into ``pred``) against ``ref``, see the
        module docstring. With ``std`` (same shape as ``pred``, the predictions' spread) the gain
        is the *expected* improvement over ``samples`` Gaussian draws (``rng``); a pick then joins
        the front at its mean."""
        span = np.maximum(hi - lo, 1e-9)
        front = observed[pareto_mask(observed)] if len(observed) else np.zeros((0, pred.shape[1]))
        own = chebyshev_np((pred - lo) / span, weights)
        draws = None
        if std is not None:
            rng = rng if rng is not None else np.random.default_rng(0)
            draws = pred[None] + std[None] * rng.standard_normal((samples,) + pred.shape)  # [S, n, m]
        picked: List[int] = []
        left = list(range(len(pred)))
        while left and len(picked) < k:
            if draws is None:
                gain = hypervolume_improvement(pred[left], front, ref)
            else:
                pts = draws[:, left].reshape(-1, pred.shape[1])
                gain = hypervolume_improvement(pts, front, ref).reshape(samples, len(left)).mean(axis=0)
            best = int(np.argmax(gain)) if gain.max() > 1e-12 else int(np.argmax(own[left]))
            i = left.pop(best)
            picked.append(i)
            front = np.vstack([front, pred[i][None]])
            front = front[pareto_mask(front)]
        return picked

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Dict[str, torch.Tensor]]:
        return {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in self.models.items()}

    def load_state_dict(self, state: Dict[str, Dict[str, torch.Tensor]]) -> None:
        gen = self.generator
        for name, weights in state.items():
            model = gen.new_surrogate()
            model.load_state_dict(weights)
            self.models[name] = model.eval()


def _front_box(obs: np.ndarray) -> tuple:
    """Nadir and ideal point of the observed front: normalisation and reference point are taken
    from the front, not from every result, so that one terrible result (a 10% cell) does not make
    every mediocre one look good and fill the batch with cheap, useless graphs (measured: with
    the range of all results, 11 of the first 25 guided NB201 picks sat at the smallest cost)."""
    front = obs[pareto_mask(obs)]
    lo, hi = front.min(axis=0), front.max(axis=0)
    flat = hi - lo < 1e-9  # one front point: fall back to the range of all results
    lo[flat], hi[flat] = obs.min(axis=0)[flat], obs.max(axis=0)[flat]
    return lo, hi


def _reference(obs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The reference point of the selection: for the trial metric, the median result so far (a
    trade-off that is worse than half of what was already trained is not worth a trial, and the
    cheapest cells, on the front only because nothing is cheaper, stop attracting picks); for the
    other objectives, just below the worst result seen, so that a more accurate but costlier
    architecture still enlarges the front. With the front's nadir in every objective (a common
    default), nothing costlier than the front's costliest point could ever be picked: on NB201 the
    front then never grew towards the accurate end (hypervolume 0.62 of the true front's after 50
    queries against 0.69-0.76 for random search, 2 seeds). The median rises as the search
    improves; docs/benchmarks.md §11 has the measurement."""
    span = np.maximum(hi - lo, 1e-9)
    ref = obs.min(axis=0) - 0.1 * span
    ref[0] = np.median(obs[:, 0]) if len(obs) else lo[0] - 0.1 * span[0]
    return ref


def chebyshev(v: torch.Tensor, w: torch.Tensor, rho: float = RHO) -> torch.Tensor:
    """Augmented Chebyshev scalarisation to maximise: ``-(max_j w_j d_j + rho sum_j w_j d_j)``
    with ``d = 1 - v`` (``v``: normalised objectives, 1 = best seen), ``[B, m]`` -> ``[B]``."""
    d = w * (1.0 - v)
    return -(d.max(dim=-1).values + rho * d.sum(dim=-1))


def chebyshev_np(v: np.ndarray, w: np.ndarray, rho: float = RHO) -> np.ndarray:
    """:func:`chebyshev` on numpy arrays."""
    d = w * (1.0 - v)
    return -(d.max(axis=-1) + rho * d.sum(axis=-1))

