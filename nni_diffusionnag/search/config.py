"""One validated configuration of a DiffusionNAG search, shared by the strategy and the tuner.

Settings are grouped by concern (:class:`LoopConfig`, :class:`AcquisitionConfig`,
:class:`PriorConfig`, :class:`TransferConfig`, plus the surrogate's
:class:`~nni_diffusionnag.nn.config.SurrogateConfig` and the cost constraints) in frozen
dataclasses whose ``__post_init__`` checks every value, so a typo or an impossible value fails
at construction with the argument's name, the value found and what is allowed, before any trial
runs. Users meet the flat names of :data:`FIELDS`: the keyword arguments of
:class:`~nni_diffusionnag.DiffusionNAG` and the ``classArgs`` of the nnictl tuner both go
through :meth:`SearchConfig.from_kwargs`, which also rejects unknown names with the list of
valid ones.

This module imports neither torch nor NNI (NNI's dispatcher gives a tuner 10 s to connect, and
validation happens before that); torch is imported only to check a CUDA device.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, Mapping, Optional, Tuple, Union

from ..diffusion.config import SamplerConfig
from ..nn.config import SurrogateConfig

__all__ = ["SearchConfig", "LoopConfig", "AcquisitionConfig", "PriorConfig", "TransferConfig", "Objective", "FIELDS",
           "ACQUISITIONS", "OPTIMIZE_MODES", "DEFAULT_SCALE", "LOOP_SCALE", "PRIOR_KINDS", "COST_OBJECTIVES"]

ACQUISITIONS = ("ucb", "ei", "mean", "ts")
OPTIMIZE_MODES = ("maximize", "minimize")
WARMUP_DESIGNS = ("random", "balanced")  # LoopConfig.warmup_design
PENDING = ("ignore", "believer")  # LoopConfig.pending
# Guidance push relative to the prior's pull (diffusion/guidance.py); chosen by the scale sweep of
# `nni-diffusionnag bench guidance` (docs/benchmarks.md §2): larger collapses diversity.
DEFAULT_SCALE = 0.3
# The search loop's scale where AcquisitionConfig.scale is None and the GNN ensemble searches one
# objective from scratch without constraints: NB201, 30 seeds per column, fewer trained
# architectures to the optimum than 0.3 (docs/benchmarks.md §3, 'Guidance scale'); every other path
# keeps DEFAULT_SCALE, the scale its figures were measured with
LOOP_SCALE = 0.15
PRIOR_KINDS = ("auto", "learned", "exact")
# Diffusion time crossovers of two anchors start from (LoopConfig.local_mix): on NB201 with the
# exact prior, 99% of the samples from 0.3 take every node from one parent or the other and half
# are new combinations; from 0.55, the time single-anchor variations use, only 15% keep to the
# parents (1,000 samples of two cells two operations apart, 2026-12-07).
CROSSOVER_NOISE = 0.3
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"DiffusionNAG: {name}={value!r} is invalid; {name} must be {allowed}")


def _int(name: str, value: Any, low: int, high: Optional[int] = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value < high)
    if not ok:
        _fail(name, value, f"an int >= {low}" + (f" and < {high}" if high is not None else ""))


def _number(name: str, value: Any, low: float, strict: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if strict else value >= low))
    if not ok:
        _fail(name, value, f"a finite number {'>' if strict else '>='} {low:g}")


def _choice(name: str, value: Any, allowed: Tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(name, value, f"one of {list(allowed)}")


def _file(name: str, value: Optional[str], hint: str) -> None:
    if value is None:
        return
    if not isinstance(value, (str, Path)) or not str(value).strip():
        _fail(name, value, "a file path or None")
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"DiffusionNAG: {name}={str(value)!r} is not a file (resolved against {Path.cwd()}: give "
                         f"an absolute path; the nnictl dispatcher runs in the experiment's log directory); {hint}")


def check_device(name: str, device: str) -> None:
    """``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``; a CUDA device must exist here."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        _fail(name, device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.startswith("cuda"):
        import torch  # only to check the device; the rest of this module stays torch-free

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            raise ValueError(f"DiffusionNAG: {name}={device!r} but this machine has "
                             f"{'no CUDA device' if count == 0 else f'{count} CUDA device(s)'}; use {name}='auto' "
                             "(CUDA when available, else CPU) or 'cpu'")


