"""MobileNetV3 in the Once-for-All (OFA) layout as 20-node DiffusionNAG graphs.

DiffusionNAG's MobileNetV3 space (docs/design.md, 'Encoding rules') is OFA's: 5 stages of 2..4
inverted-residual layers, each layer with a depthwise kernel size in {3, 5, 7} and an expand ratio
in {3, 4, 6}. The graph has one node per layer slot (5 stages x 4 slots = 20 nodes) in a chain. The
paper marks a skipped slot by an all-zero row; here it is an explicit tenth node type ``skip``, so
that the repaired (argmax) decoding and the validity rule are the same code as for every other
space. The two are the same information: the centred all-zero row and the ``skip`` column are each
the one pattern that no operation uses.

Rules (checked by :meth:`MobileNetV3OFASpace.is_legal`): slots 1-2 of a stage are never
``skip``; slot 4 is ``skip`` whenever slot 3 is (a stage's depth is its number of non-skip
slots, 2..4). :meth:`MobileNetV3OFASpace.repair` makes any argmax decoding obey the second rule by
skipping slot 4 when slot 3 is skipped (the depth is decided by slot 3 first).

The NNI model space is NNI's own ``MobileNetV3Space`` built with OFA's arguments
(:func:`ofa_mobilenetv3`): fixed widths 16-16-24-40-80-112-160-960-1280, expand ratios
(3, 4, 6), kernel sizes (3, 5, 7), depths 2..4, SE in stages 2, 4 and 5 (OFA's ``use_se``),
ReLU in the first stages and h-swish later. That space also has two decisions the paper's
encoding has no node for, ``stem_ks`` (3 or 5) and ``s0_i0_ks`` (3, 5 or 7): OFA fixes both at 3,
and so does this encoding (a sample with other values is not in the encoded subspace and is
refused with a clear error). Any ``MobileNetV3Space`` whose decisions are exactly these (whatever
its widths, SE or activations) gets this encoding from :func:`~nni_diffusionnag.integration.mutables.space_for_model`;
NNI's default ``MobileNetV3Space()`` (TuNAS' space with width multipliers, expand ratios 1..6 and
optional SE: 67 decisions) does not fit it and gets the generic decision graph instead.
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np

from .base import GraphSpace

__all__ = ["MobileNetV3OFASpace", "ofa_mobilenetv3", "OFA_KWARGS", "KERNELS", "EXPANDS", "OPS", "NODE_TYPES",
           "NUM_STAGES", "SLOTS"]

KERNELS: Tuple[int, ...] = (3, 5, 7)
EXPANDS: Tuple[int, ...] = (3, 4, 6)
OPS: Tuple[Tuple[int, int], ...] = tuple(itertools.product(KERNELS, EXPANDS))  # kernel-major, as the paper
NODE_TYPES: Tuple[str, ...] = tuple(f"k{k}_e{e}" for k, e in OPS) + ("skip",)
SKIP = len(OPS)
NUM_STAGES = 5
SLOTS = 4
MIN_DEPTH = 2

# Arguments of NNI's MobileNetV3Space that give OFA's MobileNetV3 (ofa/imagenet_classification/
# elastic_nn/networks/ofa_mbv3.py: widths 16, 24, 40, 80, 112, 160, 960, 1280; SE in the 40, 112
# and 160 stages; ReLU up to the 40 stage). The stride/activation tuples cover stem, stage 0,
# stages 1-5 and the two head convolutions.
OFA_KWARGS: Dict[str, Any] = dict(
    base_widths=(16, 16, 24, 40, 80, 112, 160, 960, 1280),
    width_multipliers=1.0,
    expand_ratios=(3.0, 4.0, 6.0),
    squeeze_excite=("none", "none", "force", "none", "force", "force"),
    depth_range=(MIN_DEPTH, SLOTS),
    stride=(2, 1, 2, 2, 2, 1, 2, 1, 1),
    activation=("hswish", "relu", "relu", "relu", "hswish", "hswish", "hswish", "hswish", "hswish"),
)
FIXED: Dict[str, int] = {"stem_ks": 3, "s0_i0_ks": 3}  # OFA's 3x3 stem and first block


def ofa_mobilenetv3(num_labels: int = 1000, **overrides: Any) -> Any:
    """NNI's ``MobileNetV3Space`` with OFA's arguments (:data:`OFA_KWARGS`), about 10^19 networks.

    ``overrides`` replace any argument (e.g. ``dropout_rate``); the decisions must stay OFA's for
    the 20-node encoding to apply.
    """
    from nni.nas.hub.pytorch import MobileNetV3Space

    return MobileNetV3Space(num_labels=num_labels, **{**OFA_KWARGS, **overrides})


def _labels() -> Tuple[str, ...]:
    labels = list(FIXED)
    for s in range(1, NUM_STAGES + 1):
        labels.append(f"s{s}_depth")
        for j in range(SLOTS):
            labels += [f"s{s}_i{j}_exp", f"s{s}_i{j}_ks"]
    return tuple(labels)


class MobileNetV3OFASpace(GraphSpace):
    """OFA's MobileNetV3 space as 20-node chain graphs over 9 operations + ``skip``."""

    def __init__(self) -> None:
        n = NUM_STAGES * SLOTS
        adj = np.zeros((n, n), dtype=np.int64)
        adj[np.arange(n - 1), np.arange(1, n)] = 1  # a chain: each slot feeds the next
        legal = np.ones((n, len(NODE_TYPES)), dtype=bool)
        legal[self.slot_nodes(0), SKIP] = False
        legal[self.slot_nodes(1), SKIP] = False
        super().__init__("mobilenetv3-ofa", NODE_TYPES, adj, legal, _labels())

    @staticmethod
    def slot_nodes(j: int) -> np.ndarray:
        """Node indices of slot ``j`` (0-based) in every stage."""
        return np.arange(NUM_STAGES) * SLOTS + j

    @classmethod
    def match(cls, mutables: Mapping[str, Any]) -> "MobileNetV3OFASpace | None":
        """This space if ``model_space.simplify()`` has exactly OFA's decisions, else None."""
        expected = {"stem_ks": (3, 5), "s0_i0_ks": KERNELS}
        for s in range(1, NUM_STAGES + 1):
            expected[f"s{s}_depth"] = tuple(range(MIN_DEPTH, SLOTS + 1))
            for j in range(SLOTS):
                expected[f"s{s}_i{j}_exp"] = EXPANDS
                expected[f"s{s}_i{j}_ks"] = KERNELS
        if set(mutables) != set(expected):
            return None
        for label, values in expected.items():
            got = tuple(getattr(mutables[label], "values", ()))
            if len(got) != len(values) or any(float(a) != float(b) for a, b in zip(got, values)):
                return None
        return cls()

    # --- rules --------------------------------------------------------------------------------
    def is_legal(self, types: np.ndarray) -> np.ndarray:
        types = np.atleast_2d(np.asarray(types, dtype=np.int64))
        if types.shape[1] != self.num_nodes:
            return np.zeros(len(types), dtype=bool)
        ok = ((types >= 0) & (types < self.num_types)).all(axis=1)
        ok[ok] = self.legal[np.arange(self.num_nodes)[None, :], types[ok]].all(axis=1)
        third, fourth = types[:, self.slot_nodes(2)], types[:, self.slot_nodes(3)]
        return ok & ~((third == SKIP) & (fourth != SKIP)).any(axis=1)

    def repair(self, types: np.ndarray, x: Any = None) -> np.ndarray:
        """Skip slot 4 of every stage whose slot 3 is skipped (a copy; ``[N]`` or ``[B, N]``)."""
        arr = np.array(types, dtype=np.int64, copy=True)
        flat = np.atleast_2d(arr)
        third, fourth = self.slot_nodes(2), self.slot_nodes(3)
        flat[:, fourth] = np.where(flat[:, third] == SKIP, SKIP, flat[:, fourth])
        return flat[0] if arr.ndim == 1 else flat

    def key(self, types: Sequence[int]) -> Tuple[int, ...]:
        return tuple(int(t) for t in self.repair(np.asarray(types, dtype=np.int64)))

    def depths(self, types: np.ndarray) -> np.ndarray:
        """``[B, N]`` (or ``[N]``) -> ``[B, 5]`` (or ``[5]``) stage depths after :meth:`repair`."""
        arr = np.asarray(self.repair(types))
        return (arr.reshape(*arr.shape[:-1], NUM_STAGES, SLOTS) != SKIP).sum(-1)

    def num_architectures(self) -> int:
        """Distinct networks: per stage 9^2 + 9^3 + 9^4, to the 5th power (about 2.2e19)."""
        per_stage = sum(len(OPS) ** d for d in range(MIN_DEPTH, SLOTS + 1))
        return per_stage ** NUM_STAGES

    # --- NNI sample <-> types -------------------------------------------------------------------
    def sample_to_types(self, sample: Mapping[str, Any]) -> np.ndarray:
        missing = [lab for lab in self.labels if lab not in sample]
        if missing:
            raise ValueError(f"sample lacks the OFA MobileNetV3 decisions {missing[:6]}; expected {len(self.labels)} "
                             f"labels such as 's1_depth', 's1_i0_ks', 's1_i0_exp'")
        for label, value in FIXED.items():
            if int(sample[label]) != value:
                raise ValueError(f"'{label}' = {sample[label]!r} is outside the 20-node OFA encoding, which fixes it "
                                 f"at {value} (OFA's 3x3 stem and first block)")
        types = np.full(self.num_nodes, SKIP, dtype=np.int64)
        for s in range(NUM_STAGES):
            depth = int(sample[f"s{s + 1}_depth"])
            if not MIN_DEPTH <= depth <= SLOTS:
                raise ValueError(f"'s{s + 1}_depth' = {depth} is outside {MIN_DEPTH}..{SLOTS}")
            for j in range(depth):
                k, e = int(sample[f"s{s + 1}_i{j}_ks"]), int(round(float(sample[f"s{s + 1}_i{j}_exp"])))
                if (k, e) not in OPS:
                    raise ValueError(f"stage {s + 1} layer {j}: kernel {k} / expand {e} is not an OFA operation "
                                     f"(kernels {KERNELS}, expand ratios {EXPANDS})")
                types[s * SLOTS + j] = OPS.index((k, e))
        return types

    def types_to_sample(self, types: Sequence[int]) -> Dict[str, Any]:
        arr = np.asarray(types, dtype=np.int64)
        if arr.shape != (self.num_nodes,) or not self.legal[np.arange(self.num_nodes), arr.clip(0, SKIP)].all() \
                or ((arr < 0) | (arr > SKIP)).any():
            raise ValueError(f"not an OFA MobileNetV3 graph (20 nodes; slots 1-2 of each stage must be an "
                             f"operation): {arr.tolist()}")
        arr = self.repair(arr)
        sample: Dict[str, Any] = dict(FIXED)
        for s in range(NUM_STAGES):
            row = arr[s * SLOTS:(s + 1) * SLOTS]
            sample[f"s{s + 1}_depth"] = int((row != SKIP).sum())
            for j, t in enumerate(row):
                # An inactive slot still needs values in an NNI sample; they do not change the network.
                k, e = OPS[t] if t != SKIP else OPS[0]
                sample[f"s{s + 1}_i{j}_exp"] = float(e)
                sample[f"s{s + 1}_i{j}_ks"] = int(k)
        return sample

    def random_types(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """As NNI's ``model_space.random()``: each stage depth uniform over 2..4, each active
        slot's kernel and expand ratio uniform."""
        ops = rng.integers(0, len(OPS), size=(n, NUM_STAGES, SLOTS))
        depth = rng.integers(MIN_DEPTH, SLOTS + 1, size=(n, NUM_STAGES, 1))
        ops[np.arange(SLOTS)[None, None, :] >= depth] = SKIP
        return ops.reshape(n, self.num_nodes)

    def reference_freq(self) -> np.ndarray:
        """``[N, V]`` per-node type frequencies under :meth:`random_types` (for quality reports)."""
        freq = np.zeros((self.num_nodes, self.num_types))
        active = {0: 1.0, 1: 1.0, 2: 2 / 3, 3: 1 / 3}  # P(depth > j) with depth uniform on 2..4
        for j, p in active.items():
            nodes = self.slot_nodes(j)
            freq[nodes, :SKIP] = p / len(OPS)
            freq[nodes, SKIP] = 1 - p
        return freq
