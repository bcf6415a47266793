"""Graph spaces from NNI's legacy (HPO) search spaces: the ``search_space.json`` of ``nnictl``.

Any search space that NNI's own tuners accept is encoded, with no special case per space: NNI's
NasBench201 space (``{k: v.as_legacy_dict() for k, v in NasBench201().simplify().items()}``) gets
the paper's 8-node cell graph, everything else the generic decision graph
(:class:`~nni_diffusionnag.space.generic.GenericSpace`, one node per decision), through these
rules per ``_type``:

- ``choice``: one value of the list (a value listed twice is one option; options are compared as
  JSON sees them, so ``1`` and ``True`` are two). A *nested* choice (every option a dict with
  ``_name``) is a decision over the option names (sent back as given, ``1`` as ``1``), and
  each option's own parameters are decisions labelled ``label/<name>/<param>``; the parameters
  sent to a trial are NNI's nested form ``{label: {'_name': name, param: value, ...}}`` with only
  the chosen option's parameters, and two graphs that differ only in unchosen options count as
  the same architecture.
- ``randint [low, high)``: every integer, as ints.
- ``quniform``/``qloguniform [low, high, q]``: the grid ``clip(round(x / q) * q, low, high)``
  (ints where ``low``, ``high`` and ``q`` are integral, else floats, as NNI's tuners send).
- A discrete grid of more than ``max_grid`` values (default 32), and every continuous type
  (``uniform``, ``loguniform``, ``normal``, ``lognormal``, ``qnormal``, ``qlognormal``), is binned:
  ``discretize`` (default :data:`DEFAULT_BINS`; an int for all, or ``{label: n}``) values at the
  mid-quantiles ``(i + 0.5) / n`` of the declared distribution, snapped to ``q`` where there is
  one (:func:`~nni_diffusionnag.space.decisions.quantile_bins`); ``{label: [v1, v2, ...]}`` gives a
  parameter's values instead (each inside the declared range, on its ``q`` grid if it has one).
  Every value sent to a trial is therefore inside the declared range and of the declared type; a
  value off the grid (an imported result) maps to the bin of nearest quantile.

Anything else (an unknown ``_type``, an empty ``_value``, a ``_value`` of the wrong length,
``low >= high``, a non-positive ``loguniform`` bound or ``sigma``) raises
:class:`~nni_diffusionnag.exceptions.UnsupportedSpaceError` naming the label. Nothing here imports NNI.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..exceptions import UnsupportedSpaceError
from .base import GraphSpace
from .decisions import Choice, quantile_bins, unique_values
from .generic import GenericSpace
from .nasbench201 import NNI_OPS, NasBench201Space

__all__ = ["space_for_search_space", "LegacySpace", "DEFAULT_BINS", "MAX_GRID", "TYPES"]

DEFAULT_BINS = 8
MAX_GRID = 32
TYPES = ("choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal",
         "lognormal", "qlognormal")
Discretize = Union[None, int, Mapping[str, Union[int, Sequence[float]]]]
Bins = Union[int, Sequence[float]]  # a number of bins, or the values themselves

_logger = logging.getLogger(__name__)


def _integral(*xs: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) and float(x).is_integer() for x in xs)


def _nested(values: Sequence[Any]) -> bool:
    return bool(values) and all(isinstance(v, Mapping) and "_name" in v for v in values)


class _Param:
    """One parameter of the tree: its decision and, for a nested choice, its options' parameters."""

    def __init__(self, name: str, label: str, choice: Choice, options: Optional[Dict[str, List["_Param"]]] = None):
        self.name, self.label, self.choice, self.options = name, label, choice, options


def _fail(label: str, spec: Any, why: str) -> UnsupportedSpaceError:
    return UnsupportedSpaceError(f"search space: '{label}' = {spec!r} {why}. Supported _type values: {list(TYPES)}; "
                                 "a nested 'choice' has options that are all dicts with '_name'")