@dataclass(frozen=True)
class LoopConfig:
    """The BO loop: how many architectures per round, how many unguided ones first.

    ``batch_size`` architectures are proposed per round (more: fewer refits, less adaptivity;
    None, the default: 1 where the surrogate is the GP over decisions, which refits in
    0.3-1.2 s (20-200 results), so every result counts before the next proposal (docs/benchmarks.md §8), and
    with the GNN ensemble, whose refit takes about a second, 2 on one objective (on NB201 2 needed
    fewer trained architectures than 5 and as few as 1 at half its cost, docs/benchmarks.md §3) and
    5 with ``objectives`` (a batch picked for hypervolume spreads along the front; 2 lowered the
    NB201 hypervolume, §11);
    the first ``warmup`` come from the unguided prior (None, the default: 5 with the GNN ensemble
    on one objective: on NB201, 30 seeds per column, 5 needed as few trained architectures to the
    optimum as 10 and its best after 10 was higher, no longer a tie with random search,
    docs/benchmarks.md §3 'Warm-up'; 10 with the GP, whose figures were measured with 10, and with
    ``objectives``, where 5 lowered the NB201 hypervolume, §11); ``n_candidates`` graphs are generated per
    round before ranking; the search stops after ``patience`` rounds in a row that yield nothing
    new; ``seed`` (None: drawn and logged) seeds every random stream. ``threads``: torch CPU
    threads while a round is computed (restored afterwards; 0 leaves torch's setting). The
    networks are tiny, so more threads gain little, and next to trials that share the CPU
    (NNI's local training service runs them on the same machine) spinning threads slowed rounds
    10-100x on a 2-core machine (docs/benchmarks.md §9).

    Local candidates: once results exist, ``local_fraction`` of each round's candidates are guided
    variations of the ``local_anchors`` best results so far (each diffused to time ``local_noise``
    of the SDE and denoised with guidance, SDEdit-style; at 0.55 on NB201, 0 / 1 / 2 / 3 of the
    6 operations change in about 17% / 37% / 27% / 14% of them), the rest are generated from noise; all are ranked together.
    The search can then step next to what is best so far, which generation from noise reaches
    only by chance (docs/benchmarks.md §3, 'Local candidates'). ``local_fraction=0`` turns it off.
    ``local_mix``: the share of local candidates that start from a crossover of two anchors
    instead (the midpoint of their codes diffused to :data:`CROSSOVER_NOISE`, so nodes where the
    two differ are decided by denoising and guidance;
    :meth:`~nni_diffusionnag.search.generator.GuidedGenerator.start_codes`).

    ``warmup_design``: how the unguided warm-up is drawn from an exact product prior:
    ``'random'`` (independent draws) or ``'balanced'`` (a Latin-hypercube design over each node's
    choices, :meth:`~nni_diffusionnag.prior.exact.ProductPrior.balanced_types`; other priors draw
    independently either way).

    ``local_patience``: after that many results in a row without a new best, each round's picks
    come first from the candidates one change away from the best (a trust region of radius 1,
    ranked by the acquisition among themselves; the rest of the pool, ranked as usual, fills up
    when fewer of them were generated; single-objective search from scratch only). Near the
    optimum no surrogate of a few dozen results ranks the best's neighbours better than a random
    order (docs/benchmarks.md §3 'What limits the last stretch'), which suggested spending a
    stalled search's trials on them; on NB201 it needed more trained architectures (a stalled best
    often has no better neighbour), so 0, the default, turns it off.

    ``pending``: what a round knows of the trials still running when several run at once
    (``trial_concurrency`` > 1). ``'ignore'`` (the default) fits the surrogate on the results
    only; running architectures are just never proposed again. ``'believer'`` also fits each
    running architecture, labelled with the previous fit's prediction for it (the kriging believer
    of batch Bayesian optimisation), so that the ensemble agrees there and the upper confidence
    bound stops favouring what is already being trained. With four trials in flight on NB201 it
    needed no fewer trained architectures on CIFAR-10 and more on CIFAR-100 (docs/benchmarks.md
    §3 'Trials in flight'). Single-objective search from scratch; with one trial at a time nothing
    is pending and both are the same search.

    ``dedup_key``: a function of a sample (the dict NNI freezes a model from) returning a hashable
    identity, or its ``'module:callable'`` (or dotted) name, from YAML. Samples with equal keys are one
    architecture to the search, which trains only the first of them: give it where the space holds
    different samples that build the same network, e.g. a cell whose parallel branches are summed
    (any order of them is one network) or NAS-Bench-Graph's isomorphic cells. NNI de-duplicates
    samples, not networks, and neither can this package without knowing the space: on
    NAS-Bench-Graph the search without it trained the same network again in 8-22% of 200 trials,
    once near the best it varied it by swapping branches (docs/benchmarks.md §10, 'The same network
    twice'). None (the default): samples are compared as they are.
    """

    batch_size: Optional[int] = None
    warmup: Optional[int] = None
    n_candidates: int = 100
    patience: int = 3
    seed: Optional[int] = None
    threads: int = 1
    local_fraction: float = 0.5
    local_noise: float = 0.55
    local_anchors: int = 3
    local_mix: float = 0.0
    local_patience: int = 0
    warmup_design: str = "random"
    pending: str = "ignore"
    dedup_key: Optional[Union[str, Callable[[Mapping[str, Any]], Hashable]]] = None

    def __post_init__(self) -> None:
        if self.dedup_key is not None:
            key = resolve_callable(self.dedup_key, "dedup_key") if isinstance(self.dedup_key, str) else self.dedup_key
            if not callable(key):
                _fail("dedup_key", self.dedup_key, "a function of a sample returning a hashable key, "
                      "or its 'module:callable' name")
            object.__setattr__(self, "dedup_key", key)
        if self.batch_size is not None:
            _int("batch_size", self.batch_size, 1)
        if self.warmup is not None:
            _int("warmup", self.warmup, 0)
        _int("n_candidates", self.n_candidates, 1)
        if self.batch_size is not None and self.n_candidates < self.batch_size:
            raise ValueError(f"DiffusionNAG: n_candidates={self.n_candidates} must be >= batch_size={self.batch_size}")
        _int("patience", self.patience, 1)
        if self.seed is not None:
            _int("seed", self.seed, 0, 2**31)
        _int("threads", self.threads, 0)
        _number("local_fraction", self.local_fraction, 0.0)
        if self.local_fraction > 1:
            _fail("local_fraction", self.local_fraction, "a number in [0, 1]")
        _number("local_noise", self.local_noise, 0.0, strict=True)
        if self.local_noise > 1:
            _fail("local_noise", self.local_noise, "a number in (0, 1]: the diffusion time the anchors are noised to")
        _int("local_anchors", self.local_anchors, 1)
        _number("local_mix", self.local_mix, 0.0)
        if self.local_mix > 1:
            _fail("local_mix", self.local_mix, "a number in [0, 1]: the share of local candidates from two anchors")
        _int("local_patience", self.local_patience, 0)
        _choice("warmup_design", self.warmup_design, WARMUP_DESIGNS)
        _choice("pending", self.pending, PENDING)


