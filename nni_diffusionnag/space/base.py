"""Architecture graphs: the contract between a search space and the diffusion model.

DiffusionNAG (An et al., ICLR 2024, §3.1) generates an architecture as a DAG with operations on
its ``N`` nodes: node features ``x`` are one-hot over a vocabulary of ``V`` node types, and the
adjacency ``adj`` is fixed for the whole space, so only ``x`` is generated. A :class:`GraphSpace`
maps an NNI sample (``{label: value}``) to the node types of that graph and back, and says which
node types are legal at each node. Nothing here imports NNI.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from ..exceptions import SpaceMismatchError

__all__ = ["GraphSpace", "SpaceSignature", "reachability"]

Sample = Dict[str, Any]


def reachability(adj: np.ndarray) -> np.ndarray:
    """Attention mask of the score network: ``mask[i, j]`` is True if ``j`` is an ancestor or a
    descendant of ``i`` in the DAG, or ``j == i`` (Floyd–Warshall transitive closure).

    Shapes: ``adj: [N, N]`` (``adj[i, j] = 1`` for an edge ``i -> j``) -> ``[N, N]`` bool.
    """
    reach = np.asarray(adj, dtype=bool).copy()
    n = reach.shape[0]
    for k in range(n):
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    return reach | reach.T | np.eye(n, dtype=bool)


@dataclass(frozen=True)
class SpaceSignature:
    """What a checkpoint must agree on with the space it is used for.

    Two spaces with the same signature encode architectures identically; ``digest`` is a sha256
    over canonical JSON (sorted keys), so it does not depend on dict order.
    """

    name: str
    node_types: Tuple[str, ...]
    num_nodes: int
    adjacency: Tuple[Tuple[int, ...], ...]
    labels: Tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "node_types": list(self.node_types),
            "num_nodes": self.num_nodes,
            "adjacency": [list(r) for r in self.adjacency],
            "labels": list(self.labels),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SpaceSignature":
        return cls(
            name=d["name"],
            node_types=tuple(d["node_types"]),
            num_nodes=int(d["num_nodes"]),
            adjacency=tuple(tuple(int(v) for v in r) for r in d["adjacency"]),
            labels=tuple(d.get("labels", ())),
            extra=dict(d.get("extra", {})),
        )

    @property
    def digest(self) -> str:
        body = {k: v for k, v in self.to_dict().items() if k != "name"}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def check_matches(self, other: "SpaceSignature", what: str = "checkpoint") -> None:
        """Raise :class:`SpaceMismatchError` naming both spaces if ``other`` differs from ``self``.

        ``self`` is the space in use, ``other`` the one the ``what`` was made for.
        """
        if self.digest == other.digest:
            return
        diffs = []
        if self.node_types != other.node_types:
            diffs.append(f"node types {list(other.node_types)} vs {list(self.node_types)}")
        if self.num_nodes != other.num_nodes:
            diffs.append(f"{other.num_nodes} nodes vs {self.num_nodes}")
        if self.adjacency != other.adjacency:
            diffs.append("a different adjacency")
        if self.labels != other.labels:
            gone = sorted(set(other.labels) - set(self.labels))
            new = sorted(set(self.labels) - set(other.labels))
            diffs.append(f"labels only in the {what}: {gone[:5]}, only in this space: {new[:5]}")
        if self.extra != other.extra:
            diffs.append("different choices or encoding options")
        raise SpaceMismatchError(
            f"This {what} was made for the search space '{other.name}' (signature {other.digest}), "
            f"but it is being used with '{self.name}' (signature {self.digest}): "
            + "; ".join(diffs)
            + f". Use a {what} trained for '{self.name}' (e.g. `nni-diffusionnag train-prior`)."
        )


class GraphSpace:
    """A search space seen as graphs with typed nodes and a fixed adjacency.

    Subclasses fill in :meth:`sample_to_types` and :meth:`types_to_sample`.

    Parameters
    ----------
    name
        Human-readable name, used in error messages and file names.
    node_types
        The vocabulary, ``V`` names.
    adjacency
        ``[N, N]`` 0/1 matrix, ``adjacency[i, j] = 1`` for an edge ``i -> j``.
    legal
        ``[N, V]`` bool: which node types may appear at each node.
    labels
        The NNI labels that a sample of this space has.
    """

    def __init__(
        self,
        name: str,
        node_types: Sequence[str],
        adjacency: np.ndarray,
        legal: np.ndarray,
        labels: Sequence[str],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.node_types = tuple(node_types)
        self.adjacency = np.asarray(adjacency, dtype=np.int64)
        self.legal = np.asarray(legal, dtype=bool)
        self.labels = tuple(labels)
        self._extra = dict(extra or {})
        n, v = self.legal.shape
        if self.adjacency.shape != (n, n) or v != len(self.node_types):
            raise ValueError(
                f"inconsistent space '{name}': adjacency {self.adjacency.shape}, legal {self.legal.shape}, "
                f"{len(self.node_types)} node types"
            )

    @property
    def num_nodes(self) -> int:
        return self.adjacency.shape[0]

    @property
    def num_types(self) -> int:
        return len(self.node_types)

    @property
    def signature_labels(self) -> Tuple[str, ...]:
        """Labels recorded in the signature (a space whose labels are only names may canonicalise them)."""
        return self.labels

    def attention_mask(self) -> np.ndarray:
        """``[N, N]`` bool reachability mask (see :func:`reachability`)."""
        return reachability(self.adjacency)

    def signature(self) -> SpaceSignature:
        return SpaceSignature(
            name=self.name,
            node_types=self.node_types,
            num_nodes=self.num_nodes,
            adjacency=tuple(tuple(int(v) for v in r) for r in self.adjacency),
            labels=self.signature_labels,
            extra=self._extra,
        )

    # --- codec -------------------------------------------------------------------------------
    def sample_to_types(self, sample: Mapping[str, Any]) -> np.ndarray:
        """NNI sample -> ``[N]`` node-type indices."""
        raise NotImplementedError

    def types_to_sample(self, types: Sequence[int]) -> Sample:
        """``[N]`` node-type indices -> NNI sample. Raises ``ValueError`` on an illegal graph."""
        raise NotImplementedError

    def is_legal(self, types: np.ndarray) -> np.ndarray:
        """``[B, N]`` type indices -> ``[B]`` bool: every node has a type legal at that node."""
        types = np.atleast_2d(types)
        return self.legal[np.arange(self.num_nodes)[None, :], types].all(axis=1)

    def repair(self, types: np.ndarray, x: Any = None) -> np.ndarray:
        """Make argmax-decoded types ``[N]`` or ``[B, N]`` obey rules between nodes (a copy).

        ``x`` are the raw features the types were decoded from (a space may use them to decide).
        The default has no such rules and returns the types unchanged.
        """
        return np.array(types, dtype=np.int64, copy=True)

    #: Whether the graph is a chain of decisions whose edges only give their order (the generic
    #: encoding), not a data flow: the surrogate is then a GP over decisions (nn/factory.py).
    decision_chain: bool = False

    #: Whether every combination of legal node types is an architecture of the space, drawn with
    #: equal probability: the space is then the product of its nodes' choices and its exact prior
    #: is uniform per node (prior/cache.py). The generic encoding works it out from its decisions;
    #: a hand-made encoding declares it.
    independent_nodes: bool = False

    def ordinal_coordinates(self) -> np.ndarray:
        """``[V]``: each node type's position in [0, 1] among its decision's values where the values
        are ordered numbers, NaN where they are not (the default: no type is ordered)."""
        return np.full(self.num_types, np.nan)

    def reference_freq(self) -> np.ndarray:
        """``[N, V]`` per-node type frequencies of random architectures (default: uniform over the
        legal types), the reference of the prior's quality report."""
        return self.legal / self.legal.sum(1, keepdims=True)

    def enumerate_types(self) -> np.ndarray | None:
        """All graphs of the space as ``[M, N]`` type indices, or None if the space is too big."""
        return None

    def random_types(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` graphs drawn uniformly from the space, as ``[n, N]`` type indices."""
        raise NotImplementedError

    def key(self, types: Sequence[int]) -> Tuple[int, ...]:
        """A hashable identity for de-duplication (two graphs that decode to the same sample)."""
        return tuple(int(t) for t in types)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_nodes={self.num_nodes}, num_types={self.num_types})"