def _snapper(low: Optional[float], high: Optional[float], q: Optional[float], as_int: bool) -> Callable[[float], Any]:
    def snap(v: float) -> Any:
        if q is not None:
            v = round(v / q) * q
        if low is not None:
            v = min(max(v, low), high)
        if as_int:
            return int(round(v))
        v = float(f"{v:.12g}")  # round(x / q) * q leaves float noise (0.1 * 3): drop it, stay in range
        return min(max(v, low), high) if low is not None else v
    return snap


def _grid(label: str, low: float, high: float, q: float, as_int: bool, limit: int) -> Optional[List[Any]]:
    """The q-grid inside [low, high], or None if it has more than ``limit`` values."""
    snap = _snapper(low, high, q, as_int)
    k0, k1 = round(low / q), round(high / q)
    if k1 - k0 + 1 > limit:
        return None
    out: List[Any] = []
    for k in range(k0, k1 + 1):
        v = snap(k * q)
        if v not in out:
            out.append(v)
    return out


def _given_values(label: str, spec: Any, values: Sequence[Any], inside: Callable[[float], bool],
                  snap: Callable[[float], Any]) -> List[Any]:
    """``discretize={label: [...]}``: the user's values, each checked against the declared domain."""
    try:
        nums = [float(x) for x in values]
    except (TypeError, ValueError):
        raise _fail(label, spec, f"got discretize values {list(values)!r}, which are not all numbers") from None
    on_grid = lambda f: abs(snap(f) - f) <= 1e-9 * max(1.0, abs(f))  # noqa: E731 - snapping leaves it be
    bad = [x for x, f in zip(values, nums) if not (math.isfinite(f) and inside(f) and on_grid(f))]
    if bad or not nums:
        raise _fail(label, spec, f"got discretize values {bad or list(values)!r} outside its range or off its q grid")
    return unique_values([snap(f) for f in nums])


