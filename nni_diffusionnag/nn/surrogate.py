"""Noise-aware property surrogates ``f(x_t, t)`` (paper §3.2; docs/design.md, 'Guidance').

A surrogate regresses a property (accuracy, latency...) of an architecture graph from its node
features. *Noise-aware* surrogates are trained on features perturbed by the prior's SDE at random
``t`` and see the noise level, so their gradient is informative along the whole reverse
trajectory, which is what guidance needs. The *clean* variant (``noise_aware=False``) only sees
``t ~ 0`` and is kept for ablation.

The graph encoder is a directed GNN built from PyG's dense ``DenseGraphConv`` layers: each layer
averages propagation along the edges and against them (DiGCN-style), over ``x: [B, N, F]`` with the
space's fixed adjacency. A deep ensemble of such networks gives a mean and an uncertainty for
acquisition functions (UCB, EI).
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.func import stack_module_state
from torch_geometric.nn import DenseGraphConv

from ..diffusion.sde import SDE
from .config import SurrogateConfig
from .embedding import NoiseEmbedding
from .stacked import StackedWeights, node_mixing, stack_members, stacked_forward, weights_from_params

__all__ = ["SurrogateConfig", "GraphSurrogate", "SurrogateEnsemble", "fit_surrogate"]

_logger = logging.getLogger(__name__)


class GraphSurrogate(nn.Module):
    """One noise-aware directed-GNN regressor.

    Shapes: ``x: [B, N, V]``, ``noise_level: [B]`` -> ``[B]`` (standardised units).
    """

    def __init__(self, num_types: int, adjacency: np.ndarray, hidden: int = 64, num_layers: int = 3,
                 log_noise: bool = True, global_readout: bool = False) -> None:
        super().__init__()
        n = adjacency.shape[0]
        adj = torch.as_tensor(adjacency, dtype=torch.float32)
        self.register_buffer("adj", adj, persistent=False)
        self.register_buffer("adj_t", adj.t().contiguous(), persistent=False)
        mixing, degrees = node_mixing(adj)  # the batched forward's layout (nn/stacked.py)
        self.register_buffer("node_mixing", mixing, persistent=False)
        self.register_buffer("node_degrees", degrees, persistent=False)
        self.inp = nn.Linear(num_types, hidden)
        self.node_emb = nn.Parameter(torch.zeros(n, hidden))  # the adjacency is fixed: node identity is known
        self.noise_emb = NoiseEmbedding(hidden, log_input=log_noise)
        self.fwd = nn.ModuleList(DenseGraphConv(hidden, hidden, aggr="add") for _ in range(num_layers))
        self.bwd = nn.ModuleList(DenseGraphConv(hidden, hidden, aggr="add") for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(num_layers))
        # Optional read-out of every node at once: message passing reaches only num_layers hops, so
        # on a long chain of decisions (the generic encoding) no node sees both ends; a linear map
        # of all node states lets the head model interactions between any two decisions.
        self.flat = nn.Linear(n * hidden, hidden) if global_readout else None
        self.head = nn.Sequential(nn.Linear((3 if global_readout else 2) * hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.node_emb[None] + self.noise_emb(noise_level)[:, None, :]
        for fwd, bwd, norm in zip(self.fwd, self.bwd, self.norms):
            h = h + torch.nn.functional.silu(0.5 * (fwd(norm(h), self.adj) + bwd(norm(h), self.adj_t)))
        parts = [h.mean(1), h[:, -1]]  # graph mean + the output node
        if self.flat is not None:
            parts.append(self.flat(h.flatten(1)))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)


class SurrogateEnsemble(nn.Module):
    """Deep ensemble of :class:`GraphSurrogate` with label standardisation.

    ``forward`` returns ``(mean, std)`` in the property's units; ``std`` is the spread of the
    members (0 for a single member).

    Shapes: ``x: [B, N, V]``, ``noise_level: [B]`` -> ``([B], [B])``.
    """

    def __init__(self, num_types: int, adjacency: np.ndarray, config: SurrogateConfig = SurrogateConfig(),
                 log_noise: bool = True) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(
            GraphSurrogate(num_types, adjacency, config.hidden, config.num_layers, log_noise, config.global_readout)
            for _ in range(config.ensemble)
        )
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self._stack: Optional[StackedWeights] = None
        self._stack_key: Optional[tuple] = None
        self._params: Optional[list] = None

    def member_predictions(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """Every member's prediction ``[M, B]`` in the property's units (Thompson samples of the
        ensemble: each member is one draw of a plausible function).

        In eval mode (guidance, ranking) all members run as one batched network (nn/stacked.py),
        whose weight snapshot is retaken whenever a weight changed in place (a fit, a load);
        gradients then reach ``x`` only. In train mode: member by member."""
        if self.training:
            preds = torch.stack([member(x, noise_level) for member in self.members])  # [M, B]
        else:
            preds = stacked_forward(self._stacked(), self.members[0], x, noise_level)
        return preds * self.y_std + self.y_mean

    def _stacked(self) -> StackedWeights:
        # every in-place update (optimiser step, copy_, load_state_dict) bumps a tensor's version;
        # .to() and deepcopy give new storage. The parameter list is taken once (walking the
        # module tree at every guidance step cost 2 ms a call).
        if self._params is None:
            self._params = list(self.parameters())
        key = tuple((p.data_ptr(), p._version) for p in self._params)
        if self._stack_key != key:
            self._stack, self._stack_key = stack_members(list(self.members)), key
        return self._stack

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        preds = self.member_predictions(x, noise_level)
        std = preds.std(0, unbiased=False) if len(self.members) > 1 else torch.zeros_like(preds[0])
        return preds.mean(0), std


def _reset_parameters(module: nn.Module) -> None:
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    if isinstance(module, GraphSurrogate):
        nn.init.zeros_(module.node_emb)


def fit_surrogate(ensemble: SurrogateEnsemble, x0: torch.Tensor, y: torch.Tensor, sde: SDE,
                  seed: int = 0, eps: float = 1e-5, warm_start: bool = False) -> float:
    """Fit every member on clean features ``x0: [M, N, V]`` and targets ``y: [M]``.

    Noise-aware members see ``x_t = mean_t(x0) + std_t z`` with ``t ~ U(eps, 1)`` and the noise
    level of ``t``; clean members see ``t = eps``. Returns the final training MSE (standardised).
    ``warm_start`` keeps the current weights (cheap refits in a BO loop) and trains for
    ``config.refit_steps`` steps where that is set.
    """
    cfg = ensemble.config
    if x0.shape[0] != y.shape[0] or x0.shape[0] < 2:
        raise ValueError(f"need >= 2 (graph, value) pairs with matching sizes, got {x0.shape[0]} and {y.shape[0]}")
    if not torch.isfinite(y).all():
        raise ValueError("surrogate targets contain NaN or inf; drop or fix those results first")
    device = x0.device
    y = y.to(device=device, dtype=torch.float32)
    mu, sd = y.mean(), y.std().clamp_min(1e-6)
    ensemble.y_mean.copy_(mu)
    ensemble.y_std.copy_(sd)
    yz = (y - mu) / sd
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    members = list(ensemble.members)
    m = len(members)
    if not warm_start:
        for k, member in enumerate(members):
            torch.manual_seed(seed * 1000 + k)
            _reset_parameters(member)
    ensemble.train()
    # leaves [M, ...] trained jointly, one optimiser, all members in one batched network per step
    # (nn/stacked.py; 1.4x faster than vmap over the members on this CPU)
    stacked, _ = stack_module_state(members)
    names = list(stacked)
    shapes = [stacked[k].shape for k in names]
    # one flat leaf: AdamW is elementwise, so stepping it is stepping every parameter, while the
    # optimiser's per-parameter Python (a tenth of a CPU fit for 35 tensors) runs once; fused: one
    # kernel. torch.split's backward gathers the gradients back in one copy.
    flat = torch.cat([stacked[k].detach().reshape(-1) for k in names]).requires_grad_()
    sizes = [int(np.prod(shape)) for shape in shapes]

    def params() -> dict:
        return {k: part.view(shape) for k, part, shape in zip(names, torch.split(flat, sizes), shapes)}

    opt = torch.optim.AdamW([flat], lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    n = len(x0)
    if cfg.bootstrap and m > 1:  # each member sees its own resample of the data
        pools = torch.randint(0, n, (m, n), generator=gen, device=device)
    else:
        pools = torch.arange(n, device=device).expand(m, n)
    bsz = min(cfg.batch_size, n)
    last = torch.zeros(())
    steps = cfg.refit_steps if warm_start and cfg.refit_steps is not None else cfg.steps
    for _ in range(steps):
        idx = torch.gather(pools, 1, torch.randint(0, n, (m, bsz), generator=gen, device=device))  # [M, b]
        xb, yb = x0[idx], yz[idx]  # [M, b, N, V], [M, b]
        if cfg.noise_aware:
            t = torch.rand((m, bsz), generator=gen, device=device) * (1 - eps) + eps
        else:
            t = torch.full((m, bsz), eps, device=device)
        flat_t = t.reshape(-1)
        mean, std = sde.marginal_prob(xb.reshape(m * bsz, *xb.shape[2:]), flat_t)
        xt = (mean + std[:, None, None] * torch.randn(mean.shape, generator=gen, device=device)).reshape(xb.shape)
        level = sde.noise_level(flat_t).reshape(m, bsz)
        pred = stacked_forward(weights_from_params(params(), members[0]), members[0], xt, level)  # [M, b]
        loss = ((pred - yb) ** 2).mean() * m  # sum over members of their mean losses
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.detach()
    with torch.no_grad():  # write the trained weights back into the member modules
        trained = params()
        for k, member in enumerate(members):
            for name, p in member.named_parameters():
                p.copy_(trained[name][k])
    ensemble.eval()
    return float(last) / m
