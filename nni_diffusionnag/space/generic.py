"""Any NNI model space as DiffusionNAG graphs: one node per decision, a chain in model order.

NAS-Bench-201 has a hand-made encoding (:mod:`.nasbench201`); every other space whose
``simplify()`` holds discrete decisions is encoded here, mechanically.

The space arrives as decisions (:mod:`.decisions`), so this module never imports NNI.

Encoding (``GenericSpace``, encoding version ``generic/1``)
----------------------------------------------------------
**Nodes.** One node per decision, in the order of ``model_space.simplify()``. NNI builds that
order while walking the model (``MutableModule.leaf_mutables``, ``nni/nas/nn/pytorch/base.py``
L231-236): at each module, first the mutables it registered itself with ``add_mutable``, wherever
in ``__init__`` that happened, then its children in registration order, depth first; a label seen
twice keeps its first place (``_dedup_labeled_mutables``, ``nni/mutable/mutable.py`` L112-137).
So a ``Repeat``'s depth precedes its blocks, and a ``ModelSpace`` that adds a constraint on
``depth`` moves ``depth`` to the front. For a given model class and arguments the order is
deterministic and follows the network (stem, stage 1, ...); NNI itself does not promise it
(``simplify`` docstring, ``mutable.py`` L287-291), which is one more reason it is in the
signature. There are no input/output nodes: they would carry no information (the OFA MobileNetV3
encoding of DiffusionNAG has none either).

**Node types.** The vocabulary is the disjoint union of every decision's values, named
``"label=value"`` (``repr`` of the value with memory addresses removed), so ``V`` is the total
number of choices and the legal mask lets each node take only its own decision's values. Every
node therefore has exactly one active type, as the strict decoding rule of DiffusionNAG
(docs/design.md, 'Features and validity') and :func:`~nni_diffusionnag.diffusion.decoding.repair_decode` expect.

- ``Categorical`` (``LayerChoice``, ``nni.choice``, ``Repeat`` depth): one node, one type per value.
- ``CategoricalMultiple`` (``InputChoice``) with a fixed ``n_chosen = k``: one node whose types are
  the ``C(n, k)`` subsets, in ``itertools.combinations`` order of the candidate indices (so
  ``n_chosen=1`` is a plain categorical). Any decoded graph is valid; nothing to repair. Used when
  ``C(n, k) <= max_combinations``.
- ``CategoricalMultiple`` with ``n_chosen=None`` (any subset): one binary node per candidate, with
  the types ``label[i]=off`` and ``label[i]=on``; every on/off pattern is valid.
- ``CategoricalMultiple`` with a fixed ``k`` and more than ``max_combinations`` subsets: one binary
  node per candidate as above, plus a cardinality rule that a per-node argmax cannot enforce.
  :meth:`GenericSpace.repair` fixes a graph with the wrong number of "on" nodes: with the raw
  features ``x`` it keeps the ``k`` candidates with the largest ``x[on] - x[off]`` margin (top-k
  by score); without them (:meth:`types_to_sample`, :meth:`key`) it keeps the first ``k`` "on"
  candidates and then fills up with the first "off" ones, in candidate order. :meth:`is_legal`
  checks the rule, so the training data of a prior always satisfies it.
- A binned continuous value (``kind='numerical'``: an NNI ``Numerical`` with ``discretize``, or a
  continuous legacy type) is a categorical over its bin values, and a value off the grid maps to
  the bin whose quantile is nearest (:meth:`~nni_diffusionnag.space.decisions.Choice.index_of`).
  The binning rule is :func:`~nni_diffusionnag.space.decisions.quantile_bins`; the NNI adapter
  (:mod:`nni_diffusionnag.integration.mutables`) refuses an NNI ``Numerical`` without
  ``discretize`` with :class:`~nni_diffusionnag.exceptions.UnsupportedSpaceError` naming it.
- ``MutableAnnotation``s (constraints) are not nodes. :meth:`GenericSpace.contains` checks a graph
  against them (or against ``model_space.contains`` when a model space is passed), and
  :meth:`random_valid_types` resamples what they reject.

**Values in a sample.** :meth:`types_to_sample` returns the very objects held by the mutables, so
``sample -> types -> sample`` is exact for every sample of ``model_space.random()``. A subset is
returned in candidate order, which is the order NNI's own ``random()`` produces; a hand-written
sample with the same subset in another order maps to the same graph. Keys of a sample that are
not decisions are ignored (NNI's ``NasBench101`` constraint writes the pruned cell into the sample
as ``cell/final`` while checking it, ``nni/nas/hub/pytorch/modules/nasbench101.py`` L482-489).

**Edges.** A chain ``i -> i+1`` in node order. The reachability mask of the score network is then
full attention, and the depth positional encoding numbers the nodes in model order. Nothing else
is read from the space: ``simplify()`` does not say which decision feeds which, and guessing it
from labels would be fragile.

**Signature.** Node types (labels and ordered values), node count, chain adjacency, labels and
``extra = {"encoding": "generic/1", "decisions": [[label, kind], ...]}``. A prior is refused for a
space where any label, value, value order, decision order or encoding differs. Constraints are not
in the signature: they do not change the encoding, and a prior stays usable when a budget changes
(its samples are validated anyway). Decisions that are inactive in a given architecture (the
blocks past a ``Repeat``'s depth, the parameters of an unchosen ``LayerChoice`` candidate) are
still nodes, because NNI samples them too; :meth:`key` does not merge architectures that differ
only there.
"""

