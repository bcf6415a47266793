"""Exact parameter count and FLOPs of networks sampled from NNI's ``MobileNetV3Space``.

:func:`count_sample` walks the layer structure that ``MobileNetV3Space(**kwargs)`` builds for a
sample (``nni/nas/hub/pytorch/mobilenetv3.py`` and the blocks of ``proxylessnas.py``) without
building it, for any constructor arguments (:class:`MobileNetV3Macro`, read from the model's
``trace_kwargs`` by :meth:`MobileNetV3Macro.from_model`) and any input resolution::

    stem     ConvBNReLU(3, w0, stem_ks, stride)
    stage 0  DepthwiseSeparableConv(w0, w1, s0_i0_ks): dw conv + BN, [SE], 1x1 conv + BN
    stage i  Repeat(depth) x InvertedResidual(c_in, w_{i+1}, exp, ks): 1x1 conv + BN (to
             make_divisible(c_in * exp, 8) channels), dw conv + BN, [SE], 1x1 conv + BN
    head     ConvBNReLU(1x1) + BN, global pool, 1x1 conv with bias (no BN), Linear(num_labels)

``SE(ch)`` is ``Conv2d(ch, rd, 1) + Conv2d(rd, ch, 1)``, both with bias, on the pooled 1x1 map,
with ``rd = make_divisible(ch / 4, 8)``.

Conventions, the same as :mod:`.nasbench201` (NAS-Bench-201's, also the usual "MFLOPs" of
mobile networks): **params** = scalars in ``model.parameters()`` of the frozen model (conv and
linear weights and biases, BatchNorm affine weight and bias); **flops** = multiply-accumulates
of ``Conv2d`` and ``Linear`` for one ``3 x R x R`` image: ``k*k*C_in/groups*C_out*H_out*W_out``
(+ ``C_out*H_out*W_out`` for a bias) and ``in*out + out``. BatchNorm, activations, pooling, the
SE gate product and residual sums are not counted. Tests check both against the frozen NNI model
(``model.parameters()`` and forward hooks).

For the 20-node OFA encoding (:mod:`nni_diffusionnag.space.mobilenetv3`) the widths are fixed,
so every cost is additive over the layer slots, ``cost = const + sum_n coef[n, t_n]`` with 0 for
``skip`` (:func:`cost_table`), exactly as for NB201; :func:`expected_cost` is its differentiable
relaxation and :func:`budget_constraint` / :func:`cost_target` the guidance terms. For any other
space with an exact counter, :func:`fit_additive_cost` fits such a table by least squares for
guidance while the exact count still decides (see :func:`space_budget_constraint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..space.base import GraphSpace
from ..space.mobilenetv3 import FIXED, NUM_STAGES, OFA_KWARGS, OPS, SKIP, SLOTS, MobileNetV3OFASpace
from .additive import KINDS, additive_least_squares, check_kind, expected_additive_cost, unit_scale

if TYPE_CHECKING:
    from ..diffusion.guidance import GuidanceTerm
    from ..search.generator import Constraint

__all__ = ["MobileNetV3Macro", "KINDS", "count_sample", "count", "cost_table", "expected_cost", "budget_constraint",
           "cost_target", "fit_additive_cost", "space_budget_constraint", "make_divisible", "inverted_residual",
           "mobilenetv3_budget"]

_SPACE = MobileNetV3OFASpace()


def make_divisible(v: float, divisor: int = 8) -> int:
    """NNI's ``make_divisible`` on plain numbers (round to a multiple of ``divisor``, at least
    ``divisor``, never more than 10% below ``v``)."""
    new_v = max(divisor, round(v + divisor // 2) // divisor * divisor)
    return int(new_v + divisor if new_v < 0.9 * v else new_v)


@dataclass(frozen=True)
class MobileNetV3Macro:
    """Constructor arguments of ``MobileNetV3Space`` that costs depend on, plus the resolution.

    Defaults are NNI's defaults; :meth:`ofa` gives OFA's layout, :meth:`from_model` reads a model.
    """

    num_labels: int = 1000
    base_widths: Tuple[int, ...] = (16, 16, 16, 32, 64, 128, 256, 512, 1024)
    width_multipliers: Union[Tuple[float, ...], float] = (0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0)
    squeeze_excite: Tuple[str, ...] = ("none", "none", "optional", "none", "optional", "optional")
    depth_range: Any = (1, 4)
    stride: Tuple[int, ...] = (2, 1, 2, 2, 2, 1, 2, 1, 1)
    se_from_exp: bool = True
    resolution: int = 224

    @classmethod
    def ofa(cls, num_labels: int = 1000, resolution: int = 224) -> "MobileNetV3Macro":
        keys = ("base_widths", "width_multipliers", "squeeze_excite", "depth_range", "stride")
        return cls(num_labels=num_labels, resolution=resolution, **{k: OFA_KWARGS[k] for k in keys})

    @classmethod
    def from_model(cls, model_space: Any, resolution: int = 224) -> "MobileNetV3Macro":
        """The macro of a ``MobileNetV3Space`` instance (from the arguments NNI traced)."""
        # An ExecutableModelSpace (what a strategy sees) wraps the model space or its trace copy.
        for attr in ("model_space", "model"):
            model_space = getattr(model_space, attr, model_space)
        name = getattr(getattr(model_space, "trace_symbol", None), "__name__", type(model_space).__name__)
        if name != "MobileNetV3Space":
            raise TypeError(f"expected NNI's MobileNetV3Space, got {name}")
        kwargs = dict(getattr(model_space, "trace_kwargs", None) or {})
        if getattr(model_space, "trace_args", None):
            raise ValueError("pass MobileNetV3Space arguments by keyword so that they can be read back")
        names = {f for f in cls.__dataclass_fields__ if f != "resolution"}
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items() if k in names}
        return cls(resolution=resolution, **known)

    @property
    def num_blocks(self) -> int:
        return len(self.base_widths) - 1

    def depth_bounds(self, stage: int) -> Tuple[int, int]:
        """(min, max) depth of body stage ``stage`` (1-based)."""
        rng = self.depth_range
        return tuple(rng) if isinstance(rng[0], int) else tuple(rng[stage - 1])  # type: ignore[return-value]


def _conv(c_in: int, c_out: int, k: int, hw_out: int, groups: int = 1, bias: bool = False) -> Tuple[int, int]:
    """(params, MACs) of a Conv2d."""
    w = k * k * (c_in // groups) * c_out
    b = c_out if bias else 0
    return w + b, (w + b) * hw_out * hw_out


def _out(hw: int, k: int, stride: int) -> int:
    pad = (k - 1) // 2
    return (hw + 2 * pad - k) // stride + 1


def _se(ch: int) -> Tuple[int, int]:
    rd = make_divisible(ch * 0.25, 8)
    p1, f1 = _conv(ch, rd, 1, 1, bias=True)
    p2, f2 = _conv(rd, ch, 1, 1, bias=True)
    return p1 + p2, f1 + f2


def _has_se(macro: MobileNetV3Macro, stage: int, sample: Mapping[str, Any], label: str) -> bool:
    mode = macro.squeeze_excite[stage]
    if mode == "optional":
        return sample[label] == "se"
    return mode == "force"


def inverted_residual(c_in: int, c_out: int, expand: float, k: int, stride: int, hw: int, se: bool,
                      se_from_exp: bool = True) -> Tuple[int, int, int]:
    """(params, MACs, output size) of one NNI ``InvertedResidual`` at input size ``hw``."""
    hidden = make_divisible(c_in * expand, 8)
    hw_out = _out(hw, k, stride)
    parts = [_conv(c_in, hidden, 1, hw), _conv(hidden, hidden, k, hw_out, groups=hidden),
             _conv(hidden, c_out, 1, hw_out)]
    params = sum(p for p, _ in parts) + 2 * (hidden + hidden + c_out)  # three BatchNorms
    flops = sum(f for _, f in parts)
    if se:
        p, f = _se(hidden if se_from_exp else c_in)
        params, flops = params + p, flops + f
    return params, flops, hw_out


def count_sample(sample: Mapping[str, Any], macro: MobileNetV3Macro = MobileNetV3Macro()) -> Dict[str, int]:
    """Exact ``{'params': ..., 'flops': ...}`` of the network ``MobileNetV3Space`` builds for ``sample``.

    ``sample`` is a full NNI sample (``{label: value}``); ``macro`` the space's arguments and the
    input resolution. Raises ``KeyError`` naming a decision the sample lacks.
    """
    nb = macro.num_blocks
    widths = []
    for i, base in enumerate(macro.base_widths):
        mult = macro.width_multipliers if isinstance(macro.width_multipliers, float) else \
            float(sample[f"s{max(i - 1, 0)}_width_mult"])
        widths.append(make_divisible(base * mult, 8))
    params = flops = 0

    def add(pf: Tuple[int, int], bn: int = 0) -> None:
        nonlocal params, flops
        params += pf[0] + 2 * bn
        flops += pf[1]

    hw = macro.resolution
    k = int(sample["stem_ks"])
    hw = _out(hw, k, macro.stride[0])
    add(_conv(3, widths[0], k, hw), bn=widths[0])
    # stage 0: depthwise-separable
    k = int(sample["s0_i0_ks"])
    hw = _out(hw, k, macro.stride[1])
    add(_conv(widths[0], widths[0], k, hw, groups=widths[0]), bn=widths[0])
    if _has_se(macro, 0, sample, "s0_i0_se"):
        add(_se(widths[0]))
    add(_conv(widths[0], widths[1], 1, hw), bn=widths[1])
    # body stages
    for i in range(1, nb - 2):
        lo, hi = macro.depth_bounds(i)
        depth = int(sample[f"s{i}_depth"]) if lo != hi else lo
        for j in range(depth):
            p, f, hw = inverted_residual(widths[i] if j == 0 else widths[i + 1], widths[i + 1],
                                         float(sample[f"s{i}_i{j}_exp"]), int(sample[f"s{i}_i{j}_ks"]),
                                         macro.stride[i + 1] if j == 0 else 1, hw,
                                         _has_se(macro, i, sample, f"s{i}_i{j}_se"), macro.se_from_exp)
            params, flops = params + p, flops + f
    # head
    hw = _out(hw, 1, macro.stride[nb - 1])
    add(_conv(widths[nb - 2], widths[nb - 1], 1, hw), bn=widths[nb - 1])
    add(_conv(widths[nb - 1], widths[nb], 1, 1, bias=True))  # after global pooling, no BN
    add((widths[nb] * macro.num_labels + macro.num_labels,) * 2)  # classifier
    return {"params": int(params), "flops": int(flops)}


# --- the additive cost of the 20-node OFA encoding ------------------------------------------------
@lru_cache(maxsize=16)
def _ofa_tables(macro: MobileNetV3Macro) -> Dict[str, Tuple[int, Tuple[Tuple[int, ...], ...]]]:
    """Integer (const, coef) of each kind for the OFA encoding, from the per-layer formula."""
    base = _SPACE.types_to_sample(np.array([0] * _SPACE.num_nodes))  # every stage at depth 4, op k3_e3
    widths = [make_divisible(b * macro.width_multipliers, 8) for b in macro.base_widths]  # type: ignore[operator]
    total = count_sample(base, macro)
    coef = {kind: np.zeros((_SPACE.num_nodes, _SPACE.num_types), dtype=np.int64) for kind in KINDS}
    hw = _out(_out(macro.resolution, FIXED["stem_ks"], macro.stride[0]), FIXED["s0_i0_ks"], macro.stride[1])
    for s in range(1, NUM_STAGES + 1):
        for j in range(SLOTS):
            hw_in = hw
            for t, (k, e) in enumerate(OPS):
                p, f, hw_out = inverted_residual(widths[s] if j == 0 else widths[s + 1], widths[s + 1], e, k,
                                                 macro.stride[s + 1] if j == 0 else 1, hw_in,
                                                 macro.squeeze_excite[s] == "force", macro.se_from_exp)
                coef["params"][(s - 1) * SLOTS + j, t] = p
                coef["flops"][(s - 1) * SLOTS + j, t] = f
            hw = hw_out
    nodes = np.arange(_SPACE.num_nodes)
    out = {}
    for kind in KINDS:
        const = total[kind] - int(coef[kind][nodes, 0].sum())  # stem, stage 0, head, classifier
        out[kind] = (const, tuple(tuple(int(v) for v in r) for r in coef[kind]))
    return out


def _check_ofa(macro: MobileNetV3Macro) -> None:
    if not isinstance(macro.width_multipliers, float) or any(m == "optional" for m in macro.squeeze_excite):
        raise ValueError("the additive cost of the OFA encoding needs fixed widths and no optional SE "
                         "(MobileNetV3Macro.ofa() or a macro read from an OFA-style MobileNetV3Space)")


def cost_table(kind: str, macro: MobileNetV3Macro = MobileNetV3Macro.ofa(),
               unit: Optional[str] = None) -> Tuple[float, np.ndarray]:
    """``(const, coef)`` with ``cost(types) = const + sum_n coef[n, types[n]]`` for the 20-node OFA
    encoding: ``coef`` ``[20, 10]`` holds each slot's layer cost per operation (0 for ``skip``);
    ``const`` the stem (3x3), stage 0 (3x3), head and classifier."""
    check_kind(kind)
    _check_ofa(macro)
    const, coef = _ofa_tables(macro)[kind]
    s = unit_scale(unit)
    return float(const) / s, np.asarray(coef, dtype=np.float64) / s


def count(types: Union[np.ndarray, "list[int]"], kind: str, macro: MobileNetV3Macro = MobileNetV3Macro.ofa(),
          unit: Optional[str] = None) -> np.ndarray:
    """Exact cost of ``[..., 20]`` OFA node types -> ``[...]`` (repaired first, as NNI gets them)."""
    types = np.asarray(types)
    if types.shape[-1:] != (_SPACE.num_nodes,) or not np.issubdtype(types.dtype, np.integer):
        raise ValueError(f"expected integer node types of shape [..., {_SPACE.num_nodes}], got {types.dtype} "
                         f"{types.shape}")
    flat = types.reshape(-1, _SPACE.num_nodes)
    if ((flat < 0) | (flat > SKIP)).any() or not _SPACE.legal[np.arange(_SPACE.num_nodes), flat].all():
        raise ValueError("not an OFA MobileNetV3 graph (slots 1-2 of a stage must be an operation) in count()")
    const, coef = cost_table(kind, macro, unit)
    flat = _SPACE.repair(flat)
    return (const + coef[np.arange(_SPACE.num_nodes), flat].sum(-1)).reshape(types.shape[:-1])


def expected_cost(x: torch.Tensor, kind: str, temperature: Union[float, torch.Tensor] = 0.2,
                  macro: MobileNetV3Macro = MobileNetV3Macro.ofa(), unit: Optional[str] = "M",
                  table: Optional[Tuple[float, np.ndarray]] = None, legal: Optional[np.ndarray] = None
                  ) -> torch.Tensor:
    """Differentiable cost of (noisy) centred node features ``x: [..., N, V]`` -> ``[...]``: the
    expectation of the additive cost under independent ``softmax(x[n] / temperature)`` node
    distributions restricted to legal types (equal to :func:`count` for a centred one-hot, up to
    ``exp(-2 / temperature)`` per node). ``temperature`` may be a ``[...]`` tensor (one per graph).
    ``table``/``legal`` default to the OFA encoding's."""
    const, coef = table if table is not None else cost_table(kind, macro, unit)
    return expected_additive_cost(x, const, coef, _SPACE.legal if legal is None else legal, temperature)


