"""The score network of the diffusion prior (paper §3.1; docs/design.md, 'The prior and the sampler').

A pre-LayerNorm transformer over the ``N`` nodes of the architecture graph:

- input = linear(node features) + sinusoidal positional encoding of the node's position in a
  topological order of the DAG + embedding of the noise level, added to every node;
- attention is masked by reachability in the DAG (a node attends to its ancestors and
  descendants), so the score respects the graph;
- a per-node MLP head reads the concatenated outputs of all layers.

The head predicts the noise ``-z`` direction scaled for unit variance; the score is that output
divided by the noise std (``s = out / std``), so the denoising loss ``|| std * s + z ||^2`` is
``|| out + z ||^2`` and stays O(1) at every noise level.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict

import numpy as np
import torch
from torch import nn

from .embedding import NoiseEmbedding

__all__ = ["ScoreNetConfig", "ScoreNetwork", "topological_positions", "known_illegal_score"]


@dataclass(frozen=True)
class ScoreNetConfig:
    """Hyper-parameters of :class:`ScoreNetwork` (the authors use 12 layers, d 64, 8 heads,
    d_ff 128; our CPU default is smaller, see docs/benchmarks.md)."""

    num_layers: int = 4
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.1
    log_noise: bool = True  # embed log sigma (VE) rather than t (VP)
    # Node types that are illegal at a node are always "off" (-1) in the data, so their score is
    # known in closed form; see known_illegal_score. False in checkpoints from before the option.
    mask_illegal: bool = False

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def topological_positions(adj: np.ndarray) -> np.ndarray:
    """Depth of each node in the DAG (longest path from a source): ``[N, N]`` -> ``[N]`` ints.

    Nodes at the same depth share a position, which is what makes the encoding a property of the
    DAG rather than of the arbitrary node numbering.
    """
    adj = np.asarray(adj, dtype=bool)
    n = adj.shape[0]
    depth = np.zeros(n, dtype=np.int64)
    for _ in range(n):  # Bellman-Ford style relaxation; N is tiny
        new = depth.copy()
        for i, j in zip(*np.nonzero(adj)):
            new[j] = max(new[j], depth[i] + 1)
        if (new == depth).all():
            break
        depth = new
    return depth


def _sinusoid(positions: np.ndarray, dim: int) -> torch.Tensor:
    pos = torch.as_tensor(positions, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(len(positions), dim)
    pe[:, 0::2] = torch.sin(pos * freqs)
    pe[:, 1::2] = torch.cos(pos * freqs)
    return pe


class ScoreNetwork(nn.Module):
    """Transformer score model ``s(x_t, t)`` over a fixed DAG.

    Parameters
    ----------
    num_types
        ``V``, the size of the node-type vocabulary.
    adjacency
        ``[N, N]`` DAG adjacency of the space.
    attention_mask
        ``[N, N]`` bool, True where attention is allowed (reachability, see
        :func:`nni_diffusionnag.space.reachability`).
    config
        :class:`ScoreNetConfig`.

    Shapes: ``x: [B, N, V]``, ``noise_level: [B]``, ``std: [B]`` -> score ``[B, N, V]``.
    """

    def __init__(self, num_types: int, adjacency: np.ndarray, attention_mask: np.ndarray,
                 config: ScoreNetConfig = ScoreNetConfig()) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.inp = nn.Linear(num_types, d)
        self.register_buffer("pos", _sinusoid(topological_positions(adjacency), d), persistent=False)
        # nn.MultiheadAttention masks where the bool mask is True, so store the complement.
        self.register_buffer("blocked", ~torch.as_tensor(attention_mask, dtype=torch.bool), persistent=False)
        self.noise_emb = NoiseEmbedding(d, log_input=config.log_noise)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, config.num_heads, config.d_ff, config.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(config.num_layers)
        )
        self.head = nn.Sequential(
            nn.Linear(d * (config.num_layers + 1), d * 2), nn.SiLU(), nn.Linear(d * 2, num_types)
        )

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.pos[None] + self.noise_emb(noise_level)[:, None, :]
        outs = [h]
        for layer in self.layers:
            h = layer(h, src_mask=self.blocked)
            outs.append(h)
        out = self.head(torch.cat(outs, dim=-1))
        return out / std.reshape(-1, 1, 1)


def known_illegal_score(net: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], legal: torch.Tensor,
                        vp: bool) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The score with the entries of illegal node types in closed form.

    An entry that is illegal at its node is -1 in every training graph, so ``x_t`` there is
    ``-alpha(t) + std(t) z`` and its exact score is ``-(x + alpha) / std^2`` (``alpha = 1`` for the
    VE-SDE, ``sqrt(1 - std^2)`` for the VP-SDE). The network sees those entries zeroed and only
    has to model the legal ones. Without this, a space whose vocabulary is larger than
    ``d_model`` (the generic encoding of NNI's MobileNetV3Space: 285 types) cannot even pass the
    noise of its always-off entries through the ``V -> d_model`` input projection, and training
    stalls near the loss of a zero score (0.82 measured, vs 1.0 for s = 0).

    ``legal``: ``[N, V]`` bool. Returns a callable with the network's signature.
    """

    def model(x: torch.Tensor, noise_level: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        score = net(x.masked_fill(~legal, 0.0), noise_level, std)
        var = std.reshape(-1, 1, 1) ** 2
        alpha = torch.sqrt((1.0 - var).clamp_min(0.0)) if vp else 1.0
        return torch.where(legal, score, -(x + alpha) / var)

    return model
