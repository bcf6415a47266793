"""Many :class:`~.surrogate.GraphSurrogate` members evaluated as one batched network.

Guidance calls the surrogate at every sampler step (about 90 calls per proposal round), and an
ensemble of ``M`` members called one after another costs ``M`` small networks' worth of kernel
launches and small matrix products. Here the members' weights are stacked along a leading
``[M]`` axis and each layer runs once for all of them as a batched matrix product. On this CPU
the tensors are small and every pass over a ``[M, B, N, H]`` activation costs as much as a
matrix product, so the layout removes passes (docs/benchmarks.md §9):

- a layer's two directed convolutions and their root terms are one product: every node's state
  is mapped by ``[W_rel_f | W_rel_b | W_root]`` at once, and one node-mixing matrix
  ``[A | A^T | I]`` sums the three parts (no concatenated ``[A h, A^T h, h]`` copy);
- the layer norm's scale is folded into those weights and its shift, with the convolutions'
  biases, into one per-node constant (``A`` is linear: a constant shift ``beta`` of every node
  reaches node ``i`` as ``deg_i beta``), so the norm itself runs without affine passes;
- the input's bias and the node embedding are one constant, added inside the input product.

Same function, same numbers (to float rounding; tests/test_stacked.py).

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

__all__ = ["StackedWeights", "node_mixing", "stack_members", "stacked_forward", "weights_from_params"]


@dataclass(frozen=True)
class StackedWeights:
    """Weights of ``M`` same-shaped members, each stacked on a leading ``[M]`` axis and laid out
    for ``h @ W`` (inputs on the left), with the foldings of the module docstring applied."""

    inp: Tuple[torch.Tensor, torch.Tensor]  # W [M, V, H]; bias + node embedding [M, 1, N, H]
    noise: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # MLP of the noise embedding
    layers: Tuple[Tuple[torch.Tensor, torch.Tensor], ...]  # W [M, H, 3H] (norm scale folded), constant [M, 1, N, H]
    flat: Optional[Tuple[torch.Tensor, torch.Tensor]]  # global read-out, or None
    head: Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

    @property
    def num_members(self) -> int:
        return int(self.inp[0].shape[0])


def node_mixing(adj: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(Q, deg)`` of a fixed adjacency ``[N, N]``: ``Q [N, 3N]`` with ``Q[i, 3j + k] = P_k[i, j]``
    for ``P = (A, A^T, I)``, so that ``Q @ u`` sums the three parts of ``u [..., N, 3, H]`` (viewed
    ``[..., 3N, H]``, no copy) over the nodes; ``deg [3, N]``: row sums of each ``P_k``."""
    parts = torch.stack([adj, adj.t(), torch.eye(adj.shape[0], dtype=adj.dtype, device=adj.device)])  # [3, N, N]
    return parts.permute(1, 2, 0).reshape(adj.shape[0], -1).contiguous(), parts.sum(2)


def _linear(p: Mapping[str, torch.Tensor], name: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return p[f"{name}.weight"].transpose(1, 2), p[f"{name}.bias"][:, None, :]


def weights_from_params(params: Mapping[str, torch.Tensor], template: torch.nn.Module) -> StackedWeights:
    """The batched layout of stacked member parameters (``torch.func.stack_module_state``'s
    names and ``[M, ...]`` tensors); ``template`` is any one of the members: it lends the node
    degrees that fold the layer norm's shift (a required argument since that folding). Differentiable:
    training steps the stacked parameters themselves through :func:`stacked_forward`."""
    p = params
    deg = template.node_degrees  # [3, N]
    layers: List[Tuple[torch.Tensor, torch.Tensor]] = []
    i = 0
    while f"fwd.{i}.lin_rel.weight" in p:
        # 0.5 (rel_f(A z) + root_f(z) + rel_b(A^T z) + root_b(z)) with z = norm(h) * gamma + beta:
        # per part k the map W_k, applied to norm(h) * gamma (gamma folded into the rows of W_k) and
        # to the constant beta (reaching node i through P_k as deg_k[i] * beta W_k)
        w = 0.5 * torch.cat([p[f"fwd.{i}.lin_rel.weight"], p[f"bwd.{i}.lin_rel.weight"],
                             p[f"fwd.{i}.lin_root.weight"] + p[f"bwd.{i}.lin_root.weight"]], dim=1)  # [M, 3H, H]
        w = w.transpose(1, 2)  # [M, H, 3H]
        m, h_dim = w.shape[0], w.shape[1]
        shift = torch.matmul(p[f"norms.{i}.bias"][:, None, :], w).view(m, 3, h_dim)  # [M, 3, H]
        const = torch.einsum("kn,mkh->mnh", deg, shift) + 0.5 * (p[f"fwd.{i}.lin_rel.bias"] + p[f"bwd.{i}.lin_rel.bias"])[:, None, :]
        # contiguous: a transposed right operand sends bmm down a path twice as slow on this CPU
        layers.append(((p[f"norms.{i}.weight"][:, :, None] * w).contiguous(), const[:, None]))
        i += 1
    w_in, b_in = _linear(p, "inp")
    return StackedWeights(
        inp=(w_in, (p["node_emb"] + b_in)[:, None]),
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
    # the stacking fit_surrogate trains
    return weights_from_params(stack_module_state(list(members))[0], members[0])


def stacked_forward(weights: StackedWeights, template: torch.nn.Module, x: torch.Tensor,
                    noise_level: torch.Tensor) -> torch.Tensor:
    """``[M, B]``: every member's output (standardised units).

    ``x: [B, N, V]`` with ``noise_level: [B]`` (the same graphs for every member), or ``[M, B, N, V]``
    with ``[M, B]`` (each member its own batch, as in training). ``template`` is any one of the
    stacked members: it lends the node-mixing matrix and the noise embedding's fixed sinusoid.
    """
    m = weights.num_members
    b, n, v = x.shape[-3:]
    lead = x.shape[0] if x.dim() == 4 else 1
    w_in, base = weights.inp
    h_dim = w_in.shape[-1]
    w1, b1, w2, b2 = weights.noise
    sin = template.noise_emb.sinusoid(noise_level.reshape(-1)).view(lead, b, -1)
    e = torch.matmul(F.silu(torch.matmul(sin, w1) + b1), w2) + b2  # [M, B, H]
    # h = x W_in + (b_in + node embedding) + noise embedding, the constants added inside the product
    h = torch.baddbmm((base + e[:, :, None, :]).view(m, b * n, h_dim),
                      x.reshape(lead, b * n, v).expand(m, b * n, v), w_in).view(m, b, n, h_dim)
    mix = template.node_mixing  # [N, 3N]
    for w, const in weights.layers:
        u = torch.bmm(F.layer_norm(h, (h_dim,)).view(m, b * n, h_dim), w)  # [M, B*N, 3H]: (node, part, H)
        h = h + F.silu(torch.matmul(mix, u.view(m, b, 3 * n, h_dim)) + const)
    parts = [h.mean(2), h[:, :, -1]]  # graph mean + the output node, as GraphSurrogate reads out
    if weights.flat is not None:
        parts.append(torch.matmul(h.reshape(m, b, n * h_dim), weights.flat[0]) + weights.flat[1])
    w1, b1, w2, b2 = weights.head
    out = torch.matmul(F.silu(torch.matmul(torch.cat(parts, dim=-1), w1) + b1), w2) + b2
    return out.squeeze(-1)
