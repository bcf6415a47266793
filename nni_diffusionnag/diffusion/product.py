r"""The exact score of a product-of-categoricals data distribution, in closed form.

Where a space's decisions are independent, the data distribution over node types is a product
over nodes of categoricals ``p_n(k)`` on the types legal at node ``n``. Its noised version is then
a product over nodes of Gaussian mixtures, whose score needs no network.

**Derivation.** The clean features of node ``n`` with type ``k`` are the centred one-hot
``c_k in {-1, 1}^V`` (``+1`` at ``k``, ``-1`` elsewhere; see
:func:`~nni_diffusionnag.diffusion.decoding.to_features`). Both SDEs have a Gaussian kernel
``x_t | x_0 ~ N(alpha(t) x_0, sigma(t)^2 I)`` (VE: ``alpha = 1``; VP: ``alpha = e^{-B(t)/2}``,
``sigma^2 = 1 - alpha^2``), so per node

.. math::

    p_t(x) = \sum_k p_k \, N(x; \alpha c_k, \sigma^2 I).

Expanding the exponent, ``||x - alpha c_k||^2 = ||x||^2 - 2 alpha <x, c_k> + alpha^2 V`` with
``<x, c_k> = 2 x_k - sum_j x_j``: every term but ``-4 alpha x_k`` is the same for all ``k``. The
posterior over the node's type is therefore

.. math::

    w_k = P(k \mid x_t) = \mathrm{softmax}_k\left(\log p_k + 2 \alpha x_k / \sigma^2\right),

over the legal ``k`` (an illegal type has ``p_k = 0``, weight exactly 0). Since
``(c_k)_j = 2 [j = k] - 1``, the posterior mean of the clean features is
``E[c | x_t] = 2 w - 1`` (exactly ``-1`` at illegal entries), and Tweedie's formula gives the score

.. math::

    \nabla_x \log p_t(x) = \sum_k w_k \frac{\alpha c_k - x}{\sigma^2}
                         = \frac{\alpha (2 w - 1) - x}{\sigma^2}.

At an illegal entry this is ``-(x + alpha) / sigma^2``, the same closed form that
:func:`~nni_diffusionnag.nn.score_net.known_illegal_score` uses. Nodes are independent, so the
score of a whole graph is this per node.

Everything here is a pure function of tensors (no model, no NNI). The logits are formed and
normalised in at least float32 (float64 stays float64) with ``softmax``/``logsumexp``; nothing is
clamped: ``std`` must be positive (a VP-SDE at exactly ``t = 0`` has ``std = 0`` and no score).

Shapes (PyG style): ``x [B, N, V]``; ``log_probs [N, V]`` per-node log-probabilities with
``-inf`` at illegal entries (and at legal types of probability 0); ``legal [N, V]`` bool;
``alpha [B]``, ``std [B]``.
"""

from __future__ import annotations

from typing import Tuple

import torch

from .sampling import ScoreFn
from .sde import SDE, bcast

__all__ = ["check_log_probs", "get_product_score_fn", "product_log_density", "product_posterior", "product_score"]