from __future__ import annotations

import itertools
import logging
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..exceptions import DiffusionNAGError, UnsupportedSpaceError
from .base import GraphSpace
from .decisions import Choice, Condition, MultiChoice, _equal

__all__ = ["GenericSpace", "Decision", "ENCODING"]

_logger = logging.getLogger(__name__)

ENCODING = "generic/1"
Sample = Dict[str, Any]
Discretize = Union[None, int, Mapping[str, Union[int, Sequence[float]]]]

# Decision kinds
CATEGORICAL = "categorical"  # one node, one type per value
SUBSET = "subset"            # CategoricalMultiple with fixed k: one node, one type per k-subset
BINARY = "binary"            # CategoricalMultiple: one on/off node per candidate (any subset)
BINARY_K = "binary-k"        # as BINARY, exactly k on (repaired)
NUMERICAL = "numerical"      # Numerical binned into values (a categorical)


def _value_name(value: Any) -> str:
    """A stable text for a value: ``repr`` of plain Python (numpy scalars unwrapped), without the
    ``at 0x...`` addresses that ``repr`` of functions and objects carries."""
    if isinstance(value, np.generic):
        value = value.item()
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


@dataclass(frozen=True)
class Decision:
    """One labelled NNI decision and the nodes that encode it.

    ``values`` are the NNI values (categorical/numerical) or candidates (multiple); ``nodes`` the
    graph nodes; ``offsets[j]`` the first type index of node ``nodes[j]``; ``choices`` the values
    each node's types stand for (values, subsets as index tuples, or ``(False, True)``).
    """

    label: str
    kind: str
    values: Tuple[Any, ...]
    nodes: Tuple[int, ...]
    offsets: Tuple[int, ...]
    choices: Tuple[Tuple[Any, ...], ...]
    n_chosen: Optional[int] = None
    mutable: Any = None  # the Choice/MultiChoice it encodes

    @property
    def size(self) -> int:
        """Number of distinct values of the decision (subsets for multiple choices)."""
        if self.kind == BINARY:
            return 2 ** len(self.values)
        if self.kind == BINARY_K:
            return math.comb(len(self.values), self.n_chosen or 0)
        return len(self.choices[0])


