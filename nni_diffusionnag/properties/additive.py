"""What the cost models share: cost kinds, units, and the relaxation of an additive cost.

A cost that is a sum of per-node terms, ``cost(types) = const + sum_n coef[n, types[n]]`` (NB201's
cells; OFA MobileNetV3's layer slots; a least-squares fit elsewhere), is relaxed for guidance as
its expectation under independent per-node softmaxes of the (noisy) features.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["KINDS", "check_kind", "unit_scale", "expected_additive_cost", "additive_least_squares"]

KINDS: Tuple[str, ...] = ("params", "flops")
_UNITS = {None: 1.0, "": 1.0, "count": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}


def check_kind(kind: str) -> int:
    """Index of ``kind`` in :data:`KINDS`; a clear error otherwise."""
    if kind not in KINDS:
        raise ValueError(f"unknown cost kind {kind!r}; expected one of {list(KINDS)}")
    return KINDS.index(kind)


def unit_scale(unit: Optional[str]) -> float:
    """Divisor of a plain count for ``unit`` (``None``/``'count'``, ``'K'``, ``'M'``, ``'G'``)."""
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}; expected one of 'count', 'K', 'M', 'G'")
    return _UNITS[unit]


def expected_additive_cost(x: torch.Tensor, const: float, coef: np.ndarray, legal: np.ndarray,
                           temperature: Union[float, torch.Tensor]) -> torch.Tensor:
    """``const + sum_{n,t} softmax(x[n] / temperature)[t] * coef[n, t]`` over the legal types.

    ``x: [..., N, V]`` (centred, possibly noisy features), ``coef``/``legal``: ``[N, V]``,
    ``temperature``: a float or a ``[...]`` tensor (one per graph) -> ``[...]``, in ``x.dtype``
    (the default float dtype for integer ``x``) on ``x.device``.
    """
    if bool((torch.as_tensor(temperature) <= 0).any()):
        raise ValueError(f"temperature must be positive, got {temperature}")
    if tuple(x.shape[-2:]) != coef.shape:
        raise ValueError(f"expected node features of shape [..., {coef.shape[0]}, {coef.shape[1]}], got {tuple(x.shape)}")
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    temp = torch.as_tensor(temperature, dtype=dtype, device=x.device)
    temp = temp.reshape(temp.shape + (1, 1))
    coef_t = torch.as_tensor(coef, dtype=dtype, device=x.device)
    logits = (x.to(dtype) / temp).masked_fill(~torch.as_tensor(legal, device=x.device), float("-inf"))
    return const + (torch.softmax(logits, dim=-1) * coef_t).sum(dim=(-1, -2))


def additive_least_squares(types: np.ndarray, y: np.ndarray, num_types: int,
                           ridge: float = 0.0) -> Tuple[float, np.ndarray]:
    """Least-squares ``(const, coef [N, V])`` of ``y ~ const + sum_n coef[n, types[:, n]]``.

    ``types: [M, N]`` int, ``y: [M]``. The design is one-hot per node plus a constant column.
    ``ridge > 0`` adds ``ridge * |coef|^2`` (the constant is not penalised); ``ridge = 0`` is
    the minimum-norm solution. Either way a type never seen at a node gets coefficient 0: its
    column is zero, so any other value would only add to the norm.
    """
    types = np.asarray(types, dtype=np.int64)
    m, n = types.shape
    onehot = np.zeros((m, n * num_types))
    onehot[np.arange(m)[:, None], np.arange(n) * num_types + types] = 1.0
    design = np.concatenate([np.ones((m, 1)), onehot], axis=1)
    target = np.asarray(y, dtype=np.float64)
    if ridge > 0:
        # Augmented rows sqrt(ridge) * I solve the ridge problem with the same lstsq call.
        penalty = np.concatenate([np.zeros((n * num_types, 1)), np.sqrt(ridge) * np.eye(n * num_types)], axis=1)
        design = np.concatenate([design, penalty], axis=0)
        target = np.concatenate([target, np.zeros(n * num_types)])
    w, *_ = np.linalg.lstsq(design, target, rcond=None)
    coef = w[1:].reshape(n, num_types)
    coef[onehot.sum(0).reshape(n, num_types) == 0] = 0.0  # exactly, not up to round-off
    return float(w[0]), coef
