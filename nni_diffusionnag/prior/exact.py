"""A prior with an exact score: independent per-node categoricals, no network.

Where a space's decisions are independent, its data distribution is a product over nodes of
categoricals ``p_n(k)`` over the legal types of node ``n`` (NAS-Bench-201 enumerated: uniform over
the 5 operations on each of its 6 edges). The score of the noised distribution is then known in
closed form (:mod:`nni_diffusionnag.diffusion.product`), and :class:`ProductPrior` uses it in
place of a trained score network. It offers what the generator uses of
:class:`~nni_diffusionnag.prior.model.DiffusionPrior` (``space``, ``sde``, ``device``, ``legal``,
``meta``, ``score_fn()``, ``eval()``, ``sample_features()``, ``generate()``), so guidance and the
samplers work on it unchanged. There is nothing to train or save.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch

from ..diffusion.product import get_product_score_fn, product_score
from ..diffusion.sampling import ScoreFn
from ..diffusion.sde import SDE, VESDE
from ..space import GraphSpace
from .model import GeneratedBatch, SamplerConfig, decode_batch, resolve_device, sample_features

__all__ = ["ProductPrior", "validate_probs"]


def _as_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def validate_probs(space: GraphSpace, probs: Any) -> np.ndarray:
    """Check per-node type probabilities ``[N, V]`` for ``space`` and renormalise each node over
    its legal types; returns float64 ``[N, V]`` rows summing to 1, zero where illegal.

    Raises ``ValueError`` (naming the node) on a wrong shape, a non-finite or negative entry,
    positive mass on a type illegal at its node, or a node whose legal types sum to 0.
    """
    legal = space.legal
    p = _as_numpy(probs).astype(np.float64)
    if p.shape != legal.shape:
        raise ValueError(f"probs must have shape [N, V] = {list(legal.shape)} for space '{space.name}' "
                         f"({space.num_nodes} nodes, {space.num_types} types), got {list(p.shape)}")
    for n in range(space.num_nodes):
        row = p[n]
        if not np.isfinite(row).all():
            raise ValueError(f"probs of node {n} are not finite: {row.tolist()}")
        if (row < 0).any():
            k = int(np.flatnonzero(row < 0)[0])
            raise ValueError(f"probs of node {n} are negative at type {k} ('{space.node_types[k]}'): {row[k]}")
        wrong = (row > 0) & ~legal[n]
        if wrong.any():
            k = int(np.flatnonzero(wrong)[0])
            allowed = [space.node_types[j] for j in np.flatnonzero(legal[n])]
            raise ValueError(f"probs of node {n} put {row[k]} on type {k} ('{space.node_types[k]}'), which is "
                             f"illegal there; legal types of node {n}: {allowed}")
        total = row.sum()
        if not total > 0:
            raise ValueError(f"probs of node {n} sum to 0 over its legal types; a node needs a positive probability "
                             f"on at least one of {[space.node_types[j] for j in np.flatnonzero(legal[n])]}")
    return p / p.sum(1, keepdims=True)


class ProductPrior:
    """Exact prior of independent per-node categoricals over a space's legal node types.

    Parameters
    ----------
    space
        The graph space.
    probs
        ``[N, V]`` per-node type probabilities (numpy or torch); default uniform over each node's
        legal types. Entries must be non-negative and zero where the type is illegal; each node
        is renormalised over its legal types (see :func:`validate_probs`).
    sde
        Forward SDE; default VE with the authors' sigmas (0.1, 5.0), as :class:`DiffusionPrior`.
    device
        ``None``/``'auto'`` picks CUDA when available.
    """

    kind = "exact-product"

    def __init__(self, space: GraphSpace, probs: Any = None, sde: SDE | None = None,
                 device: str | torch.device | None = None) -> None:
        self.space = space
        self.sde = sde or VESDE(0.1, 5.0)
        self.device = resolve_device(device)
        self.net_config = None  # no network
        if probs is None:
            probs = space.legal / space.legal.sum(1, keepdims=True)
        self.probs: np.ndarray = validate_probs(space, probs)  # float64 [N, V], exact values
        self.legal = torch.as_tensor(space.legal, device=self.device)
        with np.errstate(divide="ignore"):
            log_probs = np.log(self.probs)  # -inf where illegal or zero
        self.log_probs = torch.as_tensor(log_probs, dtype=torch.float32, device=self.device)
        self.meta: Dict[str, Any] = {"kind": self.kind}

    @classmethod
    def from_samples(cls, space: GraphSpace, types: Any, smoothing: float = 1.0, sde: SDE | None = None,
                     device: str | torch.device | None = None) -> "ProductPrior":
        """Per-node type frequencies of ``types`` ``[M, N]``, with ``smoothing`` pseudo-counts added
        to every legal type of every node (Laplace; 0 for the raw frequencies)."""
        t = _as_numpy(types)
        if t.ndim != 2 or t.shape[1] != space.num_nodes:
            raise ValueError(f"types must be [M, N] with N = {space.num_nodes} for space '{space.name}', "
                             f"got {list(t.shape)}")
        if t.size and not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"types must be integer node-type indices, got dtype {t.dtype}")
        if not (np.isfinite(smoothing) and smoothing >= 0):
            raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing}")
        t = t.astype(np.int64)
        if t.size:
            out = (t < 0) | (t >= space.num_types)
            if out.any():
                m, n = (int(i) for i in np.argwhere(out)[0])
                raise ValueError(f"types[{m}] has type index {t[m, n]} at node {n}; the space has {space.num_types} types")
            ok = space.legal[np.arange(space.num_nodes)[None, :], t]
            if not ok.all():
                m, n = (int(i) for i in np.argwhere(~ok)[0])
                raise ValueError(f"types[{m}] has type {t[m, n]} ('{space.node_types[t[m, n]]}') at node {n}, "
                                 "where it is illegal")
        counts = np.zeros(space.legal.shape, dtype=np.float64)
        np.add.at(counts, (np.broadcast_to(np.arange(space.num_nodes), t.shape), t), 1.0)
        prior = cls(space, (counts + smoothing) * space.legal, sde, device)
        prior.meta.update({"num_samples": int(t.shape[0]), "smoothing": float(smoothing)})
        return prior

    # --- score ---------------------------------------------------------------------------------
    def balanced_types(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` graphs ``[n, N]`` drawn from the prior with stratified per-node marginals: each
        node's types are a systematic sample of its categorical, shuffled independently per node
        (a Latin-hypercube design for categorical choices). Every draw is distributed as the prior;
        together they cover each node's types as evenly as ``n`` allows (on NB201, 5 draws use
        each of an edge's 5 operations once), so the first surrogate fit sees every choice."""
        cum = np.cumsum(self.probs, axis=1)
        cum[:, -1] = 1.0  # guard the last edge against rounding
        out = np.empty((n, self.space.num_nodes), dtype=np.int64)
        for node in range(self.space.num_nodes):
            u = (rng.permutation(n) + rng.random(n)) / n
            out[:, node] = np.minimum(np.searchsorted(cum[node], u, side="right"), cum.shape[1] - 1)
        return out

    def score_fn(self) -> ScoreFn:
        """The exact score ``score_fn(x, t) -> [B, N, V]`` (see :mod:`~nni_diffusionnag.diffusion.product`)."""
        return get_product_score_fn(self.sde, self.log_probs, self.legal)

    def model(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The score as a model ``(x, noise_level, std) -> score``, the signature of
        :meth:`DiffusionPrior.model` (``alpha`` from ``std``: 1 for VE, ``sqrt(1 - std^2)`` for VP)."""
        if self.sde.kind not in ("ve", "vp"):
            raise ValueError(f"model() needs a VE or VP SDE to recover alpha from std, got {self.sde.kind!r}")
        vp = self.sde.kind == "vp"

        def model(x: torch.Tensor, noise_level: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
            alpha = torch.sqrt(1.0 - std**2) if vp else torch.ones_like(std)
            return product_score(x, self.log_probs, self.legal, alpha, std)

        return model

    def eval(self) -> "ProductPrior":
        return self

    # --- sampling ------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_features(self, n: int, config: SamplerConfig = SamplerConfig(), seed: int | None = None,
                        score_fn: ScoreFn | None = None, progress: bool = False,
                        start: Tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        """Raw reverse-SDE samples ``[n, N, V]``. ``score_fn`` replaces the exact score (guidance).

        The same sampler, batching, seeding and ``start`` as :meth:`DiffusionPrior.sample_features`.
        """
        return sample_features(self.space, self.sde, score_fn or self.score_fn(), n, config, seed, self.device,
                               progress, start)

    def generate(self, n: int, config: SamplerConfig = SamplerConfig(), seed: int | None = None,
                 score_fn: ScoreFn | None = None, progress: bool = False,
                 start: Tuple[torch.Tensor, float] | None = None) -> GeneratedBatch:
        """Sample ``n`` graphs and decode them (strict validity + repaired types), with the decoding
        every prior uses (:func:`~nni_diffusionnag.prior.model.decode_batch`)."""
        return decode_batch(self.space, self.legal, self.sample_features(n, config, seed, score_fn, progress, start))

    def __repr__(self) -> str:
        legal = self.space.legal
        uniform = bool(np.allclose(self.probs, legal / legal.sum(1, keepdims=True)))
        return (f"{type(self).__name__}(space={self.space.name!r}, num_nodes={self.space.num_nodes}, "
                f"num_types={self.space.num_types}, sde={self.sde!r}, device='{self.device}', "
                f"probs={'uniform' if uniform else 'custom'})")