class GenericSpace(GraphSpace):
    """A space's decisions as a chain graph with one node per decision.

    See the module docstring for the encoding.

    Parameters
    ----------
    decisions
        The decisions in model order (:mod:`nni_diffusionnag.space.decisions`): an NNI model
        space's through :func:`nni_diffusionnag.integration.mutables.generic_space`, a legacy
        search space's through :func:`nni_diffusionnag.space.legacy.space_for_search_space`.
    name
        Name used in file names and messages (not part of the signature's digest).
    max_combinations
        A fixed-``n_chosen`` multiple choice with at most this many subsets is one node over its
        subsets, else one binary node per candidate with top-k repair.
    model_space
        The model space the decisions came from, if any (kept for reference: :meth:`contains`
        asks NNI only when a model space is passed to it).
    """

    def __init__(self, decisions: Sequence[Any], *, name: str = "generic", max_combinations: int = 256,
                 model_space: Any = None) -> None:
        nodes_of: List[Decision] = []
        constraints: List[Condition] = []
        node_types: List[str] = []
        n_nodes = 0

        def add(label: str, kind: str, values: Sequence[Any], choices_per_node: Sequence[Sequence[Any]],
                names_per_node: Sequence[Sequence[str]], n_chosen: Optional[int], spec: Any) -> None:
            nonlocal n_nodes
            nodes, offsets = [], []
            for names in names_per_node:
                nodes.append(n_nodes)
                offsets.append(len(node_types))
                node_types.extend(names)
                n_nodes += 1
            nodes_of.append(Decision(label, kind, tuple(values), tuple(nodes), tuple(offsets),
                                     tuple(tuple(c) for c in choices_per_node), n_chosen, spec))

        seen = set()
        for spec in decisions:
            label = str(spec.label)  # NNI's labels are a str subclass (nni.mutable.utils.label): keep plain text
            if label in seen:
                raise UnsupportedSpaceError(f"the label '{label}' appears twice in the space '{name}'")
            seen.add(label)
            if isinstance(spec, Condition):
                constraints.append(spec)
            elif isinstance(spec, Choice):
                values = list(spec.values)
                add(label, spec.kind, values, [values], [[f"{label}={_value_name(v)}" for v in values]], None, spec)
            elif isinstance(spec, MultiChoice):
                cands = list(spec.values)
                k = spec.n_chosen
                if k is not None and math.comb(len(cands), k) <= max_combinations:
                    subsets = list(itertools.combinations(range(len(cands)), k))
                    names = [f"{label}={_value_name([cands[i] for i in s])}" for s in subsets]
                    add(label, SUBSET, cands, [subsets], [names], k, spec)
                else:
                    names = [[f"{label}[{_value_name(c)}]=off", f"{label}[{_value_name(c)}]=on"] for c in cands]
                    add(label, BINARY if k is None else BINARY_K, cands, [(False, True)] * len(cands), names, k, spec)
            else:
                raise TypeError(f"not a decision: {spec!r} (expected Choice, MultiChoice or Condition from "
                                "nni_diffusionnag.space.decisions)")
        if n_nodes == 0:
            raise UnsupportedSpaceError(f"the space '{name}' has no decision to encode (got {list(seen)})")

        legal = np.zeros((n_nodes, len(node_types)), dtype=bool)
        for d in nodes_of:
            for node, off, choices in zip(d.nodes, d.offsets, d.choices):
                legal[node, off:off + len(choices)] = True
        adjacency = np.eye(n_nodes, k=1, dtype=np.int64)
        extra = {"encoding": ENCODING, "decisions": [[d.label, d.kind] for d in nodes_of]}
        labels = [d.label for d in nodes_of]
        super().__init__(name, node_types, adjacency, legal, labels, extra)

        self.decisions: Tuple[Decision, ...] = tuple(nodes_of)
        self.constraints: Tuple[Condition, ...] = tuple(constraints)
        self.model_space = model_space
        self._by_label = {d.label: d for d in nodes_of}
        self._binary_k = [d for d in nodes_of if d.kind == BINARY_K]
        _logger.debug("%s: %d decisions -> %d nodes, %d node types, %d constraints", name, len(nodes_of), n_nodes,
                      len(node_types), len(constraints))

    # --- facts -------------------------------------------------------------------------------
    decision_chain = True  # the edges give the decisions' order, not a data flow

    def ordinal_coordinates(self) -> np.ndarray:
        """``[V]``: for a one-node decision over two or more numbers (``randint``, a ``q`` grid, a
        binned continuous value, ``nni.choice([16, 32, 64])``, a ``Repeat`` depth), each value's
        rank among them scaled to [0, 1]; NaN for every other type (names, layers, subsets, on/off).
        The rank, not the value: bins are quantiles of the declared distribution (so ranks are on
        its log scale where it is log-uniform) and a grid such as batch sizes is usually geometric."""
        out = np.full(self.num_types, np.nan)
        for d in self.decisions:
            values = d.choices[0]
            if len(d.nodes) != 1 or d.kind in (SUBSET, BINARY, BINARY_K) or len(values) < 2:
                continue
            if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                continue
            ranks = np.argsort(np.argsort(np.asarray(values, dtype=np.float64), kind="stable"), kind="stable")
            out[d.offsets[0]:d.offsets[0] + len(values)] = ranks / (len(values) - 1)
        return out

    @property
    def has_constraints(self) -> bool:
        """Whether the space has ``MutableAnnotation``s that a sample must satisfy."""
        return bool(self.constraints)

    @property
    def independent_nodes(self) -> bool:  # type: ignore[override]
        """No constraints and no fixed-size subset split over several nodes (its cardinality ties
        those nodes together): every combination of the nodes' choices is an architecture."""
        return not self.has_constraints and not any(d.kind == BINARY_K for d in self.decisions)

    def num_architectures(self) -> int:
        """Number of graphs before constraints (product of the decisions' sizes)."""
        return math.prod(d.size for d in self.decisions)

    def describe(self) -> List[Dict[str, Any]]:
        """One row per decision: label, kind, nodes, types (for logs and docs)."""
        return [{"label": d.label, "kind": d.kind, "nodes": len(d.nodes),
                 "types": sum(len(c) for c in d.choices), "values": [_value_name(v) for v in d.values]}
                for d in self.decisions]

    # --- codec -------------------------------------------------------------------------------
    def sample_to_types(self, sample: Mapping[str, Any]) -> np.ndarray:
        missing = [d.label for d in self.decisions if d.label not in sample
                   and not (d.kind in (SUBSET, BINARY, BINARY_K) and f"{d.label}/0" in sample)]
        if missing:
            raise ValueError(f"sample lacks the decisions {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                             f"of the space '{self.name}'")
        types = np.empty(self.num_nodes, dtype=np.int64)
        for d in self.decisions:
            if d.kind in (CATEGORICAL, NUMERICAL):
                types[d.nodes[0]] = d.offsets[0] + self._value_index(d, sample[d.label])
                continue
            chosen = self._chosen_indices(d, sample)
            if d.kind == SUBSET:
                if len(chosen) != d.n_chosen:
                    raise ValueError(f"'{d.label}' needs {d.n_chosen} chosen, got {self._raw(d, sample)!r}")
                types[d.nodes[0]] = d.offsets[0] + d.choices[0].index(tuple(sorted(chosen)))
            else:
                if d.kind == BINARY_K and len(chosen) != d.n_chosen:
                    raise ValueError(f"'{d.label}' needs {d.n_chosen} chosen, got {self._raw(d, sample)!r}")
                for i, (node, off) in enumerate(zip(d.nodes, d.offsets)):
                    types[node] = off + int(i in chosen)
        return types

    def types_to_sample(self, types: Sequence[int]) -> Sample:
        types = self._check_types(types)
        if self._binary_k:
            types = self.repair(types)
        sample: Sample = {}
        for d in self.decisions:
            if d.kind in (CATEGORICAL, NUMERICAL):
                sample[d.label] = d.values[types[d.nodes[0]] - d.offsets[0]]
            elif d.kind == SUBSET:
                sample[d.label] = [d.values[i] for i in d.choices[0][types[d.nodes[0]] - d.offsets[0]]]
            else:
                sample[d.label] = [d.values[i] for i, (n, off) in enumerate(zip(d.nodes, d.offsets))
                                   if types[n] - off == 1]
        return sample

    def key(self, types: Sequence[int]) -> Tuple[int, ...]:
        """Identity of the decoded sample: the types after the cardinality repair (if any)."""
        types = np.asarray(types, dtype=np.int64)
        if self._binary_k:
            types = self.repair(types)
        return tuple(int(t) for t in types)

    def is_legal(self, types: np.ndarray) -> np.ndarray:
        """Legal node types and, for fixed-``n_chosen`` binary groups, exactly ``k`` chosen."""
        types = np.atleast_2d(np.asarray(types, dtype=np.int64))
        if types.shape[1] != self.num_nodes:
            return np.zeros(len(types), dtype=bool)
        inside = (types >= 0) & (types < self.num_types)
        ok = inside.all(axis=1)
        ok[ok] = self.legal[np.arange(self.num_nodes)[None, :], types[ok]].all(axis=1)
        for d in self._binary_k:
            ok &= self._on(d, types).sum(axis=1) == d.n_chosen
        return ok

    def repair(self, types: np.ndarray, x: Any = None) -> np.ndarray:
        """Enforce ``n_chosen`` on binary groups (a copy; other nodes untouched).

        ``types`` ``[N]`` or ``[B, N]``; ``x`` optional raw features ``[B, N, V]`` (or ``[N, V]``,
        numpy or torch): the ``k`` candidates with the largest ``x[on] - x[off]`` are kept. Without
        ``x``: the first ``k`` "on" candidates, filled up with the first "off" ones.
        """
        arr = np.array(types, dtype=np.int64, copy=True)
        single = arr.ndim == 1
        arr = np.atleast_2d(arr)
        scores = None
        if x is not None:
            scores = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
            scores = scores.reshape(arr.shape[0], self.num_nodes, self.num_types)
        for d in self._binary_k:
            on = self._on(d, arr)  # [B, n]
            bad = on.sum(axis=1) != d.n_chosen
            if not bad.any():
                continue
            if scores is not None:
                nodes, offs = np.array(d.nodes), np.array(d.offsets)
                margin = scores[:, nodes, offs + 1] - scores[:, nodes, offs]  # [B, n]
                order = np.argsort(-margin, axis=1, kind="stable")
            else:  # "on" first, then "off", each in candidate order
                order = np.argsort(~on, axis=1, kind="stable")
            keep = np.zeros_like(on)
            np.put_along_axis(keep, order[:, :d.n_chosen], True, axis=1)
            for i, (node, off) in enumerate(zip(d.nodes, d.offsets)):
                arr[bad, node] = off + keep[bad, i]
        return arr[0] if single else arr

    # --- sampling ----------------------------------------------------------------------------
    def random_types(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` graphs, each decision drawn uniformly from its values (NNI's ``weights`` are
        ignored; a subset of ``n_chosen=None`` has each candidate on with probability 1/2)."""
        out = np.empty((n, self.num_nodes), dtype=np.int64)
        for d in self.decisions:
            if d.kind == BINARY_K:
                pick = np.argsort(rng.random((n, len(d.nodes))), axis=1)[:, :d.n_chosen]
                on = np.zeros((n, len(d.nodes)), dtype=np.int64)
                np.put_along_axis(on, pick, 1, axis=1)
                out[:, list(d.nodes)] = on + np.array(d.offsets)[None, :]
            else:
                for node, off, choices in zip(d.nodes, d.offsets, d.choices):
                    out[:, node] = off + rng.integers(0, len(choices), size=n)
        return out

    def enumerate_types(self, limit: int = 200_000) -> Optional[np.ndarray]:
        """Every graph of the space satisfying its constraints, or None if there are more than
        ``limit`` before constraints."""
        if math.prod(len(c) for d in self.decisions for c in d.choices) > limit:
            return None
        per_node = [np.arange(off, off + len(c)) for d in self.decisions for off, c in zip(d.offsets, d.choices)]
        grid = np.array(list(itertools.product(*per_node)), dtype=np.int64).reshape(-1, self.num_nodes)
        grid = grid[self.is_legal(grid)]
        return grid[self.valid_mask(grid)] if self.has_constraints else grid

    def contains(self, types: Sequence[int], model_space: Any = None) -> bool:
        """Whether the graph is a legal member of the space that satisfies its constraints.

        With ``model_space``, NNI decides (``model_space.contains(sample)``, a walk over the whole
        module tree: about 1-10 ms). Without, the constraints captured from ``simplify()`` are
        checked directly, which is the same test for NNI's default ``check_contains`` and ~30x
        faster; a model space that overrides ``check_contains`` should be passed.
        """
        if not self.is_legal(np.asarray(types))[0]:
            return False
        sample = self.types_to_sample(types)
        if model_space is not None:
            return bool(model_space.contains(sample))
        return all(c.check(sample) is None for c in self.constraints)

    def valid_mask(self, types: np.ndarray, model_space: Any = None) -> np.ndarray:
        """``[B, N]`` -> ``[B]`` bool, :meth:`contains` for each graph."""
        types = np.atleast_2d(types)
        if model_space is None and not self.has_constraints:
            return self.is_legal(types)
        return np.array([self.contains(t, model_space) for t in types], dtype=bool)

    def random_valid_types(self, n: int, rng: np.random.Generator, model_space: Any = None,
                           max_draws: int | None = None) -> np.ndarray:
        """``n`` random graphs (:meth:`random_types`) that pass :meth:`contains`, resampling the
        rejected ones; raises if fewer than ``n`` pass in ``max_draws`` (default ``50 n``) draws."""
        if model_space is None and not self.has_constraints:
            return self.random_types(n, rng)
        max_draws = max_draws or 50 * max(n, 1)
        kept: List[np.ndarray] = []
        got = drawn = 0
        while got < n and drawn < max_draws:
            batch = self.random_types(min(max(2 * (n - got), 16), max_draws - drawn), rng)
            drawn += len(batch)
            ok = batch[self.valid_mask(batch, model_space)]
            kept.append(ok)
            got += len(ok)
        if got < n:
            names = [getattr(c, "label", repr(c)) for c in self.constraints]
            raise DiffusionNAGError(
                f"only {got} of {drawn} random architectures of '{self.name}' satisfy its constraints "
                f"{names}; relax them or draw with a larger max_draws"
            )
        return np.concatenate(kept)[:n]

    # --- helpers -----------------------------------------------------------------------------
    def _check_types(self, types: Sequence[int]) -> np.ndarray:
        arr = np.asarray(types, dtype=np.int64)
        if arr.shape != (self.num_nodes,):
            raise ValueError(f"expected {self.num_nodes} node types for '{self.name}', got shape {arr.shape}")
        inside = (arr >= 0) & (arr < self.num_types)
        bad = np.nonzero(~inside)[0].tolist()
        if not bad:
            bad = np.nonzero(~self.legal[np.arange(self.num_nodes), arr])[0].tolist()
        if bad:
            i = bad[0]
            got = self.node_types[arr[i]] if inside[i] else int(arr[i])
            raise ValueError(f"not a graph of '{self.name}': node {i} ({self.node_label(i)}) has type {got!r}")
        return arr

    def node_label(self, node: int) -> str:
        """The NNI label a node encodes (``label[candidate]`` for binary nodes)."""
        for d in self.decisions:
            if node in d.nodes:
                if d.kind in (BINARY, BINARY_K):
                    return f"{d.label}[{_value_name(d.values[d.nodes.index(node)])}]"
                return d.label
        raise IndexError(node)

    def _on(self, d: Decision, types: np.ndarray) -> np.ndarray:
        return types[:, list(d.nodes)] - np.array(d.offsets)[None, :] == 1

    @staticmethod
    def _value_index(d: Decision, value: Any) -> int:
        if d.kind in (CATEGORICAL, NUMERICAL):
            return d.mutable.index_of(value)
        for i, v in enumerate(d.values):
            if v is value or _equal(v, value):
                return i
        raise ValueError(f"{value!r} is not a value of '{d.label}'; values: {[_value_name(v) for v in d.values]}")

    @staticmethod
    def _raw(d: Decision, sample: Mapping[str, Any]) -> Any:
        return sample.get(d.label, {k: v for k, v in sample.items() if k.startswith(d.label + "/")})

    def _chosen_indices(self, d: Decision, sample: Mapping[str, Any]) -> List[int]:
        if d.label in sample:
            chosen = []
            for value in sample[d.label]:
                idx = self._value_index(d, value)
                if idx in chosen:
                    raise ValueError(f"'{d.label}' chooses {value!r} twice: {sample[d.label]!r}")
                chosen.append(idx)
            return sorted(chosen)
        # NNI's "categorical format": label/0 ... label/n-1 booleans
        return [i for i in range(len(d.values)) if sample.get(f"{d.label}/{i}")]