def budget_constraint(kind: str, budget: float, unit: Optional[str] = "M", temperature: float = 0.2,
                      scale: float = 1.0, macro: MobileNetV3Macro = MobileNetV3Macro.ofa(),
                      margin: float = 0.03) -> "Constraint":
    """``kind <= budget`` (in ``unit``; e.g. ``budget_constraint('flops', 220)`` = 220 MFLOPs) for the
    20-node OFA encoding: :func:`expected_cost` guides, :func:`count` decides.

    The relaxation is noise-aware: at noise level ``sigma`` the softmax temperature is
    ``max(temperature, sigma^2 / 2)``, the posterior of each node's type given ``x_t`` (see
    :class:`~nni_diffusionnag.search.generator.Constraint`); with a fixed temperature the softmax of noisy
    features saturates and its gradient vanishes. Guidance aims at ``budget * (1 - margin)``.
    Defaults from ``nni-diffusionnag bench mobilenetv3`` (budget sweep, docs/benchmarks.md §5) and
    a test where accuracy guidance pulls towards more FLOPs (tests/test_mobilenetv3.py).
    """
    from ..search.generator import Constraint

    check_kind(kind)
    cost_table(kind, macro, unit)  # early error for a macro without an additive cost
    return Constraint(name=f"{kind}<={budget:g}{unit or ''}", budget=float(budget),
                      relaxed=lambda x, noise_t: expected_cost(x, kind, noise_t.clamp_min(temperature), macro, unit),
                      exact=lambda types: count(types, kind, macro, unit), scale=scale, noise_aware=True,
                      margin=margin)


