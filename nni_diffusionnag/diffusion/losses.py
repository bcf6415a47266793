"""Denoising score matching (Vincent 2011; Song et al. 2021), the training objective of the prior."""

from __future__ import annotations

from typing import Callable

import torch

from .sde import SDE, bcast

__all__ = ["dsm_loss"]

ScoreModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def dsm_loss(model: ScoreModel, sde: SDE, x0: torch.Tensor, eps: float = 1e-5,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """``E_t E_z || std(t) s(x_t, t) + z ||^2`` (mean over all entries), ``t ~ U(eps, 1)``.

    ``model(x_t, noise_level, std)`` returns the score. Shapes: ``x0: [B, N, V]`` -> scalar.
    """
    b = x0.shape[0]
    t = torch.rand(b, device=x0.device, generator=generator) * (1.0 - eps) + eps
    z = torch.randn(x0.shape, device=x0.device, generator=generator)
    mean, std = sde.marginal_prob(x0, t)
    xt = mean + bcast(std, x0) * z
    score = model(xt, sde.noise_level(t), std)
    return ((bcast(std, x0) * score + z) ** 2).mean()