@dataclass(frozen=True)
class AcquisitionConfig:
    """What guides generation and ranks candidates once results exist.

    ``acquisition`` of the surrogate ensemble (``'ucb'`` mean + ``kappa`` std, ``'ei'``,
    ``'mean'``, or ``'ts'``: Thompson samples, each graph guided and each proposal slot ranked by
    one member of the ensemble; ``kappa`` is then unused); ``scale`` of its guidance relative to the prior's score (0: unguided;
    None: :data:`LOOP_SCALE` for the GNN ensemble on one objective from scratch without constraints,
    :data:`DEFAULT_SCALE` otherwise, resolved by the search core);
    ``optimize_mode`` of the trial metric.
    """

    acquisition: str = "ucb"
    kappa: float = 0.3
    scale: Optional[float] = None
    optimize_mode: str = "maximize"

    def __post_init__(self) -> None:
        _choice("acquisition", self.acquisition, ACQUISITIONS)
        _number("kappa", self.kappa, 0.0)
        if self.scale is not None:
            _number("scale", self.scale, 0.0)
        _choice("optimize_mode", self.optimize_mode, OPTIMIZE_MODES)

    @property
    def sign(self) -> float:
        """+1 to maximise, -1 to minimise: the generator always maximises ``sign * metric``."""
        return 1.0 if self.optimize_mode == "maximize" else -1.0


