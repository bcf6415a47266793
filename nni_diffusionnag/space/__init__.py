"""Search spaces as DiffusionNAG graphs: the first stage of the data flow."""

from .base import GraphSpace, SpaceSignature, reachability
from .nasbench201 import NasBench201Space

__all__ = ["GraphSpace", "SpaceSignature", "reachability", "NasBench201Space", "get_space"]

_SPACES = {"nasbench201": NasBench201Space}


def get_space(name: str) -> GraphSpace:
    """Resolve a space by name (``nasbench201``); the error lists the known names."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _SPACES:
        raise ValueError(f"unknown space {name!r}; known spaces: {sorted(_SPACES)}")
    return _SPACES[key]()
