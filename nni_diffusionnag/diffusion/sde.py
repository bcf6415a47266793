"""Stochastic differential equations of the diffusion prior (Song et al., ICLR 2021).

Forward process ``dx = f(x, t) dt + g(t) dw`` on centred node features, ``t`` in ``[0, 1]``.
Each SDE knows its closed-form perturbation kernel ``p_t(x_t | x_0) = N(mean, std^2 I)`` (used to
train by denoising score matching) and its reverse-time drift (used to sample). Everything here is a
pure function of tensors: no model, no NNI.

DiffusionNAG's NB201 and MobileNetV3 configs use the VE-SDE with ``sigma_min = 0.1`` and
``sigma_max = 5.0`` (NB201) / ``1.0`` (MobileNetV3); the VP-SDE is the documented alternative.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

import torch

__all__ = ["SDE", "VESDE", "VPSDE", "get_sde", "bcast"]


def bcast(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample coefficient ``[B]`` against ``like`` ``[B, ...]``."""
    return coef.reshape(coef.shape + (1,) * (like.dim() - coef.dim()))


class SDE:
    """Base class. ``T = 1``; subclasses define the kernel and the diffusion coefficient."""

    kind: str = ""

    def marginal_prob(self, x0: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[B, ...]`` and std ``[B]`` of ``x_t`` given ``x_0``."""
        raise NotImplementedError

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Drift ``f(x, t)`` ``[B, ...]`` and diffusion ``g(t)`` ``[B]``."""
        raise NotImplementedError

    def prior_sampling(self, shape: Tuple[int, ...], generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> torch.Tensor:
        raise NotImplementedError

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """The scalar fed to networks as time conditioning: ``sigma(t)`` for VE, ``t`` for VP."""
        raise NotImplementedError

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        mean, std = self.marginal_prob(x0, t)
        return mean + bcast(std, x0) * z

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance-exploding SDE: ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, ``f = 0``,
    ``g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min))``, ``x_t = x_0 + sigma(t) z``."""

    sigma_min: float = 0.1
    sigma_max: float = 5.0
    kind = "ve"

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal_prob(self, x0, t):
        return x0, self.sigma(t)

    def sde(self, x, t):
        g = self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))
        return torch.zeros_like(x), g

    def prior_sampling(self, shape, generator=None, device="cpu"):
        return torch.randn(shape, generator=generator, device=device) * self.sigma_max

    def noise_level(self, t):
        return self.sigma(t)


@dataclass(frozen=True)
class VPSDE(SDE):
    """Variance-preserving SDE: ``beta(t) = beta_min + t (beta_max - beta_min)``,
    ``f = -beta x / 2``, ``g = sqrt(beta)``; ``x_t = e^{-B(t)/2} x_0 + sqrt(1 - e^{-B(t)}) z`` with
    ``B(t) = beta_min t + (beta_max - beta_min) t^2 / 2``."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    kind = "vp"

    def _log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal_prob(self, x0, t):
        lmc = self._log_mean_coeff(t)
        return bcast(torch.exp(lmc), x0) * x0, torch.sqrt(1.0 - torch.exp(2.0 * lmc))

    def sde(self, x, t):
        beta = self.beta_min + t * (self.beta_max - self.beta_min)
        return -0.5 * bcast(beta, x) * x, torch.sqrt(beta)

    def prior_sampling(self, shape, generator=None, device="cpu"):
        return torch.randn(shape, generator=generator, device=device)

    def noise_level(self, t):
        return t


_SDES = {"ve": VESDE, "vp": VPSDE}


def get_sde(kind: str, **kwargs: Any) -> SDE:
    """Build an SDE by name (``'ve'`` or ``'vp'``); an unknown name lists the choices."""
    key = kind.lower().replace("sde", "").strip("_- ")
    if key not in _SDES:
        raise ValueError(f"unknown SDE {kind!r}; choose one of {sorted(_SDES)}")
    return _SDES[key](**kwargs)