@dataclass(frozen=True)
class PriorConfig:
    """The unguided prior and its sampler.

    ``prior``: a checkpoint path, or None for the default kind for the space. ``prior_kind``:
    ``'auto'`` (the closed-form prior where the choices are independent, as on NB201 or a plain
    ``ModelSpace``; else the shipped prior; else the closed-form per-decision prior, dependencies
    enforced after sampling), ``'learned'`` (a score network: shipped, cached, or trained now within
    ``prior_time_budget`` seconds) or ``'exact'`` (the closed-form prior everywhere). ``discretize``: bins of continuous values (an int for all, or
    ``{label: n_bins}``). ``device`` of the generator: ``'auto'`` (CUDA when available), ``'cpu'``,
    ``'cuda:1'``...
    """

    prior: Optional[str] = None
    prior_kind: str = "auto"
    prior_time_budget: float = 120.0
    discretize: Any = None
    device: str = "auto"
    sampler: SamplerConfig = SamplerConfig(num_steps=30)

    def __post_init__(self) -> None:
        _file("prior", self.prior, "train one with `nni-diffusionnag train-prior`, or leave prior out to use the "
                                   "space's shipped or cached prior")
        _choice("prior_kind", self.prior_kind, PRIOR_KINDS)
        _number("prior_time_budget", self.prior_time_budget, 0.0, strict=True)
        d = self.discretize
        if d is not None:
            if isinstance(d, Mapping):
                for label, n in d.items():
                    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1) and not (
                            isinstance(n, (list, tuple)) and n):
                        _fail(f"discretize[{label!r}]", n, "an int >= 1 of bins or a non-empty list of values")
            else:
                _int("discretize", d, 1)
        check_device("device", self.device)
        if not isinstance(self.sampler, SamplerConfig):
            _fail("sampler", self.sampler, "a SamplerConfig (or a dict of its fields)")


@dataclass(frozen=True)
class TransferConfig:
    """Transfer from earlier tasks (:mod:`nni_diffusionnag.transfer`).

    ``meta_predictor``: a meta-surrogate checkpoint (``nni-diffusionnag train-meta``); with
    ``dataset`` (the target's images) it is read as a dataset-aware one. ``meta_adapt_steps``:
    fine-tuning steps of the refit with 2 results, growing by 10 per further result.
    """

    meta_predictor: Optional[str] = None
    meta_adapt_steps: int = 60
    dataset: Any = None

    def __post_init__(self) -> None:
        _file("meta_predictor", self.meta_predictor, "train one with `nni-diffusionnag train-meta`")
        _int("meta_adapt_steps", self.meta_adapt_steps, 0)
        if self.dataset is not None and not self.meta_predictor:
            raise ValueError("DiffusionNAG: dataset= needs meta_predictor=PATH, a dataset-aware meta-predictor "
                             "to read it with")


