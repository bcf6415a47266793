"""Search spaces as DiffusionNAG graphs: the first stage of the data flow (no NNI import).

NNI model spaces reach these encodings through :func:`nni_diffusionnag.integration.mutables.space_for_model`;
legacy ``search_space.json`` dicts through :func:`.legacy.space_for_search_space`.
"""


from .base import GraphSpace, SpaceSignature, reachability
from .mobilenetv3 import MobileNetV3OFASpace
from .nasbench201 import NasBench201Space

__all__ = ["GraphSpace", "SpaceSignature", "reachability", "NasBench201Space", "MobileNetV3OFASpace", "get_space"]

def _nni_mobilenetv3() -> GraphSpace:
    # NNI's hub model: read through the NNI adapters, imported only when this space is asked for
    from nni.nas.hub.pytorch import MobileNetV3Space

    from ..integration.mutables import space_for_model

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
