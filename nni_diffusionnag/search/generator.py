"""Guided generation: prior + surrogate + constraints -> proposed architectures.

``fit`` a surrogate on the (architecture, value) pairs seen so far, ``generate`` a batch with the
prior guided by an acquisition of that surrogate and by cost constraints, and ``propose`` the
best new ones. The search core (:mod:`.core`) drives it; nothing here imports NNI.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..diffusion.decoding import to_features
from ..diffusion.guidance import GuidanceTerm, budget_penalty, expected_improvement, guided_score_fn, ucb
from ..nn.factory import Surrogate, build_surrogate, fit_model
from ..nn.surrogate import SurrogateConfig
from ..prior.model import DiffusionPrior, GeneratedBatch, SamplerConfig
from .config import ACQUISITIONS, CROSSOVER_NOISE, DEFAULT_SCALE

__all__ = ["Constraint", "GuidedGenerator", "ACQUISITIONS"]

_logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Constraint:
    """A cost budget ``exact(types) <= budget``.

    ``relaxed(x) -> [B]`` is a differentiable version of the cost on (noisy) features ``[B, N, V]``
    used for guidance; ``exact(types) -> [B]`` decides membership afterwards. With
    ``noise_aware``, ``relaxed(x, noise_temperature)`` also gets ``sigma(t)^2 / (2 alpha(t))``
    ``[B]``: the softmax temperature at which ``softmax(x / T)`` is the posterior of a node's
    type given ``x_t`` under a uniform prior (``log p(k | x_t) = 2 alpha x_k / sigma^2 + c`` for
    centred one-hots), so the relaxed cost is ``E[cost | x_t]`` at every noise level.
    """

    name: str
    budget: float
    relaxed: Callable[..., torch.Tensor]
    exact: Callable[[np.ndarray], np.ndarray]
    scale: float = 1.0
    noise_aware: bool = False
    margin: float = 0.0  # guide towards budget * (1 - margin): the relaxed cost is not the exact one

    @property
    def guide_budget(self) -> float:
        return self.budget * (1.0 - self.margin)

    def satisfied(self, types: np.ndarray) -> np.ndarray:
        return self.exact(types) <= self.budget


class GuidedGenerator:
    """Guided diffusion generation for one space.

    Parameters
    ----------
    prior
        The unconditional prior of the space.
    surrogate_config
        Size/training of the surrogate ensemble.
    sampler
        Predictor-corrector settings.
    constraints
        Budgets applied to every generation (guided towards, then enforced).
    targets
        Extra guidance terms to maximise in every generation, e.g. fewer FLOPs
        (:func:`nni_diffusionnag.properties.cost_target`); a term with scale 0 is off.
    seed
        Seed of the generator's own random streams.
    """

    def __init__(self, prior: DiffusionPrior, surrogate_config: SurrogateConfig = SurrogateConfig(),
                 sampler: SamplerConfig = SamplerConfig(), constraints: Sequence[Constraint] = (),
                 targets: Sequence[GuidanceTerm] = (), seed: int = 0) -> None:
        self.prior = prior.eval()
        self.space = prior.space
        # what de-duplication compares (the search core swaps in LoopConfig.dedup_key's identity)
        self.identity: Callable[[Any], Any] = self.space.key
        self.sde = prior.sde
        self.device = prior.device
        self.sampler = sampler
        self.constraints = list(constraints)
        self.targets = list(targets)
        self.surrogate_config = surrogate_config
        self.surrogate: Optional[Surrogate] = None
        self.best_value: Optional[float] = None
        self._seed = seed
        self._calls = 0

    # --- surrogate -----------------------------------------------------------------------------
    def features(self, types: np.ndarray) -> torch.Tensor:
        return to_features(torch.as_tensor(np.asarray(types), dtype=torch.long, device=self.device), self.space.num_types)

    def new_surrogate(self) -> Surrogate:
        """An unfitted surrogate of the kind the configuration names for this space (nn/factory.py)."""
        return build_surrogate(self.space, self.surrogate_config, log_noise=self.sde.kind == "ve", device=self.device)

    def fit_model(self, model: Surrogate, types: np.ndarray, values: np.ndarray, seed: int,
                  warm_start: bool = False) -> float:
        """Fit ``model`` (either kind) on graphs ``[M, N]`` and values ``[M]``; returns its loss."""
        return fit_model(model, self.features(types), torch.as_tensor(np.asarray(values, dtype=np.float64),
                                                                      device=self.device),
                         self.sde, seed=seed, warm_start=warm_start)

    def fit(self, types: np.ndarray, values: np.ndarray, warm_start: bool = False) -> float:
        """Fit the surrogate on graphs ``[M, N]`` and values ``[M]`` (to maximise)."""
        values = np.asarray(values, dtype=np.float64)
        if self.surrogate is None:
            self.surrogate = self.new_surrogate()
            warm_start = False
        t0 = time.time()
        loss = self.fit_model(self.surrogate, types, values, seed=self._seed + len(values), warm_start=warm_start)
        self.best_value = float(values.max())
        _logger.debug("surrogate fitted on %d points in %.2f s (mse %.3f)", len(values), time.time() - t0, loss)
        return loss

    @torch.no_grad()
    def predict(self, types: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Surrogate mean and std of clean graphs ``[B, N]``."""
        if self.surrogate is None:
            raise RuntimeError("the surrogate is not fitted yet: call fit() with some results first")
        x = self.features(types)
        level = self.sde.noise_level(torch.full((len(x),), self.sampler.eps, device=self.device))
        mean, std = self.surrogate(x, level)
        return mean.cpu().numpy(), std.cpu().numpy()

    def thompson(self, x: torch.Tensor, level: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One Thompson sample of the surrogate per graph ``[B]``: graph ``i`` is scored by ensemble
        member ``i mod M`` (each member is one plausible function: a batch spreads over them instead
        of all chasing the mean); a surrogate without members (the GP) by ``mean + std z_i``, with
        ``z: [B]`` the graph's own fixed normal draw (a sample of the marginal, not of the joint)."""
        members = getattr(self.surrogate, "member_predictions", None)
        if members is not None:
            preds = members(x, level)  # [M, B]
            rows = torch.arange(len(x), device=preds.device)
            return preds[rows % len(preds), rows]
        mean, std = self.surrogate(x, level)
        return mean + std * z.to(mean.dtype)

    def acquisition(self, mean: torch.Tensor, std: torch.Tensor, kind: str, kappa: float) -> torch.Tensor:
        if kind == "mean":
            return mean
        if kind == "ucb":
            return ucb(mean, std, kappa)
        if kind == "ei":
            return expected_improvement(mean, std, self.best_value if self.best_value is not None else 0.0)
        raise ValueError(f"unknown acquisition {kind!r}; choose one of {ACQUISITIONS}")

    @torch.no_grad()
    def _thompson_order(self, cand: np.ndarray, k: int, seed: Optional[int]) -> np.ndarray:
        """Order of ``cand`` for acquisition 'ts': slot ``j`` of the first ``k`` takes the best
        candidate not yet taken by a fresh Thompson sample (member ``j mod M`` of the ensemble, or a
        new normal draw per candidate for the GP); the rest follow by the mean."""
        x = self.features(cand)
        level = self.sde.noise_level(torch.full((len(x),), self.sampler.eps, device=self.device))
        draws = torch.Generator().manual_seed((self._seed if seed is None else seed) * 7919 + self._calls + 1)
        members = getattr(self.surrogate, "member_predictions", None)
        if members is not None:
            preds = members(x, level).cpu()  # [M, C]
            mean = preds.mean(0)
        else:
            mean, std = (v.cpu() for v in self.surrogate(x, level))
            preds = mean + std * torch.randn((k, len(x)), generator=draws, dtype=mean.dtype)
        taken = np.zeros(len(cand), dtype=bool)
        order: List[int] = []
        for j in range(min(k, len(cand))):
            score = preds[j % len(preds)].numpy().copy()
            score[taken] = -np.inf
            i = int(np.argmax(score))
            order.append(i)
            taken[i] = True
        rest = np.flatnonzero(~taken)
        rest = rest[np.argsort(-mean.numpy()[rest], kind="stable")]
        return np.concatenate([np.asarray(order, dtype=np.int64), rest])

    # --- generation ----------------------------------------------------------------------------
    def guidance_terms(self, scale: float, acquisition: str = "mean", kappa: float = 1.0) -> List[GuidanceTerm]:
        terms: List[GuidanceTerm] = []
        if scale and self.surrogate is not None:
            surrogate, sde = self.surrogate, self.sde
            scale_y = float(surrogate.y_std)

            if acquisition == "ts":
                z_cache: Dict[int, torch.Tensor] = {}
                draws = torch.Generator().manual_seed(self._seed * 7919 + self._calls)

                def value(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                    if len(x) not in z_cache:  # fixed per graph along the whole trajectory
                        z_cache[len(x)] = torch.randn(len(x), generator=draws).to(x.device)
                    return self.thompson(x, sde.noise_level(t), z_cache[len(x)]) / scale_y
            else:
                def value(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                    mean, std = surrogate(x, sde.noise_level(t))
                    return self.acquisition(mean, std, acquisition, kappa) / scale_y

            terms.append(GuidanceTerm(value, scale, f"surrogate-{acquisition}"))
        for c in self.constraints:
            terms.append(GuidanceTerm(lambda x, t, c=c: budget_penalty(self._relaxed(c, x, t), c.guide_budget), c.scale,
                                      c.name, constraint=True))
        return terms + self.targets

    def _relaxed(self, c: Constraint, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not c.noise_aware:
            return c.relaxed(x)
        mean, std = self.sde.marginal_prob(torch.ones_like(t), t)  # alpha(t) = mean of x_0 = 1
        return c.relaxed(x, std**2 / (2.0 * mean))

    def generate(self, n: int, scale: float = DEFAULT_SCALE, acquisition: str = "mean", kappa: float = 1.0,
                 seed: Optional[int] = None, progress: bool = False,
                 start: Optional[Tuple[np.ndarray, float]] = None, crossover: bool = False) -> GeneratedBatch:
        """``n`` graphs from the prior guided by the surrogate (``scale``; 0 = unguided) and the
        constraints. Before the surrogate is fitted only the constraints guide. ``start =
        (anchors [A, N], t_start)``: guided variations of the anchor graphs instead (codes from
        :meth:`start_codes` with ``crossover``, diffused to ``t_start`` and denoised;
        diffusion/sampling.py ``pc_sample``)."""
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"unknown acquisition {acquisition!r}; choose one of {ACQUISITIONS}")
        self._calls += 1
        seed = self._seed * 100003 + self._calls if seed is None else seed
        terms = self.guidance_terms(scale, acquisition, kappa)
        score_fn = guided_score_fn(self.prior.score_fn(), terms)
        if self.surrogate is not None:
            self.surrogate.eval()
        x_start = None
        if start is not None:
            anchors, t_start = start
            x_start = (self.start_codes(np.asarray(anchors), n, crossover), t_start)
        return self.prior.generate(n, self.sampler, seed=seed, score_fn=score_fn, progress=progress, start=x_start)

    def start_codes(self, anchors: np.ndarray, n: int, crossover: bool = False) -> torch.Tensor:
        """``n`` codes ``[n, N, V]`` that local candidates start from: each of the ``anchors``
        ``[A, N]`` in turn, or with ``crossover`` (and two anchors or more) the midpoints of two
        distinct anchors, every pair in turn. A midpoint is a crossover in code space: where the
        two parents agree it is their code, where they differ it sits halfway between both types
        (0 at each, -1 elsewhere), so denoising mostly picks one parent's type there, guided by the
        surrogate like every other node."""
        codes = self.features(anchors)
        if not crossover or len(anchors) < 2:
            return codes[np.arange(n) % len(anchors)]
        pairs = np.array(list(itertools.combinations(range(len(anchors)), 2)))
        pairs = pairs[np.arange(n) % len(pairs)]
        return (codes[pairs[:, 0]] + codes[pairs[:, 1]]) / 2

    def admissible(self, types: np.ndarray, seen: Collection[Tuple[int, ...]]) -> np.ndarray:
        """``[B]`` bool: graphs of ``types: [B, N]`` that are new (their :attr:`identity` not in
        ``seen``, first copy only), within every constraint and, where the space has constraints of its own (NNI's
        MutableAnnotations), valid; rejecting them here lets the rounds go on until enough are found."""
        types = np.asarray(types)
        ok = self.space.valid_mask(types) if getattr(self.space, "has_constraints", False) else np.ones(len(types), bool)
        for c in self.constraints:
            ok &= np.asarray(c.satisfied(types), dtype=bool)
        first: set = set()
        for i, row in enumerate(types):
            key = self.identity(row)
            if key in seen or key in first:
                ok[i] = False
            first.add(key)
        return ok

    def propose(self, k: int, exclude: Collection[Tuple[int, ...]] = (), n_candidates: int = 200,
                scale: float = DEFAULT_SCALE, acquisition: str = "ucb", kappa: float = 1.0, max_rounds: int = 5,
                seed: Optional[int] = None, rank_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                anchors: Optional[np.ndarray] = None, local_fraction: float = 0.0, local_t: float = 0.55,
                near: Optional[np.ndarray] = None, local_mix: float = 0.0) -> np.ndarray:
        """Up to ``k`` new graphs ``[k', N]``: generated with guidance, de-duplicated against
        ``exclude`` (identities: keys from ``space.key`` unless :attr:`identity` was replaced) and each other, filtered by the constraints, then
        ranked by the acquisition (while no surrogate is fitted: by ``rank_fn(types) -> [B]``,
        higher first, if given, else in generation order).

        Rounds of ``n_candidates`` are generated until ``k`` survive or ``max_rounds`` is reached;
        each round halves the guidance scale, so a surrogate that pulls everything to a few
        already-seen graphs cannot stall the search. With ``anchors`` (graphs ``[A, N]``, e.g. the
        best results so far), ``local_fraction`` of each round are guided variations of them
        (:meth:`generate` with ``start=(anchors, local_t)``; ``local_mix`` of them start from
        crossovers of two anchors at :data:`CROSSOVER_NOISE`, :meth:`start_codes`) and the rest
        start from noise; all kinds are ranked together. With ``near`` (one graph ``[N]``), the ranked candidates one
        change away from it come first, in their own order (a trust region of radius 1).
        """
        seen = set(exclude)
        pool: List[np.ndarray] = []
        n_local = int(round(n_candidates * local_fraction)) if anchors is not None and len(anchors) else 0
        n_mix = int(round(n_local * local_mix)) if n_local and len(anchors) >= 2 else 0
        for r in range(max_rounds):
            s = scale / (2**r)
            parts = []
            if n_candidates > n_local:
                parts.append(self.generate(n_candidates - n_local, s, acquisition, kappa,
                                           seed=None if seed is None else seed + r).types)
            if n_local > n_mix:
                parts.append(self.generate(n_local - n_mix, s, acquisition, kappa, start=(anchors, local_t),
                                           seed=None if seed is None else seed + 7919 + r).types)
            if n_mix:
                parts.append(self.generate(n_mix, s, acquisition, kappa, start=(anchors, CROSSOVER_NOISE),
                                           crossover=True, seed=None if seed is None else seed + 15887 + r).types)
            types = np.concatenate(parts)
            for i in np.flatnonzero(self.admissible(types, seen)):
                seen.add(self.identity(types[i]))
                pool.append(types[i])
            if len(pool) >= k * 2 or (self.surrogate is None and len(pool) >= k):
                break
        if not pool:
            return np.zeros((0, self.space.num_nodes), dtype=np.int64)
        cand = np.stack(pool)
        if self.surrogate is not None and acquisition == "ts":
            cand = cand[self._thompson_order(cand, k, seed)]
        elif self.surrogate is not None:
            mean, std = self.predict(cand)
            acq = self.acquisition(torch.as_tensor(mean), torch.as_tensor(std), acquisition, kappa).numpy()
            cand = cand[np.argsort(-acq, kind="stable")]
        elif rank_fn is not None:
            cand = cand[np.argsort(-np.asarray(rank_fn(cand)), kind="stable")]
        if near is not None:
            one_change = (cand != np.asarray(near)[None, :]).sum(axis=1) == 1
            cand = cand[np.argsort(~one_change, kind="stable")]
        return cand[:k]
