"""Time / noise-level embeddings shared by the score network and the surrogates."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NoiseEmbedding"]


class NoiseEmbedding(nn.Module):
    """Sinusoidal embedding of the noise level followed by an MLP.

    DiffusionNAG conditions VE networks on ``sigma(t)``, not ``t``. We embed ``100 log sigma``
    (``log_input=True``): the log spreads ``sigma`` in ``[0.1, 5]`` evenly, and the factor puts
    that range (about 4 units wide) on the scale of the sinusoid periods, as ``1000 t`` does for VP.

    Shapes: ``level: [B]`` -> ``[B, dim]``.
    """

    def __init__(self, dim: int, log_input: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.log_input = log_input
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 2), nn.SiLU(), nn.Linear(dim * 2, dim))

    def sinusoid(self, level: torch.Tensor) -> torch.Tensor:
        """``[B, dim]``: the fixed sinusoidal features the MLP reads (no weights)."""
        v = 100.0 * torch.log(level.clamp_min(1e-8)) if self.log_input else 1000.0 * level
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=v.device, dtype=v.dtype) / half)
        ang = v[:, None] * freqs[None, :]
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoid(level))
