"""Many :class:`~.surrogate.GraphSurrogate` members evaluated as one batched network.

Guidance calls the surrogate at every sampler step (about 90 calls per proposal round), and an
ensemble of ``M`` members called one after another costs ``M`` small networks' worth of kernel
launches and small matrix products. Here the members' weights are stacked along a leading
``[M]`` axis and each layer runs once for all of them as a batched matrix product; a layer's two
directed convolutions and their root terms are fused into one product over ``[A h, A^T h, h]``.
Same function, same numbers (to float rounding; tests/test_stacked.py), 1.4-1.7x faster for
2-10 members on this CPU than a loop over the members (inference) or ``torch.func.vmap`` over them
(training); measured in docs/benchmarks.md §3 and §4.1.

:func:`stack_members` takes a detached snapshot for inference (guidance, ranking: gradients reach
the input ``x`` only); ``fit_surrogate`` trains the stacked leaves themselves through
:func:`weights_from_params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.func import stack_module_state

__all__ = ["StackedWeights", "stack_members", "stacked_forward", "weights_from_params"]


@dataclass(frozen=True)
class StackedWeights:
    """Weights of ``M`` same-shaped members, each stacked on a leading ``[M]`` axis and laid out
    for ``h @ W`` (inputs on the left)."""

    inp: Tuple[torch.Tensor, torch.Tensor]  # [M, V, H], [M, 1, H]
    node_emb: torch.Tensor  # [M, 1, N, H]
    noise: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # MLP of the noise embedding
    layers: Tuple[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], ...]  # W [M,3H,H], b, gamma, beta
    flat: Optional[Tuple[torch.Tensor, torch.Tensor]]  # global read-out, or None
    head: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

    @property
    def num_members(self) -> int:
        return int(self.node_emb.shape[0])


def _linear(p: Mapping[str, torch.Tensor], name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return p[f"{name}.weight"].transpose(1, 2), p[f"{name}.bias"][:, None, :]


def weights_from_params(params: Mapping[str, torch.Tensor]) -> StackedWeights:
    """The batched layout of stacked member parameters (``torch.func.stack_module_state``'s
    names and ``[M, ...]`` tensors). Differentiable: training can step the stacked parameters
    themselves through :func:`stacked_forward`."""
    p = params
    layers: List[Tuple[torch.Tensor, ...]] = []
    i = 0
    while f"fwd.{i}.lin_rel.weight" in p:
        # 0.5 (rel_f(A h) + root_f(h) + rel_b(A^T h) + root_b(h)) as one product over [A h, A^T h, h]
        w = 0.5 * torch.cat([p[f"fwd.{i}.lin_rel.weight"], p[f"bwd.{i}.lin_rel.weight"],
                             p[f"fwd.{i}.lin_root.weight"] + p[f"bwd.{i}.lin_root.weight"]], dim=2).transpose(1, 2)
        b = 0.5 * (p[f"fwd.{i}.lin_rel.bias"] + p[f"bwd.{i}.lin_rel.bias"])[:, None, :]
        layers.append((w, b, p[f"norms.{i}.weight"][:, None, None, :], p[f"norms.{i}.bias"][:, None, None, :]))
        i += 1
    return StackedWeights(
        inp=_linear(p, "inp"),
        node_emb=p["node_emb"][:, None],
        noise=_linear(p, "noise_emb.mlp.0") + _linear(p, "noise_emb.mlp.2"),
        layers=tuple(layers),
        flat=_linear(p, "flat") if "flat.weight" in p else None,
        head=_linear(p, "head.0") + _linear(p, "head.2"),
    )


@torch.no_grad()
def stack_members(members: Sequence[torch.nn.Module]) -> StackedWeights:
    """Snapshot of the members' weights (they must share one configuration and adjacency)."""
    if not members:
        raise ValueError("stack_members needs at least one member")
    shapes = {tuple((k, tuple(v.shape)) for k, v in m.state_dict().items()) for m in members}
    if len(shapes) != 1:
        raise ValueError("stacked members must have the same configuration (hidden size, layers, read-out)")
    return weights_from_params(stack_module_state(list(members))[0])  # the stacking fit_surrogate trains


def stacked_forward(weights: StackedWeights, template: torch.nn.Module, x: torch.Tensor,
                    noise_level: torch.Tensor) -> torch.Tensor:
    """``[M, B]``: every member's output (standardised units).

    ``x: [B, N, V]`` with ``noise_level: [B]`` (the same graphs for every member), or ``[M, B, N, V]``
    with ``[M, B]`` (each member its own batch, as in training). ``template`` is any one of the
    stacked members: it lends the adjacency and the noise embedding's fixed sinusoid.
    """
    m = weights.num_members
    b, n, v = x.shape[-3:]
    lead = x.shape[0] if x.dim() == 4 else 1
    w_in, b_in = weights.inp
    h_dim = w_in.shape[-1]
    h = torch.matmul(x.reshape(lead, b * n, v), w_in) + b_in  # [M, B*N, H]
    w1, b1, w2, b2 = weights.noise
    sin = template.noise_emb.sinusoid(noise_level.reshape(-1)).view(lead, b, -1)
    e = torch.matmul(F.silu(torch.matmul(sin, w1) + b1), w2) + b2  # [M, B, H]
    h = h.view(m, b, n, h_dim) + weights.node_emb + e[:, :, None, :]
    adj, adj_t = template.adj, template.adj_t
    for w, bias, gamma, beta in weights.layers:
        z = F.layer_norm(h, (h_dim,)) * gamma + beta
        z = torch.cat([torch.matmul(adj, z), torch.matmul(adj_t, z), z], dim=-1)
        h = h + F.silu((torch.matmul(z.view(m, b * n, 3 * h_dim), w) + bias).view(m, b, n, h_dim))
    parts = [h.mean(2), h[:, :, -1]]  # graph mean + the output node, as GraphSurrogate reads out
    if weights.flat is not None:
        parts.append(torch.matmul(h.reshape(m, b, n * h_dim), weights.flat[0]) + weights.flat[1])
    w1, b1, w2, b2 = weights.head
    out = torch.matmul(F.silu(torch.matmul(torch.cat(parts, dim=-1), w1) + b1), w2) + b2
    return out.squeeze(-1)
