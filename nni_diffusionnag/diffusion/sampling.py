"""Reverse-time predictor-corrector sampling (Song et al., ICLR 2021, Alg. 1-2).

Samplers see only a *score function* ``score_fn(x, t) -> [B, N, V]``; guidance
(:mod:`nni_diffusionnag.diffusion.guidance`) wraps that function, so sampling never knows whether
guidance is on. In PC sampling "predictor" means an integration step (Euler–Maruyama here); the
property models are called *surrogates* everywhere in this package to avoid the clash.
"""

from __future__ import annotations

import logging
from typing import Callable, Tuple

import torch
from tqdm.auto import tqdm

from .sde import SDE, bcast

__all__ = ["ScoreFn", "get_score_fn", "euler_maruyama_step", "langevin_step", "pc_sample"]

_logger = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def get_score_fn(sde: SDE, model: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> ScoreFn:
    """Turn a score network ``model(x, noise_level, std)`` into ``score_fn(x, t)``."""

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _, std = sde.marginal_prob(x, t)
        return model(x, sde.noise_level(t), std)

    return score_fn


def euler_maruyama_step(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor, dt: float,
                        generator: torch.Generator | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One reverse-SDE step ``x <- x + (f - g^2 s) dt + g sqrt(|dt|) z`` with ``dt < 0``.

    Returns ``(x, x_mean)``: the noisy next state and its mean (the last mean is the denoised sample).
    """
    drift, g = sde.sde(x, t)
    rev_drift = drift - bcast(g**2, x) * score_fn(x, t)
    x_mean = x + rev_drift * dt
    z = torch.randn(x.shape, device=x.device, generator=generator)
    return x_mean + bcast(g, x) * (abs(dt) ** 0.5) * z, x_mean


def langevin_step(sde: SDE, score_fn: ScoreFn, x: torch.Tensor, t: torch.Tensor, snr: float,
                  generator: torch.Generator | None = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One Langevin MCMC correction at fixed ``t``: step ``2 (snr ||z|| / ||s||)^2`` with norms
    averaged over the batch (``alpha = 1``, exact for the VE-SDE)."""
    s = score_fn(x, t)
    z = torch.randn(x.shape, device=x.device, generator=generator)
    s_norm = s.reshape(s.shape[0], -1).norm(dim=-1).mean()
    z_norm = z.reshape(z.shape[0], -1).norm(dim=-1).mean()
    step = 2.0 * (snr * z_norm / s_norm.clamp_min(1e-12)) ** 2
    x_mean = x + step * s
    return x_mean + torch.sqrt(2.0 * step) * z, x_mean


def pc_sample(sde: SDE, score_fn: ScoreFn, shape: Tuple[int, ...], num_steps: int = 100, snr: float = 0.16,
              corrector_steps: int = 1, eps: float = 1e-5, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu", progress: bool = False, x_start: torch.Tensor | None = None,
              t_start: float = 1.0) -> torch.Tensor:
    """Draw samples by integrating the reverse SDE from ``t = 1`` to ``t = eps``.

    Each step runs ``corrector_steps`` Langevin corrections then one Euler–Maruyama step (the
    authors' order). Returns the mean of the last step, i.e. the sample with its final noise
    removed. Shapes: ``shape = (B, N, V)`` -> ``[B, N, V]``.

    With ``x_start`` (clean graphs ``[B, N, V]``) the trajectory starts from them diffused to
    ``t_start`` instead of from pure noise (SDEdit, Meng et al., ICLR 2022): the samples are
    variations of those graphs, the further from them the larger ``t_start``. The steps keep the
    size they have in a whole trajectory (``num_steps * t_start`` of them, at least one).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if x_start is None:
        x = sde.prior_sampling(shape, generator=generator, device=device)
        t_start = 1.0
    else:
        if not eps < t_start <= 1.0 or tuple(x_start.shape) != tuple(shape):
            raise ValueError(f"x_start must have shape {tuple(shape)} (got {tuple(x_start.shape)}) and t_start must "
                             f"be in ({eps:g}, 1] (got {t_start})")
        mean, std = sde.marginal_prob(x_start, torch.full((shape[0],), t_start, device=device))
        x = mean + bcast(std, x_start) * torch.randn(x_start.shape, device=device, generator=generator)
        num_steps = max(1, round(num_steps * t_start))
    ts = torch.linspace(t_start, eps, num_steps, device=device)
    dt = -(t_start - eps) / num_steps
    x_mean = x
    for i in tqdm(range(num_steps), desc="sampling", disable=not progress, leave=False):
        t = ts[i].expand(shape[0])
        for _ in range(corrector_steps):
            x, x_mean = langevin_step(sde, score_fn, x, t, snr, generator)
        x, x_mean = euler_maruyama_step(sde, score_fn, x, t, dt, generator)
    return x_mean
