"""Decisions of a search space, independent of where they were declared.

A search space reaches the generic graph encoding (:class:`~nni_diffusionnag.space.generic.GenericSpace`)
as a list of decisions. They come from an NNI model space's ``simplify()`` (converted by the NNI
adapters, :mod:`nni_diffusionnag.integration.mutables`) or from a legacy ``search_space.json``
(:mod:`nni_diffusionnag.space.legacy`); either way the encoding sees the same three kinds, so it
never needs NNI:

- :class:`Choice`: one value out of a finite list (a ``LayerChoice``, ``nni.choice``, ``Repeat``
  depth, a legacy ``choice``/``randint``/``quniform``, or a continuous value binned into a grid);
- :class:`MultiChoice`: a subset of candidates (``InputChoice``), of fixed size or any size;
- :class:`Condition`: a rule a whole sample must satisfy (NNI's ``MutableAnnotation`` constraints).

Binning of continuous values (:func:`quantile_bins`): ``n`` values at the mid-quantiles
``(i + 0.5) / n`` of the declared distribution, i.e. equal-probability bins, each represented by
its median. Every value lies strictly inside the declared range (no bin sits on a bound), and a
value off the grid maps to the bin whose quantile is nearest (:meth:`Choice.index_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Choice", "MultiChoice", "Condition", "Decision", "quantile_bins", "round_significant", "unique_values"]

CATEGORICAL = "categorical"
NUMERICAL = "numerical"


@dataclass(frozen=True)
class Choice:
    """One value out of ``values``.

    Parameters
    ----------
    label
        The name of the decision in a sample.
    values
        The values, in the order that defines the node types.
    kind
        ``'categorical'``, or ``'numerical'`` for a binned continuous value (recorded in the
        space's signature).
    cdf
        For a binned value: the declared distribution's CDF, used to map a value off the grid to
        the bin of nearest quantile.
    """

    label: str
    values: Tuple[Any, ...]
    kind: str = CATEGORICAL
    cdf: Optional[Callable[[float], float]] = None

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"decision '{self.label}' has no value to choose from")
        if self.kind not in (CATEGORICAL, NUMERICAL):
            raise ValueError(f"decision '{self.label}': kind must be '{CATEGORICAL}' or '{NUMERICAL}', got {self.kind!r}")

    def index_of(self, value: Any) -> int:
        """Index of ``value`` in :attr:`values`; for a binned value, of the nearest bin."""
        for i, v in enumerate(self.values):
            if v is value or _equal(v, value):
                return i
        if self.cdf is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            q = self.cdf(float(value))
            return min(range(len(self.values)), key=lambda i: abs(self.cdf(float(self.values[i])) - q))
        raise ValueError(f"{value!r} is not a value of '{self.label}'; values: {list(self.values)[:12]}")


@dataclass(frozen=True)
class MultiChoice:
    """A subset of ``values``: exactly ``n_chosen`` of them, or any number when ``n_chosen`` is None."""

    label: str
    values: Tuple[Any, ...]
    n_chosen: Optional[int] = None

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"decision '{self.label}' has no candidate")
        if self.n_chosen is not None and not 0 <= self.n_chosen <= len(self.values):
            raise ValueError(f"decision '{self.label}': n_chosen={self.n_chosen} but {len(self.values)} candidates")


@dataclass(frozen=True)
class Condition:
    """A rule over whole samples: ``check(sample)`` returns None if it holds, else the reason."""

    label: str
    check: Callable[[Mapping[str, Any]], Optional[BaseException]]


Decision = Any  # Choice | MultiChoice | Condition


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as ``value in values`` sees it, except that a bool equals only a bool (``True`` and
    ``1`` are two options of ``[1, True]``, as JSON and NNI see them); False where the comparison
    fails (arrays...)."""
    if isinstance(a, (bool, np.bool_)) != isinstance(b, (bool, np.bool_)):
        return False
    try:
        if a == b:
            return True
    except Exception:  # noqa: BLE001 - values of any type: incomparable means different
        return False
    # No value equality (functools.partial, plain objects): NNI's simplified format deep-copies a
    # sample, so its value is a copy of ours. The same type with the same repr is the same value
    # (a default repr carries the object's address, so two distinct plain objects never match).
    return type(a) is type(b) and type(a).__eq__ is object.__eq__ and repr(a) == repr(b)


def unique_values(values: Sequence[Any]) -> List[Any]:
    """``values`` without repeats, in order, compared as :meth:`Choice.index_of` compares them."""
    out: List[Any] = []
    for v in values:
        if not any(_equal(v, u) for u in out):
            out.append(v)
    return out


def round_significant(value: float, digits: int = 6) -> float:
    """``value`` rounded to ``digits`` significant digits (bin values that read well in a portal)."""
    return float(f"{float(value):.{digits}g}")


def quantile_bins(ppf: Callable[[float], float], n: int, snap: Callable[[float], float] = float,
                  label: str = "?") -> List[float]:
    """``n`` equal-probability bins of a distribution, each as its median ``ppf((i + 0.5) / n)``.

    ``snap`` maps a raw value into the declared domain (NNI's ``round(x / q) * q`` then clip for
    the ``q*`` types); duplicates after snapping are dropped, so fewer than ``n`` values may
    come back on a coarse grid.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"discretize: need an int >= 1 of bins for '{label}', got {n!r}")
    return unique_values([snap(round_significant(ppf((i + 0.5) / n))) for i in range(n)])


def labels_of(decisions: Sequence[Decision]) -> List[str]:
    """The labels of the decisions that are nodes (conditions are not)."""
    return [d.label for d in decisions if not isinstance(d, Condition)]