def _decision(label: str, spec: Any, bins: Bins, max_grid: int) -> Tuple[Choice, Optional[List[Any]]]:
    """The decision of one parameter (for a nested choice also its options)."""
    if not isinstance(spec, Mapping) or "_type" not in spec or "_value" not in spec:
        raise _fail(label, spec, "is not a {'_type': ..., '_value': [...]} dict")
    kind, v = spec["_type"], spec["_value"]
    if kind not in TYPES:
        raise _fail(label, spec, f"has the unknown _type {kind!r}")
    if not isinstance(v, (list, tuple)) or not v:
        raise _fail(label, spec, "needs a non-empty _value list")
    given = isinstance(bins, (list, tuple))
    if kind == "choice":
        if given:
            raise _fail(label, spec, "is a choice, whose values are listed already: discretize applies to numbers")
        if _nested(v):
            names = [o["_name"] for o in v]
            if len({str(n) for n in names}) != len(names):  # their parameters' labels read label/<name>/...
                raise _fail(label, spec, "has two nested options whose _name read the same")
            return Choice(label, tuple(names)), list(v)
        if any(isinstance(o, Mapping) and "_name" in o for o in v):
            _logger.warning("search space: only some options of '%s' have '_name'; like NNI's tuners, DiffusionNAG "
                            "treats them all as plain values (give every option a '_name' for a nested choice)", label)
        values = unique_values(v)
        if len(values) < len(v):
            _logger.warning("search space: '%s' lists a value more than once; each value is one option: %s",
                            label, values)
        return Choice(label, tuple(values)), None
    try:
        nums = [float(x) for x in v]
    except (TypeError, ValueError):
        raise _fail(label, spec, "has non-numeric bounds") from None
    if not all(math.isfinite(x) for x in nums):
        raise _fail(label, spec, "has non-finite bounds")
    need = 3 if kind.startswith("q") else 2  # as NNI's own validation of search spaces
    if len(nums) != need:
        raise _fail(label, spec, f"needs exactly {need} numbers in _value")
    a, b = nums[0], nums[1]
    q = nums[2] if kind.startswith("q") else None
    if q is not None and q <= 0:
        raise _fail(label, spec, "needs q > 0")
    if kind == "randint":
        lo, hi = math.ceil(a), math.ceil(b)
        if hi <= lo:
            raise _fail(label, spec, "needs low < high")
        if given:
            values = _given_values(label, spec, bins, lambda x: lo <= x < hi, lambda x: int(round(x)))
            return Choice(label, tuple(values), "numerical", cdf=lambda x: (x - lo) / (hi - lo)), None
        if hi - lo <= max_grid:
            return Choice(label, tuple(range(lo, hi))), None
        ppf = lambda p: lo + p * (hi - lo)  # noqa: E731
        values = quantile_bins(ppf, bins, snap=lambda x: min(max(int(math.floor(x)), lo), hi - 1), label=label)
        return Choice(label, tuple(values), "numerical", cdf=lambda x: (x - lo) / (hi - lo)), None
    if "normal" in kind:
        if b <= 0:
            raise _fail(label, spec, "needs sigma > 0")
        dist = NormalDist(a, b)
        if kind.endswith("lognormal"):
            ppf, cdf = (lambda p: math.exp(dist.inv_cdf(p))), (lambda x: dist.cdf(math.log(x)) if x > 0 else 0.0)
        else:
            ppf, cdf = dist.inv_cdf, dist.cdf
        as_int = q is not None and _integral(q)
        if given:
            positive = kind.endswith("lognormal")
            values = _given_values(label, spec, bins, lambda x: x > 0 or not positive, _snapper(None, None, q, as_int))
        else:
            values = quantile_bins(ppf, bins, snap=_snapper(None, None, q, as_int), label=label)
        return Choice(label, tuple(values), "numerical", cdf=cdf), None
    if b <= a:
        raise _fail(label, spec, "needs low < high")
    if "log" in kind:
        if a <= 0:
            raise _fail(label, spec, "needs low > 0 (a log scale)")
        la, lb = math.log(a), math.log(b)
        ppf = lambda p: math.exp(la + p * (lb - la))  # noqa: E731
        cdf = lambda x: (math.log(x) - la) / (lb - la) if x > 0 else 0.0  # noqa: E731
    else:
        ppf = lambda p: a + p * (b - a)  # noqa: E731
        cdf = lambda x: (x - a) / (b - a)  # noqa: E731
    as_int = q is not None and _integral(a, b, q)
    if given:
        values = _given_values(label, spec, bins, lambda x: a <= x <= b, _snapper(a, b, q, as_int))
        return Choice(label, tuple(values), "numerical", cdf=cdf), None
    if q is not None:
        grid = _grid(label, a, b, q, as_int, max_grid)
        if grid is not None:
            return Choice(label, tuple(grid), "numerical", cdf=cdf), None
    values = quantile_bins(ppf, bins, snap=_snapper(a, b, q, as_int), label=label)
    return Choice(label, tuple(values), "numerical", cdf=cdf), None


