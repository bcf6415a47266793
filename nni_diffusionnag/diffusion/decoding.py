"""From continuous node features back to node types.

DiffusionNAG's strict rule (docs/design.md, 'Encoding rules'): rescale the centred features to
``[0, 1]`` and threshold at 0.5, i.e. an entry is *active* where ``x > 0``; a graph is **valid**
if every node has exactly one active type and that type is legal at that node. That strict
validity is the prior's quality figure. What we hand to NNI is then *repaired*: the argmax
restricted to the legal types, so every emitted graph belongs to the space.
"""

from __future__ import annotations

from typing import Tuple

import torch

__all__ = ["to_features", "strict_decode", "repair_decode"]


def to_features(types: torch.Tensor, num_types: int) -> torch.Tensor:
    """``[B, N]`` type indices -> centred one-hot ``[B, N, V]`` in ``{-1, 1}``."""
    return 2.0 * torch.nn.functional.one_hot(types, num_types).float() - 1.0


def strict_decode(x: torch.Tensor, legal: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x: [B, N, V]``, ``legal: [N, V]`` bool -> (``valid: [B]`` bool, ``types: [B, N]``).

    ``types`` is the single active type where a node has one, else the argmax (meaningless where
    ``valid`` is False).
    """
    active = x > 0
    one = active.sum(-1) == 1
    types = x.argmax(-1)
    ok = legal[torch.arange(x.shape[1], device=x.device)[None, :], types]
    return (one & ok).all(-1), types


def repair_decode(x: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
    """Argmax over the types legal at each node. ``x: [B, N, V]`` -> ``[B, N]``."""
    return x.masked_fill(~legal[None], float("-inf")).argmax(-1)