# Objectives computed rather than reported (properties/budgets.py): the exact cost models of the
# spaces that have one, and the latency model fitted on the user's device (latency_model).
COST_OBJECTIVES = ("params", "flops", "latency")
_MODES = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}


@dataclass(frozen=True)
class Objective:
    """One objective beside the trial's ``default`` metric (multi-objective search).

    ``name``: ``'params'`` or ``'flops'`` (computed by the space's exact cost model, never
    trained), ``'latency'`` (ms, predicted by the configuration's ``latency_model``), or a key
    that trials report in their final metric dict
    (``nni.report_final_result({'default': acc, 'latency_ms': 3.1})``), learned by a surrogate of
    its own. ``mode``: ``'minimize'`` or ``'maximize'``.
    """

    name: str
    mode: str = "minimize"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.match(r"^[A-Za-z_][\w.\-]*$", self.name):
            _fail("objectives[...]", self.name, "a metric key such as 'latency_ms', or 'params'/'flops'")
        if self.name == "default":
            raise ValueError("DiffusionNAG: objectives name the objectives *beside* the trial's 'default' metric, "
                             "which is always the first (its direction is optimize_mode)")
        _choice(f"the mode of objective {self.name!r}", self.mode, OPTIMIZE_MODES)

    @property
    def is_cost(self) -> bool:
        """Computed by the space's cost model rather than reported by trials."""
        return self.name in COST_OBJECTIVES

    @classmethod
    def parse(cls, spec: Any) -> "Objective":
        """``'params'`` (minimised), ``'latency_ms:min'``, ``{'name': ..., 'mode': ...}`` or an Objective.
        A reported metric needs its direction (``:min``/``:max``): nothing tells it otherwise."""
        if isinstance(spec, Objective):
            return spec
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"name", "mode"})
            if unknown or "name" not in spec:
                raise ValueError(f"DiffusionNAG: an objective dict needs 'name' (and 'mode'), got {dict(spec)!r}")
            name, mode = spec["name"], spec.get("mode")
        elif isinstance(spec, str):
            name, _, mode = spec.strip().partition(":")
            mode = mode or None
        else:
            raise ValueError(f"DiffusionNAG: objective {spec!r} is invalid; write 'params', 'flops' or "
                             "'metric_key:min' / 'metric_key:max'")
        if mode is None and name != "default":  # 'default' gets its own message from __post_init__
            if name not in COST_OBJECTIVES:
                raise ValueError(f"DiffusionNAG: objective {name!r}: say whether to minimise or maximise it, as "
                                 f"'{name}:min' or '{name}:max'")
            mode = "min"
        if mode is not None and mode not in _MODES:
            raise ValueError(f"DiffusionNAG: objective {name!r} has mode {mode!r}; use 'min' or 'max'")
        return cls(name, _MODES[mode or "min"])


def _check_latency_model(value: Any) -> None:
    """A saved latency model (JSON path) or a fitted one; read without torch (see the module
    docstring): the format is checked here, the model built where the search starts."""
    if value is None or all(hasattr(value, a) for a in ("predict", "relaxed", "report")):
        return
    hint = "fit one with `nni-diffusionnag bench latency` or properties.latency.fit_additive_latency and save it"
    _file("latency_model", value, hint)
    import json

    try:
        d = json.loads(Path(value).expanduser().read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"DiffusionNAG: latency_model={str(value)!r} is not a latency model's JSON ({err}); {hint}") \
            from None
    if not isinstance(d, dict) or d.get("format") != 1 or not {"const", "coef", "legal"} <= set(d):
        raise ValueError(f"DiffusionNAG: latency_model={str(value)!r} is not a saved AdditiveLatencyModel (format 1 "
                         f"with const, coef, legal); {hint}")


