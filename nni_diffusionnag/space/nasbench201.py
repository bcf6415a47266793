"""NAS-Bench-201 cells as DiffusionNAG graphs.

A cell has 4 nodes and 6 edges ``i -> j``, each carrying one of 5 operations. DiffusionNAG puts
the operations on graph nodes (paper §3.1; docs/design.md, 'Encoding rules'): 8 nodes = input,
the 6 edge operations in the NB201 string order (e01, e02, e12, e03, e13, e23), output. The op on
edge ``i -> j`` feeds every op on an edge leaving ``j``; the input feeds the ops leaving cell
node 0; the ops entering cell node 3 feed the output.

Three views of one cell, converted exactly both ways:

- NNI sample of ``nni.nas.hub.pytorch.NasBench201``: ``{'cell/0_1': 'conv_3x3', ...}``
- NB201 string: ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``
- node types ``[8]`` over the vocabulary :data:`NODE_TYPES`
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .base import GraphSpace

__all__ = ["NasBench201Space", "EDGES", "NB201_OPS", "NNI_OPS", "NODE_TYPES"]

# Edges (from, to) in the order of the NB201 string, which is also the order of NNI's labels.
EDGES: Tuple[Tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NB201_OPS: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NNI_OPS: Tuple[str, ...] = ("none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3")
NODE_TYPES: Tuple[str, ...] = ("input", "output") + NB201_OPS
_OP_OFFSET = 2  # node type index of NB201_OPS[0]


def _adjacency() -> np.ndarray:
    """The 8x8 adjacency built from the cell semantics (not copied from any matrix)."""
    n = len(EDGES) + 2
    adj = np.zeros((n, n), dtype=np.int64)
    out = n - 1
    for a, (i, j) in enumerate(EDGES, start=1):
        if i == 0:
            adj[0, a] = 1  # the cell input feeds ops leaving cell node 0
        if j == 3:
            adj[a, out] = 1  # ops entering the last cell node feed the output
        for b, (k, _) in enumerate(EDGES, start=1):
            if k == j:
                adj[a, b] = 1  # op on i->j feeds ops on edges leaving j
    return adj


class NasBench201Space(GraphSpace):
    """NNI's ``NasBench201`` space as 8-node DiffusionNAG graphs.

    Parameters
    ----------
    label_prefix
        Prefix of the NNI labels; the hub model names them ``cell/0_1`` ... ``cell/2_3``.
    """

    # each of the six edges takes any of the five operations: all 5^6 = 15,625 cells are the space
    independent_nodes = True

    def __init__(self, label_prefix: str = "cell/") -> None:
        labels = [f"{label_prefix}{i}_{j}" for i, j in EDGES]
        legal = np.zeros((len(EDGES) + 2, len(NODE_TYPES)), dtype=bool)
        legal[0, 0] = True
        legal[-1, 1] = True
        legal[1:-1, _OP_OFFSET:] = True
        super().__init__("nasbench201", NODE_TYPES, _adjacency(), legal, labels)
        self._label_index = {lab: a for a, lab in enumerate(labels)}

    @property
    def signature_labels(self) -> Tuple[str, ...]:
        # The label prefix is a naming detail of the model (label_scope); a prior is the same.
        return tuple(f"cell/{i}_{j}" for i, j in EDGES)

    @classmethod
    def match(cls, mutables: Mapping[str, Any]) -> "NasBench201Space | None":
        """The space for ``model_space.simplify()`` output if it is NB201's (any label prefix)."""
        keys = list(mutables)
        if len(keys) != len(EDGES) or not keys[0].endswith("0_1"):
            return None
        prefix = keys[0][: -len("0_1")]
        space = cls(prefix)
        if tuple(keys) != space.labels:
            return None
        for mutable in mutables.values():
            if tuple(getattr(mutable, "values", ())) != NNI_OPS:
                return None
        return space

    # --- NNI sample <-> types ----------------------------------------------------------------
    def sample_to_types(self, sample: Mapping[str, Any]) -> np.ndarray:
        missing = [lab for lab in self.labels if lab not in sample]
        if missing:
            raise ValueError(f"NB201 sample lacks labels {missing}; expected {list(self.labels)}")
        ops = [self._op_index(sample[lab], lab) for lab in self.labels]
        return np.array([0] + [_OP_OFFSET + o for o in ops] + [1], dtype=np.int64)

    def types_to_sample(self, types: Sequence[int]) -> Dict[str, str]:
        return {lab: NNI_OPS[o] for lab, o in zip(self.labels, self._ops_of(types))}

    # --- NB201 string <-> types -------------------------------------------------------------
    def types_to_arch(self, types: Sequence[int]) -> str:
        """``[8]`` node types -> NB201 string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``."""
        ops = self._ops_of(types)
        groups: List[str] = []
        for j in (1, 2, 3):
            cells = [f"{NB201_OPS[ops[a]]}~{i}" for a, (i, jj) in enumerate(EDGES) if jj == j]
            groups.append("|" + "|".join(cells) + "|")
        return "+".join(groups)

    def arch_to_types(self, arch: str) -> np.ndarray:
        ops: Dict[Tuple[int, int], int] = {}
        try:
            for j, group in enumerate(arch.split("+"), start=1):
                for token in filter(None, group.split("|")):
                    name, i = token.split("~")
                    ops[(int(i), j)] = NB201_OPS.index(name)
            codes = [ops[e] for e in EDGES]
        except (ValueError, KeyError) as err:
            raise ValueError(f"not a NAS-Bench-201 cell string: {arch!r} ({err})") from None
        return np.array([0] + [_OP_OFFSET + o for o in codes] + [1], dtype=np.int64)

    def sample_to_arch(self, sample: Mapping[str, Any]) -> str:
        return self.types_to_arch(self.sample_to_types(sample))

    def arch_to_sample(self, arch: str) -> Dict[str, str]:
        return self.types_to_sample(self.arch_to_types(arch))

    # --- enumeration --------------------------------------------------------------------------
    def enumerate_types(self) -> np.ndarray:
        ops = np.array(list(itertools.product(range(len(NB201_OPS)), repeat=len(EDGES))), dtype=np.int64)
        n = len(ops)
        return np.concatenate([np.zeros((n, 1), np.int64), ops + _OP_OFFSET, np.ones((n, 1), np.int64)], axis=1)

    def random_types(self, n: int, rng: np.random.Generator) -> np.ndarray:
        ops = rng.integers(0, len(NB201_OPS), size=(n, len(EDGES)))
        return np.concatenate([np.zeros((n, 1), np.int64), ops + _OP_OFFSET, np.ones((n, 1), np.int64)], axis=1)

    # --- helpers -----------------------------------------------------------------------------
    def _ops_of(self, types: Sequence[int]) -> List[int]:
        types = [int(t) for t in types]
        if len(types) != self.num_nodes or types[0] != 0 or types[-1] != 1 or not all(
            _OP_OFFSET <= t < len(NODE_TYPES) for t in types[1:-1]
        ):
            names = [NODE_TYPES[t] if 0 <= t < len(NODE_TYPES) else t for t in types]
            raise ValueError(f"not a NAS-Bench-201 graph (input, 6 ops, output): {names}")
        return [t - _OP_OFFSET for t in types[1:-1]]

    @staticmethod
    def _op_index(value: Any, label: str) -> int:
        if isinstance(value, str):
            for names in (NNI_OPS, NB201_OPS):
                if value in names:
                    return names.index(value)
        raise ValueError(f"unknown NB201 operation {value!r} for '{label}'; expected one of {list(NNI_OPS)}")
