"""Cost budgets by name: ``'params<=0.5'`` or ``{'cost': 'flops', 'budget': 220}`` -> a constraint
factory of the space, so that a YAML config (nnictl ``classArgs``) and Python use the same names.

A named budget becomes a factory ``(graph_space, model_space) -> Constraint``, resolved when the
search knows its space: NAS-Bench-201's exact cost model for its encoding, MobileNetV3's for a
``MobileNetV3Space`` (either encoding). Another space has no cost model, and the error says so
before any trial runs. Units are those of :func:`~nni_diffusionnag.properties.additive.unit_scale`
(default ``'M'``: millions of parameters, MFLOPs).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional, Union

from .additive import check_kind, unit_scale

__all__ = ["budget_for_space", "parse_budget"]

_BUDGET = re.compile(r"^\s*(\w+)\s*<=\s*([0-9.eE+-]+)\s*([KMG]?)\s*$")


def budget_for_space(kind: str, budget: float, unit: Optional[str] = "M") -> Callable[[Any, Any], Any]:
    """``kind <= budget`` as a factory of the space (see the module docstring)."""
    check_kind(kind)
    unit_scale(unit)
    budget = float(budget)
    if not budget > 0:
        raise ValueError(f"a {kind} budget must be > 0, got {budget:g}")

    def make(space: Any, model_space: Any) -> Any:
        from ..space import MobileNetV3OFASpace, NasBench201Space

        if isinstance(space, NasBench201Space):
            from .nasbench201 import budget_constraint

            return budget_constraint(kind, budget, unit)
        macro_name = getattr(getattr(getattr(model_space, "model_space", model_space), "trace_symbol", None),
                             "__name__", type(getattr(model_space, "model_space", model_space)).__name__)
        if isinstance(space, MobileNetV3OFASpace) or macro_name == "MobileNetV3Space":
            from .mobilenetv3 import space_budget_constraint

            if model_space is None:
                raise ValueError(f"the budget {kind}<={budget:g}{unit or ''} on '{space.name}' needs the "
                                 "MobileNetV3Space model (a Python NasExperiment) to read its widths")
            return space_budget_constraint(space, model_space, kind, budget, unit)
        raise ValueError(f"the space '{space.name}' has no {kind} cost model (NAS-Bench-201 and MobileNetV3Space "
                         "have one): give your own constraint as 'module:callable' returning a Constraint")

    make.__name__ = f"{kind}<={budget:g}{unit or ''}"
    return make


def parse_budget(spec: Union[str, Mapping[str, Any]]) -> Callable[[Any, Any], Any]:
    """A named budget: ``'params<=0.5'`` (unit M), ``'flops<=220M'``, or a dict
    ``{'cost': 'params', 'budget': 0.5, 'unit': 'M'}``."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"cost", "budget", "unit"})
        if unknown or "cost" not in spec or "budget" not in spec:
            raise ValueError(f"a budget dict needs 'cost' and 'budget' (and optionally 'unit'), got {dict(spec)!r}")
        return budget_for_space(spec["cost"], spec["budget"], spec.get("unit", "M"))
    m = _BUDGET.match(spec)
    if not m:
        raise ValueError(f"cannot read the budget {spec!r}: write it as 'params<=0.5' or 'flops<=220M' "
                         "(kinds: params, flops; units K, M, G; default M), or 'module:callable' for your own")
    return budget_for_space(m.group(1), float(m.group(2)), m.group(3) or "M")