def _names_latency(spec: Any) -> bool:
    if isinstance(spec, str):
        return spec.strip().startswith("latency") and ":" not in spec
    return isinstance(spec, Mapping) and spec.get("cost") == "latency"


def _check_constraint(c: Any) -> None:
    if isinstance(c, str) or callable(c) or all(hasattr(c, a) for a in ("exact", "relaxed", "budget")):
        return
    if isinstance(c, Mapping):
        return
    _fail("constraints[...]", c, "a Constraint, a factory (graph_space, model_space) -> Constraint, a budget such as "
                                 "'params<=0.5' or {'cost': 'flops', 'budget': 220}, or 'module:callable'")


# flat name -> (group, field): the names users write, in the strategy and in classArgs
FIELDS: Dict[str, Tuple[str, str]] = {}
for _group, _cls in (("loop", LoopConfig), ("acquisition", AcquisitionConfig), ("prior", PriorConfig),
                     ("transfer", TransferConfig)):
    for _f in fields(_cls):
        FIELDS[_f.name] = (_group, _f.name)
FIELDS["surrogate"] = ("surrogate", "")
FIELDS["constraints"] = ("constraints", "")
FIELDS["objectives"] = ("objectives", "")
FIELDS["latency_model"] = ("latency_model", "")
_WHOLE = ("surrogate", "constraints", "objectives", "latency_model")  # fields that are not inside a group


