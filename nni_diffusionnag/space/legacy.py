"""Graph spaces from NNI's legacy (HPO) search spaces: the ``search_space.json`` of ``nnictl``.

A legacy search space is ``{label: {"_type": "choice", "_value": [...]}, ...}``; NNI's model
spaces produce one with ``{k: v.as_legacy_dict() for k, v in model_space.simplify().items()}``.
Only spaces made of ``choice`` dimensions that one of our graph spaces can encode are accepted;
anything else raises :class:`~nni_diffusionnag.exceptions.UnsupportedSpaceError` naming the
labels at fault. Nothing here imports NNI.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from ..exceptions import UnsupportedSpaceError
from .base import GraphSpace
from .nasbench201 import EDGES, NNI_OPS, NasBench201Space

__all__ = ["space_for_search_space"]

_SUPPORTED = ("NNI's NasBench201: 6 'choice' labels <prefix>0_1, 0_2, 1_2, 0_3, 1_3, 2_3 (prefix 'cell/' in the "
              f"hub model), each over the ops {list(NNI_OPS)}")


def _describe(spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return type(spec).__name__
    values = spec.get("_value")
    if isinstance(values, list) and len(values) > 6:
        values = values[:6] + ["..."]
    return f"{spec.get('_type')}{values}"


def space_for_search_space(search_space: Mapping[str, Any]) -> GraphSpace:
    """The graph space of an NNI legacy search space (the dict of a ``search_space.json``).

    Label order and the order of the op names inside ``_value`` do not matter: samples carry op
    names, not indices.

    Raises
    ------
    UnsupportedSpaceError
        If the space is empty, has dimensions that are not ``choice`` over plain values, or is
        not one we can encode (the message lists the labels found and what is supported).
    """
    if not isinstance(search_space, Mapping) or not search_space:
        raise UnsupportedSpaceError(f"empty or invalid search space {search_space!r}; supported: {_SUPPORTED}")
    not_choice: Dict[str, str] = {}
    for label, spec in search_space.items():
        values = spec.get("_value") if isinstance(spec, Mapping) else None
        if (not isinstance(spec, Mapping) or spec.get("_type") != "choice" or not isinstance(values, list)
                or not all(isinstance(v, (str, int, float, bool)) for v in values)):
            not_choice[label] = _describe(spec)
    if not_choice:
        raise UnsupportedSpaceError(
            "DiffusionNAG can only encode search spaces of 'choice' dimensions over plain values; these "
            f"labels are not: {not_choice}. Supported: {_SUPPORTED}")

    labels = list(search_space)
    for prefix in sorted({lab[: -len("0_1")] for lab in labels if lab.endswith("0_1")}):
        space = NasBench201Space(prefix)
        if set(labels) != set(space.labels):
            continue
        if all(sorted(map(str, search_space[lab]["_value"])) == sorted(NNI_OPS)
               and len(search_space[lab]["_value"]) == len(NNI_OPS) for lab in space.labels):
            return space
    found = {lab: _describe(search_space[lab]) for lab in labels[:8]}
    raise UnsupportedSpaceError(
        f"cannot encode this search space as DiffusionNAG graphs yet: found {len(labels)} labels "
        f"{found}{' ...' if len(labels) > 8 else ''}; supported: {_SUPPORTED} "
        f"(expected {len(EDGES)} labels)")
