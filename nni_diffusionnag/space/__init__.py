"""Search spaces as DiffusionNAG graphs: the first stage of the data flow."""

from typing import Any

from .base import GraphSpace, SpaceSignature, reachability
from .mobilenetv3 import MobileNetV3OFASpace
from .nasbench201 import NasBench201Space

__all__ = ["GraphSpace", "SpaceSignature", "reachability", "NasBench201Space", "MobileNetV3OFASpace", "get_space", "space_for_model"]

def _nni_mobilenetv3() -> GraphSpace:
    from nni.nas.hub.pytorch import MobileNetV3Space

    return space_for_model(MobileNetV3Space())


_SPACES = {"nasbench201": NasBench201Space, "mobilenetv3ofa": MobileNetV3OFASpace,
           # NNI's default MobileNetV3Space (67 decisions) in the generic encoding; its prior's file is
           # named after the generic space, 'generic-mobilenetv3space'
           "mobilenetv3": _nni_mobilenetv3, "genericmobilenetv3space": _nni_mobilenetv3}


def get_space(name: str) -> GraphSpace:
    """Resolve a space by name (``nasbench201``, ``mobilenetv3-ofa``, ``mobilenetv3`` for NNI's
    default ``MobileNetV3Space``); the error lists the known names."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _SPACES:
        raise ValueError(f"unknown space {name!r}; known spaces: {sorted(_SPACES)}")
    return _SPACES[key]()


def space_for_model(model_space: Any, discretize: Any = None) -> GraphSpace:
    """The graph space of an NNI model space (anything with ``simplify()``).

    NNI's ``NasBench201`` gets the 8-node encoding of the paper, a ``MobileNetV3Space`` with OFA's
    decisions (:func:`~nni_diffusionnag.space.mobilenetv3.ofa_mobilenetv3`) the paper's 20-node
    one (both with shipped priors); any
    other space of categorical decisions gets the generic decision-graph encoding
    (:class:`~nni_diffusionnag.space.generic.GenericSpace`). A numerical mutable (``nni.uniform``)
    raises :class:`~nni_diffusionnag.exceptions.UnsupportedSpaceError` naming it, unless
    ``discretize`` bins it.
    """
    mutables = model_space.simplify()
    for known in (NasBench201Space, MobileNetV3OFASpace):
        space = known.match(mutables)
        if space is not None:
            return space
    from .generic import GenericSpace

    return GenericSpace.from_model(model_space, discretize=discretize)