def cost_target(kind: str, scale: float = 0.3, minimize: bool = True, temperature: float = 0.2,
                macro: MobileNetV3Macro = MobileNetV3Macro.ofa()) -> "GuidanceTerm":
    """Guidance towards fewer (``minimize``) or more ``kind`` on the OFA encoding (in millions)."""
    from ..diffusion.guidance import GuidanceTerm

    check_kind(kind)
    sign = -1.0 if minimize else 1.0
    return GuidanceTerm(lambda x, t: sign * expected_cost(x, kind, temperature, macro, "M"), scale,
                        f"{'min' if minimize else 'max'}-{kind}")


# --- any space with an exact counter ----------------------------------------------------------------
def fit_additive_cost(space: GraphSpace, exact: Callable[[np.ndarray], np.ndarray], num_samples: int = 2000,
                      seed: int = 0) -> Tuple[float, np.ndarray, float]:
    """Least-squares ``(const, coef [N, V], r2)`` of ``exact(types) ~ const + sum_n coef[n, t_n]``
    on random graphs of ``space``: a smooth stand-in for guidance where the cost is not additive
    (e.g. width multipliers multiply channel counts). ``r2`` says how much of the cost it explains."""
    rng = np.random.default_rng(seed)
    types = space.random_types(num_samples, rng)
    y = np.asarray(exact(types), dtype=np.float64)
    const, coef = additive_least_squares(types, y, space.num_types)
    pred = const + coef[np.arange(space.num_nodes)[None, :], types].sum(axis=1)
    r2 = 1.0 - float(((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))
    return const, coef, r2


def space_budget_constraint(space: GraphSpace, model_space: Any, kind: str, budget: float, unit: Optional[str] = "M",
                            temperature: float = 0.2, scale: float = 1.0, resolution: int = 224,
                            num_samples: int = 2000, margin: float = 0.03) -> "Constraint":
    """``kind <= budget`` for any graph encoding of a ``MobileNetV3Space`` (e.g. the generic
    67-decision one of NNI's default space): exact :func:`count_sample` on the decoded NNI sample
    decides; an additive least-squares fit of it (:func:`fit_additive_cost`) guides. The OFA
    encoding gets its exact additive table instead."""
    from ..search.generator import Constraint

    check_kind(kind)
    macro = MobileNetV3Macro.from_model(model_space, resolution)
    if isinstance(space, MobileNetV3OFASpace):
        return budget_constraint(kind, budget, unit, temperature, scale, macro, margin)
    s = unit_scale(unit)

    def exact(types: np.ndarray) -> np.ndarray:
        flat = np.atleast_2d(types)
        return np.array([count_sample(space.types_to_sample(t), macro)[kind] / s for t in flat])

    const, coef, _ = fit_additive_cost(space, exact, num_samples)
    return Constraint(name=f"{kind}<={budget:g}{unit or ''}", budget=float(budget),
                      relaxed=lambda x, noise_t: expected_cost(x, kind, noise_t.clamp_min(temperature),
                                                               table=(const, coef), legal=space.legal),
                      exact=exact, scale=scale, noise_aware=True, margin=margin)


def mobilenetv3_budget(kind: str, budget: float, unit: Optional[str] = "M", resolution: int = 224,
                       **options: Any) -> Callable[[GraphSpace, Any], "Constraint"]:
    """``kind <= budget`` for :class:`~nni_diffusionnag.DiffusionNAG` on a ``MobileNetV3Space``, made
    when the strategy knows the space: ``DiffusionNAG(constraints=[mobilenetv3_budget('flops', 220)])``
    (220 MFLOPs at 224x224). ``options`` go to :func:`space_budget_constraint`."""
    check_kind(kind)
    unit_scale(unit)

    def make(space: GraphSpace, model_space: Any) -> "Constraint":
        return space_budget_constraint(space, model_space, kind, budget, unit, resolution=resolution, **options)

    return make