def check_log_probs(log_probs: torch.Tensor, legal: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``log_probs`` ``[N, V]`` is a usable table for ``legal`` ``[N, V]``.

    No NaN or ``+inf``, and every node keeps at least one legal type of finite log-probability (a
    node with none has no distribution). The rows need not be normalised: the posterior is
    invariant to a per-node constant, and :func:`product_log_density` normalises them.
    """
    if log_probs.dim() != 2 or tuple(log_probs.shape) != tuple(legal.shape):
        raise ValueError(f"log_probs must have the shape of legal [N, V] = {list(legal.shape)}, "
                         f"got {list(log_probs.shape)}")
    if legal.dtype != torch.bool:
        raise ValueError(f"legal must be a bool tensor, got {legal.dtype}")
    bad = torch.isnan(log_probs) | (log_probs == float("inf"))
    if bad.any():
        n, k = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"log_probs[{n}, {k}] is {float(log_probs[n, k])}: node {n} has no valid distribution")
    usable = (torch.isfinite(log_probs) & legal.to(log_probs.device)).any(-1)
    if not usable.all():
        n = int((~usable).nonzero()[0, 0])
        raise ValueError(f"node {n} has no legal type of positive probability "
                         "(every legal entry of log_probs is -inf, or the node has no legal type)")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _logits(x: torch.Tensor, log_probs: torch.Tensor, legal: torch.Tensor, alpha: torch.Tensor,
            std: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Posterior logits ``log p_k + 2 alpha x_k / sigma^2`` ``[B, N, V]`` (``-inf`` where illegal),
    with ``x``, ``alpha`` and ``var`` (broadcast to ``x``) in the computation dtype."""
    dtype = _compute_dtype(x)
    xc = x.to(dtype)
    a = bcast(alpha.to(device=x.device, dtype=dtype), xc)
    var = bcast(std.to(device=x.device, dtype=dtype), xc) ** 2
    lp = log_probs.to(device=x.device, dtype=dtype).masked_fill(~legal.to(x.device), float("-inf"))
    return lp + 2.0 * a * xc / var, xc, a, var


def _check_inputs(x: torch.Tensor, log_probs: torch.Tensor, legal: torch.Tensor, alpha: torch.Tensor,
                  std: torch.Tensor) -> None:
    if x.dim() != 3 or tuple(x.shape[1:]) != tuple(legal.shape):
        raise ValueError(f"x must be [B, N, V] with [N, V] = {list(legal.shape)}, got {list(x.shape)}")
    for name, coef in (("alpha", alpha), ("std", std)):
        if tuple(coef.shape) != (x.shape[0],):
            raise ValueError(f"{name} must be [B] = [{x.shape[0]}], got {list(coef.shape)}")
    if not (std > 0).all():
        raise ValueError("std must be positive: the noised distribution has no score at std = 0")
    check_log_probs(log_probs, legal)


def _posterior(x, log_probs, legal, alpha, std) -> torch.Tensor:
    logits, *_ = _logits(x, log_probs, legal, alpha, std)
    return torch.softmax(logits, dim=-1)


def _score(x, log_probs, legal, alpha, std) -> torch.Tensor:
    logits, xc, a, var = _logits(x, log_probs, legal, alpha, std)
    mean_c = 2.0 * torch.softmax(logits, dim=-1) - 1.0  # E[c | x_t]; exactly -1 where w = 0
    return ((a * mean_c - xc) / var).to(x.dtype)


def product_posterior(x: torch.Tensor, log_probs: torch.Tensor, legal: torch.Tensor, alpha: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:
    """Posterior over each node's type given the noised features.

    Parameters
    ----------
    x
        Noised features ``[B, N, V]``.
    log_probs
        ``[N, V]`` per-node log-probabilities of the clean types, ``-inf`` at illegal entries (rows
        need not be normalised).
    legal
        ``[N, V]`` bool, the types legal at each node.
    alpha, std
        ``[B]``: mean coefficient and standard deviation of the perturbation kernel at each
        sample's time (``sde.marginal_prob``).

    Returns
    -------
    torch.Tensor
        ``w [B, N, V]`` in the computation dtype (float32 or wider): ``softmax_k(log p_k +
        2 alpha x_k / std^2)`` over the legal types, sums to 1 per node, exactly 0 where illegal.
    """
    _check_inputs(x, log_probs, legal, alpha, std)
    return _posterior(x, log_probs, legal, alpha, std)


def product_score(x: torch.Tensor, log_probs: torch.Tensor, legal: torch.Tensor, alpha: torch.Tensor,
                  std: torch.Tensor) -> torch.Tensor:
    """Exact score ``(alpha (2 w - 1) - x) / std^2`` ``[B, N, V]`` of the noised product distribution.

    Parameters are those of :func:`product_posterior`; the result has ``x``'s dtype.
    """
    _check_inputs(x, log_probs, legal, alpha, std)
    return _score(x, log_probs, legal, alpha, std)


def product_log_density(x: torch.Tensor, log_probs: torch.Tensor, legal: torch.Tensor, alpha: torch.Tensor,
                        std: torch.Tensor) -> torch.Tensor:
    """Exact log-density ``[B]`` of ``x`` under the noised product distribution (for tests).

    ``sum_n log sum_k p_n(k) N(x_n; alpha c_k, std^2 I)`` with the full Gaussian (normalising
    constant and squared distance included, rows of ``log_probs`` renormalised over the legal
    types); it does not use the softmax simplification of the score, so its gradient checks it.
    Parameters are those of :func:`product_posterior`; differentiable in ``x``.
    """
    _check_inputs(x, log_probs, legal, alpha, std)
    dtype = _compute_dtype(x)
    xc = x.to(dtype)
    v = x.shape[-1]
    a = bcast(alpha.to(device=x.device, dtype=dtype), xc)
    var = bcast(std.to(device=x.device, dtype=dtype), xc) ** 2
    lp = log_probs.to(device=x.device, dtype=dtype).masked_fill(~legal.to(x.device), float("-inf"))
    lp = lp - torch.logsumexp(lp, dim=-1, keepdim=True)
    # ||x - alpha c_k||^2 = ||x||^2 - 2 alpha <x, c_k> + alpha^2 V with <x, c_k> = 2 x_k - sum_j x_j
    sq = (xc**2).sum(-1, keepdim=True) - 2.0 * a * (2.0 * xc - xc.sum(-1, keepdim=True)) + a**2 * v
    log_gauss = -sq / (2.0 * var) - 0.5 * v * torch.log(2.0 * torch.pi * var)
    return torch.logsumexp(lp + log_gauss, dim=-1).sum(-1)


def get_product_score_fn(sde: SDE, log_probs: torch.Tensor, legal: torch.Tensor) -> ScoreFn:
    """``score_fn(x, t) -> [B, N, V]`` of the product distribution under ``sde``, for the samplers.

    ``alpha(t)`` and ``std(t)`` come from ``sde.marginal_prob`` (``alpha`` is the mean of a clean
    value of 1), so it works for any SDE with a Gaussian kernel. ``log_probs`` and ``legal`` are
    checked once here (:func:`check_log_probs`) and moved to ``x``'s device on use.
    """
    check_log_probs(log_probs, legal)

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(device=x.device, dtype=_compute_dtype(x))
        alpha, std = sde.marginal_prob(torch.ones_like(t), t)
        return _score(x, log_probs, legal, alpha, std)

    return score_fn
