"""Which surrogate a space gets, built and fitted through one interface (no NNI).

``SurrogateConfig.kind``: ``'gnn'`` is the noise-aware directed-GNN ensemble (:mod:`.surrogate`),
``'gp'`` the Gaussian process over decisions (:mod:`.gp`), ``'auto'`` (the default) picks by the
encoding: a GP where the graph is a chain of decisions (the generic encoding, whose edges are only
the decisions' order) and the GNN where the edges are a cell's data flow (NB201, OFA MobileNetV3).
Reasons and measurements: docs/design.md, 'Which surrogate'.
"""

from __future__ import annotations

from typing import Union

import torch

from ..diffusion.sde import SDE
from .config import SurrogateConfig
from .gp import GPSurrogate, fit_gp
from .surrogate import SurrogateEnsemble, fit_surrogate

__all__ = ["Surrogate", "surrogate_kind", "build_surrogate", "fit_model"]

Surrogate = Union[SurrogateEnsemble, GPSurrogate]


def surrogate_kind(space, config: SurrogateConfig) -> str:
    """``config.kind`` with ``'auto'`` resolved for ``space`` (``'gp'`` or ``'gnn'``)."""
    if config.kind != "auto":
        return config.kind
    return "gp" if getattr(space, "decision_chain", False) else "gnn"


def build_surrogate(space, config: SurrogateConfig, log_noise: bool = True, device: Union[str, torch.device] = "cpu"
                    ) -> Surrogate:
    """A fresh, unfitted surrogate of the kind :func:`surrogate_kind` names for ``space``."""
    if surrogate_kind(space, config) == "gp":
        return GPSurrogate(space.legal, space.ordinal_coordinates(), fit_steps=config.gp_steps).to(device)
    return SurrogateEnsemble(space.num_types, space.adjacency, config, log_noise=log_noise).to(device)


def fit_model(model: Surrogate, x0: torch.Tensor, y: torch.Tensor, sde: SDE, seed: int = 0,
              warm_start: bool = False) -> float:
    """Fit either kind on clean features ``x0: [M, N, V]`` and targets ``y: [M]``; returns its loss."""
    if isinstance(model, GPSurrogate):
        return fit_gp(model, x0, y, warm_start=warm_start)
    return fit_surrogate(model, x0, y, sde, seed=seed, warm_start=warm_start)
