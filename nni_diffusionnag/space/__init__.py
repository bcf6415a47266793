"""Search spaces as DiffusionNAG graphs: the first stage of the data flow."""

from typing import Any

from ..exceptions import UnsupportedSpaceError
from .base import GraphSpace, SpaceSignature, reachability
from .nasbench201 import NasBench201Space

__all__ = ["GraphSpace", "SpaceSignature", "reachability", "NasBench201Space", "get_space", "space_for_model"]

_SPACES = {"nasbench201": NasBench201Space}


def get_space(name: str) -> GraphSpace:
    """Resolve a space by name (``nasbench201``); the error lists the known names."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _SPACES:
        raise ValueError(f"unknown space {name!r}; known spaces: {sorted(_SPACES)}")
    return _SPACES[key]()


def space_for_model(model_space: Any) -> GraphSpace:
    """The graph space of an NNI model space (anything with ``simplify()``).

    Raises :class:`~nni_diffusionnag.exceptions.UnsupportedSpaceError` naming the labels found
    when the space is not one we can encode.
    """
    mutables = model_space.simplify()
    space = NasBench201Space.match(mutables)
    if space is not None:
        return space
    found = {label: type(m).__name__ for label, m in list(mutables.items())[:8]}
    raise UnsupportedSpaceError(
        f"cannot encode this model space as DiffusionNAG graphs yet: found mutables {found}"
        f"{' ...' if len(mutables) > 8 else ''}; supported: NNI's NasBench201 (labels cell/0_1 ... cell/2_3 "
        "with ops none, skip_connect, conv_1x1, conv_3x3, avg_pool_3x3)"
    )