def _dataclass_from(cls: Any, name: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        _fail(name, value, f"a {cls.__name__} or a dict of its fields")
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(value) - set(valid))
    if unknown:
        raise ValueError(f"DiffusionNAG: unknown {name} settings {unknown}; valid: {valid}")
    try:
        return cls(**value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"DiffusionNAG: {name}={dict(value)!r} is invalid: {err}") from None


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search, validated (see the module docstring).

    Build it from flat names with :meth:`from_kwargs`; read a group as ``config.loop.batch_size``.
    """

    loop: LoopConfig = LoopConfig()
    acquisition: AcquisitionConfig = AcquisitionConfig()
    prior: PriorConfig = PriorConfig()
    transfer: TransferConfig = TransferConfig()
    surrogate: SurrogateConfig = SurrogateConfig()
    constraints: Tuple[Any, ...] = field(default_factory=tuple)
    objectives: Tuple[Objective, ...] = field(default_factory=tuple)
    latency_model: Any = None  # a saved AdditiveLatencyModel (path) or one: 'latency' budgets and objective

    def __post_init__(self) -> None:
        if not isinstance(self.constraints, tuple):
            object.__setattr__(self, "constraints", tuple(self.constraints))
        for c in self.constraints:
            _check_constraint(c)
        specs = self.objectives
        if isinstance(specs, (str, Mapping, Objective)) or not hasattr(specs, "__iter__"):
            specs = (specs,)
        objectives = tuple(Objective.parse(o) for o in specs)
        names = [o.name for o in objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"DiffusionNAG: objectives {names} name one objective twice")
        object.__setattr__(self, "objectives", objectives)
        _check_latency_model(self.latency_model)
        if self.latency_model is None and ("latency" in names or any(_names_latency(c) for c in self.constraints)):
            raise ValueError("DiffusionNAG: a 'latency' objective or budget needs latency_model=PATH, a latency model "
                             "profiled on your device (`nni-diffusionnag bench latency`, or properties.latency."
                             "fit_additive_latency + save); for a latency that trials report, name its key instead, "
                             "e.g. objectives=['latency_ms:min']")

    def latency(self) -> Any:
        """The :class:`~nni_diffusionnag.properties.latency.AdditiveLatencyModel` of
        ``latency_model`` (loaded from its file), or None."""
        if self.latency_model is None or not isinstance(self.latency_model, (str, Path)):
            return self.latency_model
        from ..properties.latency import AdditiveLatencyModel

        return AdditiveLatencyModel.load(Path(self.latency_model).expanduser())

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "SearchConfig":
        """From flat names (:data:`FIELDS`); None means the default. Unknown names raise with the
        list of valid ones; ``surrogate`` and ``sampler`` may be dicts of their fields."""
        unknown = sorted(set(kwargs) - set(FIELDS))
        if unknown:
            raise ValueError(f"DiffusionNAG: unknown argument(s) {unknown}; valid arguments: {sorted(FIELDS)}")
        groups: Dict[str, Dict[str, Any]] = {"loop": {}, "acquisition": {}, "prior": {}, "transfer": {}}
        for name, value in kwargs.items():
            group, key = FIELDS[name]
            if value is None:  # None means the default (for the optional settings the default is None too)
                continue
            if group in groups:
                groups[group][key] = value
        if "sampler" in groups["prior"]:
            groups["prior"]["sampler"] = _dataclass_from(SamplerConfig, "sampler", groups["prior"]["sampler"])
        surrogate = kwargs.get("surrogate")
        constraints = kwargs.get("constraints") or ()
        if isinstance(constraints, (str, Mapping)) or not hasattr(constraints, "__iter__"):
            constraints = (constraints,)
        return cls(loop=LoopConfig(**groups["loop"]), acquisition=AcquisitionConfig(**groups["acquisition"]),
                   prior=PriorConfig(**groups["prior"]), transfer=TransferConfig(**groups["transfer"]),
                   surrogate=SurrogateConfig() if surrogate is None else _dataclass_from(SurrogateConfig, "surrogate",
                                                                                        surrogate),
                   constraints=tuple(constraints), objectives=kwargs.get("objectives") or (),
                   latency_model=kwargs.get("latency_model"))

    def replace(self, **kwargs: Any) -> "SearchConfig":
        """A copy with some flat settings changed (validated like :meth:`from_kwargs`)."""
        unknown = sorted(set(kwargs) - set(FIELDS))
        if unknown:
            raise ValueError(f"DiffusionNAG: unknown argument(s) {unknown}; valid arguments: {sorted(FIELDS)}")
        out = self
        for name, value in kwargs.items():
            group, key = FIELDS[name]
            if group == "surrogate":
                out = replace(out, surrogate=_dataclass_from(SurrogateConfig, "surrogate", value))
            elif group == "latency_model":
                out = replace(out, latency_model=value)
            elif group in ("constraints", "objectives"):
                out = replace(out, **{group: tuple(value) if hasattr(value, "__iter__") and not isinstance(
                    value, (str, Mapping)) else (value,)})
            else:
                if key == "sampler":
                    value = _dataclass_from(SamplerConfig, "sampler", value)
                out = replace(out, **{group: replace(getattr(out, group), **{key: value})})
        return out

    def describe(self) -> str:
        """The settings that differ from the defaults, for logs and ``repr``."""
        default = SearchConfig()
        parts = []
        for name, (group, key) in FIELDS.items():
            if group in _WHOLE:
                value, base = getattr(self, group), getattr(default, group)
                if group == "latency_model" and value is not None and not isinstance(value, (str, Path)):
                    value = f"<{type(value).__name__} {getattr(value, 'cache_key', '')}>"
            else:
                value, base = getattr(getattr(self, group), key), getattr(getattr(default, group), key)
            if value != base:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)


def resolve_callable(ref: str, what: str = "constraint") -> Callable[..., Any]:
    """``'package.module:name'`` (or ``'package.module.name'``, as NNI names a class in YAML) ->
    the object (a user's constraint factory or ``dedup_key``, named in YAML); ``what`` names the
    setting in the errors."""
    import importlib

    module, _, name = ref.partition(":") if ":" in ref else ref.rpartition(".")
    if not module or not name:
        raise ValueError(f"DiffusionNAG: {what} {ref!r} is not 'module:callable'")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"DiffusionNAG: cannot import {what} {ref!r}: {err}") from None
    if not callable(obj):
        raise ValueError(f"DiffusionNAG: {what} {ref!r} is not callable")
    return obj
