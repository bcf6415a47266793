"""Exact parameter count and FLOPs of NAS-Bench-201 networks, as functions of the node types.

The network is the one built by ``nni.nas.hub.pytorch.NasBench201()`` (identical in structure to
NB201's ``TinyNetwork`` / ``InferCell``)::

    stem:   Conv2d(3, C, 3, pad 1, bias=False) + BN(C)
    stage 1: N cells with C channels at R x R
    reduce: ResNetBasicblock(C -> 2C, stride 2)
    stage 2: N cells with 2C channels at R/2 x R/2
    reduce: ResNetBasicblock(2C -> 4C, stride 2)
    stage 3: N cells with 4C channels at R/4 x R/4
    head:   BN(4C) + ReLU + global average pool + Linear(4C, num_labels)

with ``C = 16, N = 5, R = 32, num_labels = 10`` by default. ``ResNetBasicblock(a -> b)`` is
``ReLU-Conv3x3(a, b, stride 2)-BN(b)``, ``ReLU-Conv3x3(b, b)-BN(b)`` and a residual
``AvgPool2d(2, 2)`` + ``Conv2d(a, b, 1, bias=False)`` (no BN). Every cell has ``C_in == C_out``
and stride 1, and all cells share one choice per edge (the NNI labels ``cell/i_j``), so the same
op sits on edge ``i -> j`` of all ``3N`` cells. Cell ops:

- ``none``: ``Zero`` (``x * 0``), 0 params;
- ``skip_connect``: ``nn.Identity``, 0 params;
- ``conv_1x1``: ReLU + Conv2d(C, C, 1, bias=False) + BN(C), ``C^2 + 2C`` params per cell;
- ``conv_3x3``: ReLU + Conv2d(C, C, 3, pad 1, bias=False) + BN(C), ``9C^2 + 2C`` params per cell;
- ``avg_pool_3x3``: AvgPool2d(3, 1, pad 1, count_include_pad=False), 0 params (the hub's
  ``Pooling`` adds a ReLU-1x1conv-BN only when ``C_in != C_out``, never the case in a cell).

Hence every cost below is affine in the one-hot node types: ``cost = const + sum_n coef[n, t_n]``.

Conventions (the ones NAS-Bench-201 itself uses, so values match the benchmark's ``params`` and
``flops`` fields once divided by 1e6):

- **params**: the number of scalars in ``model.parameters()`` of the frozen model, i.e. conv and
  linear weights and biases *and* the BatchNorm affine weight/bias (running statistics are
  buffers and are not counted). A plain count.
- **flops**: multiply-accumulates of ``nn.Conv2d`` and ``nn.Linear`` layers for ONE input image
  of ``3 x R x R``, as counted by NB201's ``xautodl.utils.flop_benchmark``: a convolution counts
  ``k_h * k_w * C_in / groups * C_out * H_out * W_out`` (plus ``C_out * H_out * W_out`` if it has
  a bias; none here does), a linear layer ``in * out + out`` (its bias). BatchNorm, ReLU,
  pooling (NB201 hooks pooling but leaves it out of the sum), the zero op and the additions of
  the cell/residual sums are **not** counted. A plain count (MACs, called "FLOPs" as in NB201).

Defaults (CIFAR-10): params 73,306 (all ``none``) .. 1,531,546 (all ``conv_3x3``); flops
7,783,050 .. 220,119,690, i.e. NB201's 0.073 .. 1.53 MB and 7.78 .. 220.12 MFLOPs.

Node layout (see :mod:`nni_diffusionnag.space.nasbench201`): 8 nodes = input, the 6 edges
``e01, e02, e12, e03, e13, e23``, output; node types ``input, output, none, skip_connect,
nor_conv_1x1, nor_conv_3x3, avg_pool_3x3``. Only numpy and torch are used here (no NNI).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping, Tuple, Union

import numpy as np
import torch

from ..space.nasbench201 import EDGES, NODE_TYPES, NasBench201Space
from .additive import KINDS, check_kind, expected_additive_cost, unit_scale

if TYPE_CHECKING:  # imported lazily at run time: the generator imports this package
    from ..diffusion.guidance import GuidanceTerm
    from ..search.generator import Constraint

__all__ = ["budget_constraint", "cost_target", 
    "NB201Macro",
    "KINDS",
    "cost_table",
    "count",
    "count_sample",
    "expected_cost",
    "legal_mask",
]

_NUM_NODES = len(EDGES) + 2
_T = {name: i for i, name in enumerate(NODE_TYPES)}
_SPACE = NasBench201Space()


@dataclass(frozen=True)
class NB201Macro:
    """Macro skeleton of the NB201 network (the arguments of NNI's ``NasBench201`` hub model plus
    the input resolution).

    ``resolution`` must be divisible by 4 (two stride-2 reductions whose strided conv and
    ``AvgPool2d(2)`` residual must agree in size). The NB201 datasets: ``cifar10`` (10 labels, 32),
    ``cifar100`` (100, 32), ``ImageNet16-120`` (120, 16); see :meth:`for_dataset`.
    """

    stem_channels: int = 16
    num_cells: int = 5
    num_labels: int = 10
    resolution: int = 32

    def __post_init__(self) -> None:
        if self.stem_channels < 1 or self.num_labels < 1 or self.num_cells < 0:
            raise ValueError(f"invalid NB201 macro skeleton {self}")
        if self.resolution < 4 or self.resolution % 4:
            raise ValueError(f"NB201 input resolution must be a positive multiple of 4, got {self.resolution}")

    @classmethod
    def for_dataset(cls, name: str) -> "NB201Macro":
        key = name.lower().replace("-", "").replace("_", "")
        table = {"cifar10": (10, 32), "cifar10valid": (10, 32), "cifar100": (100, 32), "imagenet16120": (120, 16)}
        if key not in table:
            raise ValueError(f"unknown NB201 dataset {name!r}; known: cifar10, cifar100, ImageNet16-120")
        labels, res = table[key]
        return cls(num_labels=labels, resolution=res)


_DEFAULT = NB201Macro()


def _conv(c_in: int, c_out: int, k: int, hw: int) -> Tuple[int, int]:
    """(params, MACs) of a bias-free ``k x k`` Conv2d producing ``hw x hw`` maps."""
    w = k * k * c_in * c_out
    return w, w * hw * hw


@lru_cache(maxsize=32)
def _tables(macro: NB201Macro) -> Tuple[Tuple[int, Tuple[Tuple[int, ...], ...]], ...]:
    """Integer (const, coef) per kind, derived from the layer structure (no model is built)."""
    c0, n = macro.stem_channels, macro.num_cells
    const = {"params": 0, "flops": 0}
    per_op = {k: {"nor_conv_1x1": 0, "nor_conv_3x3": 0} for k in KINDS}

    def add(kind_vals: Tuple[int, int], bn: int = 0) -> None:
        const["params"] += kind_vals[0] + 2 * bn
        const["flops"] += kind_vals[1]

    hw = macro.resolution
    add(_conv(3, c0, 3, hw), bn=c0)  # stem
    c = c0
    for stage in range(3):
        if stage > 0:  # ResNetBasicblock(c -> 2c, stride 2)
            c_out, hw = 2 * c, hw // 2
            add(_conv(c, c_out, 3, hw), bn=c_out)  # conv_a (stride 2)
            add(_conv(c_out, c_out, 3, hw), bn=c_out)  # conv_b
            add(_conv(c, c_out, 1, hw))  # residual: AvgPool2d(2) then 1x1 conv, no BN
            c = c_out
        for name, k in (("nor_conv_1x1", 1), ("nor_conv_3x3", 3)):
            p, f = _conv(c, c, k, hw)
            per_op["params"][name] += n * (p + 2 * c)  # conv + BN affine, in each of n cells
            per_op["flops"][name] += n * f
    const["params"] += 2 * c + c * macro.num_labels + macro.num_labels  # lastact BN + classifier
    const["flops"] += c * macro.num_labels + macro.num_labels  # classifier MACs + bias

    out = []
    for kind in KINDS:
        coef = [[0] * len(NODE_TYPES) for _ in range(_NUM_NODES)]
        for node in range(1, _NUM_NODES - 1):
            for name, v in per_op[kind].items():
                coef[node][_T[name]] = v
        out.append((const[kind], tuple(tuple(r) for r in coef)))
    return tuple(out)


def cost_table(
    kind: str, macro: NB201Macro = _DEFAULT, unit: Union[str, None] = None
) -> Tuple[float, np.ndarray]:
    """``(const, coef)`` with ``cost(types) = const + sum_n coef[n, types[n]]``.

    ``coef`` is a fresh float64 ``[8, 7]`` array over (node, node type); it is zero on the input
    and output rows and in the ``none``, ``skip_connect`` and ``avg_pool_3x3`` columns (those ops
    have no parameters and no conv/linear MACs); each of the 6 op rows is the same, since the op of
    an edge is repeated in all ``3 * num_cells`` cells.

    ``kind``: ``'params'`` (count of parameters) or ``'flops'`` (conv + linear MACs per image);
    see the module docstring for the exact conventions. ``unit``: ``None``/``'count'`` (plain
    counts, exact integers in float64), ``'K'``, ``'M'`` (NB201's units) or ``'G'``.
    """
    const, coef = _tables(macro)[check_kind(kind)]
    s = unit_scale(unit)
    return float(const) / s, np.asarray(coef, dtype=np.float64) / s


def legal_mask() -> np.ndarray:
    """``[8, 7]`` bool: node types allowed at each node (input, 5 ops x 6, output)."""
    return _SPACE.legal.copy()


def count(
    types: Union[np.ndarray, "list[int]"], kind: str, macro: NB201Macro = _DEFAULT, unit: Union[str, None] = None
) -> np.ndarray:
    """Exact cost of ``[..., 8]`` node-type indices -> ``[...]`` float64 (integers for ``unit=None``).

    Raises ``ValueError`` if a graph is not a legal NB201 cell (wrong length, or a node type
    that may not appear at its node).
    """
    types = np.asarray(types)
    if types.shape[-1:] != (_NUM_NODES,) or not np.issubdtype(types.dtype, np.integer):
        raise ValueError(
            f"expected integer node types of shape [..., {_NUM_NODES}], got {types.dtype} {types.shape}"
        )
    if ((types < 0) | (types >= len(NODE_TYPES))).any() or not _SPACE.legal[np.arange(_NUM_NODES), types].all():
        raise ValueError("not a NAS-Bench-201 graph (input, 6 ops, output) in the node types given to count()")
    const, coef = cost_table(kind, macro, unit)
    return const + coef[np.arange(_NUM_NODES), types].sum(axis=-1)


def count_sample(
    sample: Mapping[str, Any], kind: str, macro: NB201Macro = _DEFAULT, unit: Union[str, None] = None
) -> float:
    """Exact cost of one NNI sample such as ``{'cell/0_1': 'conv_3x3', ...}`` (NB201 op names work too)."""
    return float(count(_SPACE.sample_to_types(sample), kind, macro, unit))


def expected_cost(
    x: torch.Tensor,
    kind: str,
    temperature: float = 0.05,
    macro: NB201Macro = _DEFAULT,
    unit: Union[str, None] = None,
) -> torch.Tensor:
    """Differentiable cost of (noisy) centred node features ``x: [..., 8, 7]`` -> ``[...]``.

    Each node gets the distribution ``softmax(x[n] / temperature)`` restricted to its legal types,
    and the result is the expectation of the (affine) cost under these independent node
    distributions, ``const + sum_{n,t} p[n, t] * coef[n, t]``. For a centred one-hot
    (``2 * onehot - 1``, entries in ``{-1, 1}``) the logit gap is ``2 / temperature``; with the
    default ``0.05`` the other types get ``exp(-40) ~ 4e-18`` each, so the result equals
    :func:`count` exactly in float64 (to float rounding in float32, where counts above 2^24 are not
    representable anyway: use ``unit='M'`` with float32). For guidance on noisy ``x`` a larger
    temperature (about 0.5 .. 1) gives smoother gradients.

    The computation is in ``x.dtype`` on ``x.device``; nothing is cached on the graph.
    """
    if x.shape[-2:] != (_NUM_NODES, len(NODE_TYPES)):
        raise ValueError(
            f"expected node features of shape [..., {_NUM_NODES}, {len(NODE_TYPES)}], got {tuple(x.shape)}"
        )
    const, coef = cost_table(kind, macro, unit)
    return expected_additive_cost(x, const, coef, _SPACE.legal, temperature)


def budget_constraint(kind: str, budget: float, unit: Union[str, None] = "M", temperature: float = 0.2,
                      scale: float = 10.0, macro: NB201Macro = _DEFAULT) -> "Constraint":
    """``kind <= budget`` (``budget`` in ``unit``, e.g. 0.5 with ``unit='M'`` = 0.5 M params) as a
    :class:`~nni_diffusionnag.search.generator.Constraint`: :func:`expected_cost` at ``temperature`` guides,
    :func:`count` decides.

    Defaults from a sweep against an accuracy surrogate at scale 0.3 (3 seeds, 100 cells): at
    temperature 0.5 the relaxed cost of nearly decided cells underestimates the exact one and only
    66% (scale 1) to 86% (scale 3) of the cells kept within 0.6 M params; at temperature 0.2 with
    scale 10, 99.7% did (96.7% under 0.4 M), with the same true accuracy. The penalty is zero inside
    the budget, so a large scale does not distort cells that already fit.
    """
    from ..search.generator import Constraint

    check_kind(kind)
    return Constraint(
        name=f"{kind}<={budget:g}{unit or ''}",
        budget=float(budget),
        relaxed=lambda x: expected_cost(x, kind, temperature, macro, unit),
        exact=lambda types: count(types, kind, macro, unit),
        scale=scale,
    )


def cost_target(kind: str, scale: float = 0.3, minimize: bool = True, temperature: float = 0.2,
                macro: NB201Macro = _DEFAULT) -> "GuidanceTerm":
    """A guidance term that pushes generation towards fewer (``minimize``) or more ``kind``
    (params or flops), using the differentiable :func:`expected_cost` in millions."""
    from ..diffusion.guidance import GuidanceTerm

    check_kind(kind)
    sign = -1.0 if minimize else 1.0
    return GuidanceTerm(lambda x, t: sign * expected_cost(x, kind, temperature, macro, "M"), scale,
                        f"{'min' if minimize else 'max'}-{kind}")