class LegacySpace(GenericSpace):
    """A legacy search space as a decision chain; samples are NNI's (nested) parameter dicts.

    Built by :func:`space_for_search_space`; see the module docstring for the rules.
    """

    def __init__(self, params: List[_Param], decisions: List[Choice], name: str = "search-space") -> None:
        super().__init__(decisions, name=name)
        self._params = params
        self._nested = any(p.options for p in self._walk(params))

    @staticmethod
    def _walk(params: Sequence[_Param]):
        for p in params:
            yield p
            for sub in (p.options or {}).values():
                yield from LegacySpace._walk(sub)

    def types_to_sample(self, types: Sequence[int]) -> Dict[str, Any]:
        flat = super().types_to_sample(types)
        return self._nest(self._params, flat)

    def _nest(self, params: Sequence[_Param], flat: Mapping[str, Any]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for p in params:
            value = flat[p.label]
            if p.options is not None:
                out[p.name] = {"_name": value, **self._nest(p.options[value], flat)}
            else:
                out[p.name] = value
        return out

    def sample_to_types(self, sample: Mapping[str, Any]) -> np.ndarray:
        if not isinstance(sample, Mapping):
            raise ValueError(f"parameters must be a dict, got {sample!r}")
        flat: Dict[str, Any] = {}
        self._flatten(self._params, sample, flat, active=True)
        return super().sample_to_types(flat)

    def _flatten(self, params: Sequence[_Param], given: Any, flat: Dict[str, Any], active: bool) -> None:
        for p in params:
            if active:
                if not isinstance(given, Mapping) or p.name not in given:
                    raise ValueError(f"parameters lack '{p.label}'")
                value = given[p.name]
            else:  # an unchosen option: its decisions take their first value (see key())
                value = None
            if p.options is not None:
                name = value.get("_name") if isinstance(value, Mapping) else None
                if active and name not in p.options:
                    raise ValueError(f"'{p.label}' must be {{'_name': one of {list(p.options)}, ...}}, got {value!r}")
                flat[p.label] = name if active else p.choice.values[0]
                for option, sub in p.options.items():
                    self._flatten(sub, value, flat, active and option == name)
            else:
                flat[p.label] = value if active else p.choice.values[0]

    def key(self, types: Sequence[int]) -> Tuple[int, ...]:
        """Graphs that differ only in the parameters of unchosen options are one architecture."""
        if not self._nested:
            return super().key(types)
        return tuple(int(t) for t in self.sample_to_types(self.types_to_sample(types)))


def space_for_search_space(search_space: Mapping[str, Any], discretize: Discretize = None,
                           max_grid: int = MAX_GRID) -> GraphSpace:
    """The graph space of an NNI legacy search space (the dict of a ``search_space.json``).

    Raises
    ------
    UnsupportedSpaceError
        If the space is empty or a parameter is not one NNI's tuners accept (the message names it).
    """
    if not isinstance(search_space, Mapping) or not search_space:
        raise UnsupportedSpaceError(f"empty or invalid search space {search_space!r}: expected a dict "
                                    "{label: {'_type': ..., '_value': [...]}, ...}")
    nb201 = _match_nb201(search_space)
    if nb201 is not None:
        return nb201
    if discretize is not None and not isinstance(discretize, (int, Mapping)):
        raise ValueError(f"discretize must be None, an int or a {{label: n_bins}} dict, got {discretize!r}")
    decisions: List[Choice] = []
    used: List[str] = []

    def build(space: Mapping[str, Any], prefix: str) -> List[_Param]:
        params = []
        for name, spec in space.items():
            if name == "_name":
                continue
            label = f"{prefix}{name}"
            bins: Bins = DEFAULT_BINS
            if isinstance(discretize, Mapping):
                bins = discretize.get(label, DEFAULT_BINS)
                if label in discretize:
                    used.append(label)
            elif discretize is not None:
                bins = discretize
            choice, options = _decision(label, spec, bins, max_grid)
            decisions.append(choice)
            param = _Param(str(name), label, choice)
            if options is not None:
                param.options = {o["_name"]: build(o, f"{label}/{o['_name']}/") for o in options}
            params.append(param)
        return params

    params = build(search_space, "")
    if isinstance(discretize, Mapping):
        wrong = sorted(set(discretize) - set(used))
        if wrong:
            raise ValueError(f"discretize names {wrong}, which are not parameters of the search space; "
                             f"parameters: {[d.label for d in decisions]}")
    return LegacySpace(params, decisions)


def _match_nb201(search_space: Mapping[str, Any]) -> Optional[NasBench201Space]:
    """NNI's NasBench201 space under any label prefix, with its ops in any order."""
    labels = list(search_space)
    for prefix in sorted({lab[: -len("0_1")] for lab in labels if isinstance(lab, str) and lab.endswith("0_1")}):
        space = NasBench201Space(prefix)
        if set(labels) != set(space.labels):
            continue
        specs = [search_space[lab] for lab in space.labels]
        if all(isinstance(s, Mapping) and s.get("_type") == "choice" and isinstance(s.get("_value"), list)
               and len(s["_value"]) == len(NNI_OPS) and sorted(map(str, s["_value"])) == sorted(NNI_OPS)
               for s in specs):
            return space
    return None
