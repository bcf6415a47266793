"""A Gaussian-process surrogate over a space's decisions, differentiable in the node features.

The directed GNN of :mod:`.surrogate` reads a graph the way the network computes: it suits a cell
whose edges are the data flow (NB201). A chain of decisions (the generic encoding,
:mod:`nni_diffusionnag.space.generic`: one node per ``LayerChoice``/``nni.choice``/hyper-parameter)
has no such flow, its edges only give the order of the decisions, and with the tens of results a
search has, a GNN learns little there: on ``bench hpo``'s objective its Spearman correlation with
the truth after 20 / 40 / 60 random results was 0.00 / 0.17 / 0.24 (0.20 / 0.34 / 0.44 with a global
read-out), against 0.62 / 0.78 / 0.76 for this model (docs/benchmarks.md §8). What it knows that a
GNN must learn: which decisions matter (one length-scale per decision, fitted by the marginal
likelihood) and that numbers are ordered (a numeric decision is one coordinate, its value's rank).

Features (:class:`DecisionFeatures`), from node features ``x: [B, N, V]`` (centred one-hot when
clean): each node's soft choice ``p = softmax(beta * x)`` over its legal types (``beta = 3``: a clean
one-hot gives ``p`` within 0.01 of it); a numeric decision (:meth:`GraphSpace.ordinal_coordinates`)
becomes ``sum_v p_v c_v``, its rank coordinate in [0, 1]; any other node keeps ``p`` (one column per
legal type). Both are smooth in ``x``, so guidance gets a gradient; under heavy noise the softmax
saturates and the gradient fades, which is where guidance means nothing anyway.

Model: zero-mean GP on standardised values with a Matern-5/2 kernel over the features, one
length-scale per decision, a signal and a noise variance, fitted by maximising the log marginal
likelihood (Adam, float64) under a log-normal length-scale prior, ``log l ~ N(0, 1)`` (features
span about 1: a rank in [0, 1], one-hots sqrt(2) apart), which keeps tens of decisions from
overfitting a handful of points. Not the dimension-scaled prior of Hvarfner et al. (ICML 2024),
whose long length-scales (about 12 for 9 decisions) make the model nearly linear with few
results, so its best predictions sit in the corners of the space: on ``bench hpo``'s objective,
after 10 random results, the 5 best-predicted of 2,000 random configurations scored 55.5 on
average with it and 77.1 with this prior (best of the 5: 73.3 and 87.4; best of the 10 results:
82.3; 10 seeds). ``forward`` returns the posterior mean and the latent standard deviation in the
property's units, as :class:`~.surrogate.SurrogateEnsemble`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ["DecisionFeatures", "GPSurrogate", "fit_gp"]

_BETA = 3.0  # sharpness of the soft choice; see the module docstring
_MIN_NOISE = 1e-4  # noise variance floor (standardised units): keeps the Cholesky factor stable
_INIT_LOG_NOISE = math.log(1e-2)  # where a fit from scratch starts the noise variance
_STEPS = 150
_LR = 0.05


class DecisionFeatures(nn.Module):
    """``x: [B, N, V]`` -> ``[B, D]``: one coordinate per numeric decision, the soft choice of the others.

    ``group[d]`` is the node (decision) that feature column ``d`` belongs to.
    """

    def __init__(self, legal: np.ndarray, coordinates: np.ndarray) -> None:
        super().__init__()
        legal = np.asarray(legal, dtype=bool)
        coords = np.asarray(coordinates, dtype=np.float64)
        n, v = legal.shape
        ordinal = np.array([legal[i].sum() > 1 and np.isfinite(coords[legal[i]]).all() for i in range(n)])
        cat_cols = [(i, j) for i in range(n) if not ordinal[i] for j in np.flatnonzero(legal[i])]
        self.register_buffer("mask", torch.as_tensor(legal), persistent=False)
        self.register_buffer("coords", torch.as_tensor(np.where(legal & ordinal[:, None], np.nan_to_num(coords), 0.0),
                                                       dtype=torch.float32), persistent=False)
        self.register_buffer("ord_nodes", torch.as_tensor(np.flatnonzero(ordinal), dtype=torch.long), persistent=False)
        self.register_buffer("cat_flat", torch.as_tensor([i * v + j for i, j in cat_cols], dtype=torch.long),
                             persistent=False)
        group = np.concatenate([np.flatnonzero(ordinal), np.array([i for i, _ in cat_cols], dtype=np.int64)])
        _, group = np.unique(group, return_inverse=True)  # decisions numbered 0..G-1
        self.register_buffer("group", torch.as_tensor(group, dtype=torch.long), persistent=False)
        self.num_groups = int(group.max()) + 1 if len(group) else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.where(self.mask, _BETA * x, torch.full_like(x, -torch.inf))
        p = torch.softmax(logits, dim=-1)  # [B, N, V], 0 off the legal types
        parts = []
        if len(self.ord_nodes):
            parts.append((p * self.coords).sum(-1)[:, self.ord_nodes])
        if len(self.cat_flat):
            parts.append(p.flatten(1)[:, self.cat_flat])
        return torch.cat(parts, dim=1)


def _matern52(a: torch.Tensor, b: torch.Tensor, inv_ls: torch.Tensor) -> torch.Tensor:
    d2 = torch.cdist(a * inv_ls, b * inv_ls).pow(2)
    r = torch.sqrt(d2 + 1e-12) * math.sqrt(5.0)  # eps: a finite gradient at r = 0
    return (1.0 + r + r * r / 3.0) * torch.exp(-r)


def _train_cov(f: torch.Tensor, inv_ls: torch.Tensor, log_signal: torch.Tensor,
               log_noise: torch.Tensor) -> torch.Tensor:
    """Covariance of the training values: signal kernel plus noise (floored) on the diagonal."""
    eye = torch.eye(len(f), dtype=f.dtype, device=f.device)
    return torch.exp(log_signal) * _matern52(f, f, inv_ls) + (torch.exp(log_noise) + _MIN_NOISE) * eye


class GPSurrogate(nn.Module):
    """Exact GP regression over :class:`DecisionFeatures` (see the module docstring).

    Shapes: ``x: [B, N, V]``, ``noise_level: [B]`` (ignored: the GP is fitted on clean graphs)
    -> ``([B], [B])`` mean and standard deviation in the property's units.
    """

    def __init__(self, legal: np.ndarray, coordinates: np.ndarray, fit_steps: int = _STEPS) -> None:
        super().__init__()
        self.features = DecisionFeatures(legal, coordinates)
        self.fit_steps = int(fit_steps)  # Adam steps of each fit_gp
        g = max(self.features.num_groups, 1)
        self.prior_loc, self.prior_var = 0.0, 1.0  # log length-scale ~ N(0, 1): see the module docstring
        self.register_buffer("log_ls", torch.full((g,), self.prior_loc, dtype=torch.float64))
        self.register_buffer("log_signal", torch.zeros((), dtype=torch.float64))
        self.register_buffer("log_noise", torch.tensor(_INIT_LOG_NOISE, dtype=torch.float64))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.register_buffer("train_f", torch.zeros((0, 0), dtype=torch.float64))
        self.register_buffer("alpha", torch.zeros((0,), dtype=torch.float64))
        self.register_buffer("chol", torch.zeros((0, 0), dtype=torch.float64))

    def _inv_ls(self, log_ls: torch.Tensor) -> torch.Tensor:
        return torch.exp(-log_ls)[self.features.group]

    def forward(self, x: torch.Tensor, noise_level: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if not len(self.alpha):
            raise RuntimeError("the GP surrogate is not fitted yet: call fit_gp() with some results first")
        f = self.features(x).to(torch.float64)
        k = torch.exp(self.log_signal) * _matern52(f, self.train_f, self._inv_ls(self.log_ls))  # [B, n]
        mean = k @ self.alpha
        v = torch.linalg.solve_triangular(self.chol, k.t(), upper=False)  # [n, B]
        var = (torch.exp(self.log_signal) - (v * v).sum(0)).clamp_min(1e-12)
        std = var.sqrt()
        dtype = x.dtype
        return (mean.to(dtype) * self.y_std + self.y_mean), std.to(dtype) * self.y_std

    # state_dict holds tensors whose sizes depend on the data: loading resizes them first
    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("train_f", "alpha", "chol", "log_ls"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.empty_like(state_dict[key], dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def fit_gp(gp: GPSurrogate, x0: torch.Tensor, y: torch.Tensor, warm_start: bool = False) -> float:
    """Fit ``gp`` on clean features ``x0: [M, N, V]`` and targets ``y: [M]`` by maximising the log
    marginal likelihood plus the length-scale prior. Returns the final negative log likelihood per
    point. ``warm_start`` starts from the current hyper-parameters (cheap refits in a BO loop)."""
    if x0.shape[0] != y.shape[0] or x0.shape[0] < 2:
        raise ValueError(f"need >= 2 (graph, value) pairs with matching sizes, got {x0.shape[0]} and {y.shape[0]}")
    if not torch.isfinite(y).all():
        raise ValueError("surrogate targets contain NaN or inf; drop or fix those results first")
    y = y.detach().to(device=gp.y_mean.device, dtype=torch.float64)
    mu, sd = y.mean(), y.std().clamp_min(1e-6)
    yz = (y - mu) / sd
    with torch.no_grad():
        f = gp.features(x0.to(gp.y_mean.device)).to(torch.float64)
    n = len(f)
    if warm_start and len(gp.log_ls) == gp.features.num_groups:
        init = (gp.log_ls.clone(), gp.log_signal.clone(), gp.log_noise.clone())
    else:
        init = (torch.full_like(gp.log_ls, gp.prior_loc), torch.zeros_like(gp.log_signal),
                torch.full_like(gp.log_noise, _INIT_LOG_NOISE))
    log_ls, log_signal, log_noise = (t.clone().requires_grad_(True) for t in init)
    opt = torch.optim.Adam([log_ls, log_signal, log_noise], lr=_LR)

    def nll() -> torch.Tensor:
        chol = torch.linalg.cholesky(_train_cov(f, gp._inv_ls(log_ls), log_signal, log_noise))
        a = torch.cholesky_solve(yz[:, None], chol)[:, 0]
        fit = 0.5 * yz @ a + torch.log(torch.diagonal(chol)).sum()
        prior = ((log_ls - gp.prior_loc) ** 2).sum() / (2 * gp.prior_var)
        return (fit + prior) / n

    loss = torch.zeros(())
    for _ in range(gp.fit_steps):
        opt.zero_grad(set_to_none=True)
        loss = nll()
        loss.backward()
        opt.step()
        with torch.no_grad():  # keep the hyper-parameters in a sane box
            log_ls.clamp_(-4.0, 6.0)
            log_signal.clamp_(-6.0, 4.0)
            log_noise.clamp_(-12.0, 1.0)
    with torch.no_grad():
        gp.log_ls, gp.log_signal, gp.log_noise = log_ls.detach(), log_signal.detach(), log_noise.detach()
        chol = torch.linalg.cholesky(_train_cov(f, gp._inv_ls(gp.log_ls), gp.log_signal, gp.log_noise))
        gp.train_f, gp.chol = f, chol
        gp.alpha = torch.cholesky_solve(yz[:, None], chol)[:, 0]
        gp.y_mean.copy_(mu.float())
        gp.y_std.copy_(sd.float())
    return float(loss.detach())
