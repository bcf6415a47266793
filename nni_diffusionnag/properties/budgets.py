"""Cost budgets by name: ``'params<=0.5'`` or ``{'cost': 'flops', 'budget': 220}`` -> a constraint
factory of the space, so that a YAML config (nnictl ``classArgs``) and Python use the same names.

A named budget becomes a factory ``(graph_space, model_space) -> Constraint``, resolved when the
search knows its space: NAS-Bench-201's exact cost model for its encoding, MobileNetV3's for a
``MobileNetV3Space`` (either encoding). Another space has no cost model, and the error says so
before any trial runs. Units are those of :func:`~nni_diffusionnag.properties.additive.unit_scale`
(default ``'M'``: millions of parameters, MFLOPs).

``latency`` (milliseconds, ``'latency<=8ms'``) is the third cost: it has no exact model, only
one fitted to networks profiled on the user's device
(:class:`~nni_diffusionnag.properties.latency.AdditiveLatencyModel`, the configuration's
``latency_model``), so its budgets need that model and are checked against its signature.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional, Union

from .additive import check_kind, unit_scale

__all__ = ["budget_for_space", "parse_budget", "COST_KINDS"]

_BUDGET = re.compile(r"^\s*(\w+)\s*<=\s*([0-9.eE+-]+)\s*(ms|[KMG]?)\s*$")

COST_KINDS = ("params", "flops", "latency")
"""Costs a budget or an objective can name: the exact models' two and the fitted latency."""


def latency_for_space(model: Any, budget_ms: float, confidence: Optional[float] = 0.95) -> Callable[[Any, Any], Any]:
    """``latency <= budget_ms`` under the fitted latency ``model``, as a factory of the space
    (which must be the one the model was profiled on). ``confidence``: see
    :func:`~nni_diffusionnag.properties.latency.latency_constraint`."""
    from .latency import latency_constraint

    budget_ms = float(budget_ms)
    if not budget_ms > 0:
        raise ValueError(f"a latency budget must be > 0 ms, got {budget_ms:g}")

    def make(space: Any, model_space: Any) -> Any:
        if model is None:
            raise ValueError(f"the budget latency<={budget_ms:g}ms needs latency_model=PATH, a latency model profiled "
                             "on your device (`nni-diffusionnag bench latency` or properties.latency."
                             "fit_additive_latency)")
        if model.signature is not None:
            from ..space.base import SpaceSignature

            space.signature().check_matches(SpaceSignature.from_dict(model.signature), "latency model")
        return latency_constraint(model, budget_ms, confidence=confidence)

    make.__name__ = f"latency<={budget_ms:g}ms"
    return make


def budget_for_space(kind: str, budget: float, unit: Optional[str] = "M", *,
                     latency_model: Any = None) -> Callable[[Any, Any], Any]:
    """``kind <= budget`` as a factory of the space (see the module docstring); ``kind='latency'``
    is in ms and needs ``latency_model``."""
    if kind == "latency":
        if unit not in (None, "", "ms"):
            raise ValueError(f"a latency budget is in milliseconds ('latency<=8ms'), got the unit {unit!r}")
        return latency_for_space(latency_model, budget)
    if kind not in COST_KINDS:
        raise ValueError(f"unknown cost {kind!r}; expected one of {list(COST_KINDS)}")
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


def parse_budget(spec: Union[str, Mapping[str, Any]], latency_model: Any = None) -> Callable[[Any, Any], Any]:
    """A named budget: ``'params<=0.5'`` (unit M), ``'flops<=220M'``, ``'latency<=8ms'`` (with
    ``latency_model``), or a dict ``{'cost': 'params', 'budget': 0.5, 'unit': 'M'}``."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"cost", "budget", "unit"})
        if unknown or "cost" not in spec or "budget" not in spec:
            raise ValueError(f"a budget dict needs 'cost' and 'budget' (and optionally 'unit'), got {dict(spec)!r}")
        unit = spec.get("unit", "ms" if spec["cost"] == "latency" else "M")
        return budget_for_space(spec["cost"], spec["budget"], unit, latency_model=latency_model)
    m = _BUDGET.match(spec)
    if not m:
        raise ValueError(f"cannot read the budget {spec!r}: write it as 'params<=0.5', 'flops<=220M' or "
                         "'latency<=8ms' (kinds: params, flops, latency; units K, M, G, default M; latency in ms), "
                         "or 'module:callable' for your own")
    kind, unit = m.group(1), m.group(3)
    return budget_for_space(kind, float(m.group(2)), unit or ("ms" if kind == "latency" else "M"),
                            latency_model=latency_model)
