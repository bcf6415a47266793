"""NNI model spaces -> graph spaces: the one place that reads NNI's mutables.

``model_space.simplify()`` maps labels to NNI mutables; :func:`decisions_from_mutables` turns them
into the package's own decisions (:mod:`nni_diffusionnag.space.decisions`), and
:func:`space_for_model` picks the encoding: the paper's for NAS-Bench-201 and OFA's
MobileNetV3, the generic decision graph for anything else.
"""

from __future__ import annotations

import math

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from nni.mutable import Categorical, CategoricalMultiple, MutableAnnotation, Numerical

from ..exceptions import UnsupportedSpaceError
from ..space import GraphSpace, MobileNetV3OFASpace, NasBench201Space
from ..space.decisions import Choice, Condition, Decision, MultiChoice, quantile_bins, unique_values
from ..space.generic import GenericSpace

__all__ = ["decisions_from_mutables", "generic_space", "space_for_model", "Discretize"]

Discretize = Union[None, int, Mapping[str, Union[int, Sequence[float]]]]


def _parse_discretize(discretize: Discretize, mutables: Mapping[str, Any]) -> Dict[str, Any]:
    numeric = [lab for lab, m in mutables.items() if isinstance(m, Numerical)]
    if discretize is None:
        return {}
    if isinstance(discretize, int) and not isinstance(discretize, bool):
        return {lab: discretize for lab in numeric}
    if not isinstance(discretize, Mapping):
        raise TypeError(f"discretize must be None, an int or a {{label: n_bins}} dict, got {discretize!r}")
    wrong = [lab for lab in discretize if lab not in numeric]
    if wrong:
        raise ValueError(f"discretize names {wrong}, which are not numerical decisions of the space; "
                         f"numerical decisions: {numeric}")
    return dict(discretize)


def _binned(label: str, mutable: Numerical, spec: Union[int, Sequence[float]]) -> Choice:
    if isinstance(spec, int) and not isinstance(spec, bool):
        values = quantile_bins(lambda q: float(mutable.distribution.ppf(q)), spec,
                               snap=lambda v: float(mutable.qclip(v)), label=label)
    else:
        values = unique_values([float(v) for v in spec])
    # NNI's contains() says yes to NaN (every comparison with it is False): refuse it here
    bad = [v for v in values if not math.isfinite(v) or not mutable.contains({mutable.label: v})]
    if bad or not values:
        raise ValueError(f"discretize: values {bad or values} are not in the domain of {mutable!r}")
    return Choice(label, tuple(values), kind="numerical", cdf=lambda v: float(mutable.distribution.cdf(v)))


def _unsupported(label: str, mutable: Any) -> str:
    if isinstance(mutable, Numerical):
        return (f"'{label}' is {mutable!r}, a continuous value: pass discretize={{'{label}': 8}} (or "
                f"discretize=8 for every numerical decision) to bin it into 8 equal-probability values, "
                f"or write it as nni.choice('{label}', [...]) in the model")
    return f"'{label}' is {type(mutable).__name__} ({mutable!r}), which has no graph encoding"


def decisions_from_mutables(mutables: Mapping[str, Any], discretize: Discretize = None) -> List[Decision]:
    """The decisions of ``model_space.simplify()``, in its order.

    Raises
    ------
    UnsupportedSpaceError
        Naming every label that has no graph encoding (a ``Numerical`` without ``discretize``,
        an unknown mutable type).
    """
    per_label = _parse_discretize(discretize, mutables)
    out: List[Decision] = []
    unsupported: List[str] = []
    for label, mutable in mutables.items():
        if not isinstance(label, str):
            raise UnsupportedSpaceError(f"mutable labels must be strings, got {label!r} for {mutable!r}")
        label = str(label)
        if isinstance(mutable, MutableAnnotation):
            out.append(Condition(label, mutable.check_contains))
        elif isinstance(mutable, Categorical):
            out.append(Choice(label, tuple(mutable.values)))
        elif isinstance(mutable, CategoricalMultiple):
            out.append(MultiChoice(label, tuple(mutable.values), mutable.n_chosen))
        elif isinstance(mutable, Numerical) and label in per_label:
            out.append(_binned(label, mutable, per_label[label]))
        else:
            unsupported.append(_unsupported(label, mutable))
    if unsupported:
        raise UnsupportedSpaceError(
            "cannot encode these decisions as graph nodes: " + "; ".join(unsupported)
            + ". Supported: Categorical (LayerChoice, nni.choice, Repeat depth), CategoricalMultiple "
            "(InputChoice), and Numerical only with `discretize`."
        )
    return out


def generic_space(model_space: Any, *, name: Optional[str] = None, discretize: Discretize = None,
                  max_combinations: int = 256) -> GenericSpace:
    """The generic decision graph of an NNI model space (a ``ModelSpace`` or an ``ExecutableModelSpace``).

    ``name`` defaults to ``generic-<class name>`` of the model, lower case.
    """
    if name is None:
        inner = getattr(model_space, "model_space", model_space)  # RawFormatModelSpace wraps it
        name = "generic-" + type(inner).__name__.lower()
    return GenericSpace(decisions_from_mutables(model_space.simplify(), discretize), name=name,
                        max_combinations=max_combinations, model_space=model_space)


def space_for_model(model_space: Any, discretize: Discretize = None) -> GraphSpace:
    """The graph space of an NNI model space (anything with ``simplify()``).

    NNI's ``NasBench201`` gets the 8-node encoding of the paper, a ``MobileNetV3Space`` with OFA's
    decisions (:func:`~nni_diffusionnag.space.mobilenetv3.ofa_mobilenetv3`) the paper's 20-node one
    (both with shipped priors); any other space of categorical decisions gets the generic
    decision-graph encoding (:class:`~nni_diffusionnag.space.generic.GenericSpace`). A numerical
    mutable (``nni.uniform``) raises :class:`~nni_diffusionnag.exceptions.UnsupportedSpaceError`
    naming it, unless ``discretize`` bins it.
    """
    mutables = model_space.simplify()
    for known in (NasBench201Space, MobileNetV3OFASpace):
        space = known.match(mutables)
        if space is not None:
            return space
    return generic_space(model_space, discretize=discretize)
