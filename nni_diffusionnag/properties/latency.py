"""Latency on the user's device: a bounded profiler and an additive latency model.

Parameters and FLOPs are counted exactly (:mod:`.nasbench201`, :mod:`.mobilenetv3`); latency
can only be measured, on the device that will run the network. This module measures it
(:func:`profile_latency`), fits the same additive form as the other cost models,
``latency(types) = const + sum_n coef[n, types[n]]`` (:func:`fit_additive_latency`), relaxes it
for guidance with :func:`~.additive.expected_additive_cost`, and wraps it as a guidance constraint
(:func:`latency_constraint`). A fitted model is only valid for the space and the device it was
measured on, so it carries both in its :attr:`AdditiveLatencyModel.cache_key`.

Pure numpy/torch: the caller supplies ``build(sample) -> nn.Module`` (e.g. NNI's
``model_space.freeze``), so nothing here imports NNI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .additive import expected_additive_cost

if TYPE_CHECKING:  # imported lazily at run time, as in .nasbench201: search imports properties, not back
    from ..search.generator import Constraint

__all__ = ["profile_latency", "device_description", "fit_additive_latency", "AdditiveLatencyModel",
           "latency_constraint", "RIDGE_GRID"]

_logger = logging.getLogger(__name__)

_FORMAT = 1  # version of the saved JSON


# --- measuring -----------------------------------------------------------------------------------
def _check_positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously: without a barrier the timer measures the launch only.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_latency(build: Callable[[Any], torch.nn.Module], samples: Sequence[Any],
                    input_shape: Sequence[int], *, device: Union[str, torch.device] = "cpu", threads: int = 1,
                    warmup: int = 3, repeats: int = 10, rounds: int = 1, time_budget_s: float = 600.0,
                    reference: Optional[torch.nn.Module] = None, progress: bool = True) -> np.ndarray:
    """Milliseconds per forward pass of ``build(sample)`` for each sample, until the budget is spent.

    Each network is put in ``eval()`` mode and run under ``torch.no_grad()`` on one random input
    of ``input_shape``: ``warmup`` untimed passes (allocator, caches, cuDNN autotuning), then
    ``repeats`` timed ones, of which the median is kept (robust to a stray interruption by
    another process). The CPU thread count is set to ``threads`` and restored afterwards.

    With ``rounds > 1`` the built networks are kept and timed again, round-robin, ``rounds - 1``
    more times; the result is the median over rounds. On a shared (virtual) machine the speed
    drifts over seconds: on the 2-core VM of docs/benchmarks.md the same NB201 cell measured
    13 ms and 21 ms a minute apart, which one window of repeats cannot average out but
    measurements spread over minutes can.

    With a ``reference`` network, each timed pass of a network alternates with one of the
    reference, and a network's latency is ``median(its times) / median(reference times in the
    same window)`` times the median of all reference times: a drift of the machine's speed
    slows both alike and cancels, and the result stays in ms at the machine's typical speed
    during the call. This doubles the timing cost (building usually dominates).

    The time bound is checked before each network (building included) and before each extra
    round (only whole rounds are kept, so every network has the same number): once
    ``time_budget_s`` has elapsed, profiling stops, a warning says how much was measured, and
    the latencies so far are returned. Row ``i`` of the result belongs to ``samples[i]``.

    Parameters
    ----------
    build
        ``sample -> nn.Module``, e.g. ``model_space.freeze``.
    samples
        What to profile, in order.
    input_shape
        Shape of the input batch, e.g. ``(1, 3, 32, 32)``.
    device
        ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
    threads
        ``torch.set_num_threads`` while profiling (1 gives the steadiest CPU timings).
    warmup, repeats
        Untimed and timed forward passes per network (and per round).
    rounds
        Timing passes over all networks (``> 1`` keeps them all in memory).
    reference
        A fixed network timed alongside each one to cancel speed drift (see above).
    time_budget_s
        Wall-clock bound of the whole call, seconds (exceeded by at most the network, or the
        round, in progress when it runs out).
    progress
        Show a tqdm progress bar.

    Returns
    -------
    np.ndarray
        ``[M']`` float64 ms, ``M' <= len(samples)`` (fewer when the budget ran out).
    """
    samples = list(samples)
    if not callable(build):
        raise ValueError(f"build must be a callable sample -> nn.Module, got {type(build).__name__}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a sequence of positive ints, got {input_shape!r}") from None
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be a non-empty sequence of positive ints, got {input_shape!r}")
    threads = _check_positive_int("threads", threads, 1)
    warmup = _check_positive_int("warmup", warmup, 0)
    repeats = _check_positive_int("repeats", repeats, 1)
    rounds = _check_positive_int("rounds", rounds, 1)
    if not isinstance(time_budget_s, (int, float)) or not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be a positive number of seconds, got {time_budget_s!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device string such as 'cpu' or 'cuda:0', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu'")

    from tqdm.auto import tqdm

    if reference is not None and not isinstance(reference, torch.nn.Module):
        raise ValueError(f"reference must be an nn.Module or None, got {type(reference).__name__}")
    ref_times: list = []

    def timed(model: torch.nn.Module) -> float:
        _sync(dev)
        t0 = time.perf_counter()
        model(x)
        _sync(dev)
        return time.perf_counter() - t0

    def time_one(model: torch.nn.Module) -> float:
        times, refs = [], []
        with torch.no_grad():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                times.append(timed(model))
                if ref is not None:
                    refs.append(timed(ref))
        if ref is None:
            return 1e3 * float(np.median(times))
        ref_times.extend(refs)
        return float(np.median(times) / np.median(refs))  # a ratio; scaled to ms at the end

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    first, kept = [], []
    done_rounds = 1
    start = time.perf_counter()
    try:
        x = torch.randn(shape, device=dev)
        ref = None if reference is None else reference.to(dev).eval()
        if ref is not None:
            with torch.no_grad():
                for _ in range(max(warmup, 1)):
                    ref(x)
        for sample in tqdm(samples, desc="latency", unit="net", disable=not progress):
            if time.perf_counter() - start >= time_budget_s:
                break
            model = build(sample).to(dev).eval()
            first.append(time_one(model))
            if rounds > 1:
                kept.append(model)
        per_round = [first]
        for _ in range(rounds - 1):
            if not kept or time.perf_counter() - start >= time_budget_s:
                break
            per_round.append([time_one(m) for m in kept])
        done_rounds = len(per_round)
    finally:
        torch.set_num_threads(old_threads)
    out = np.median(np.asarray(per_round, dtype=np.float64), axis=0) if first else np.zeros(0)
    if reference is not None and ref_times:
        out = out * 1e3 * float(np.median(ref_times))
    elapsed = time.perf_counter() - start
    if len(out) < len(samples) or done_rounds < rounds:
        _logger.warning("latency time budget of %.1f s spent: profiled %d of %d networks in %d of %d rounds, "
                        "returning those", time_budget_s, len(out), len(samples), done_rounds, rounds)
    else:
        _logger.info("profiled %d networks (%d rounds) in %.1f s on %s (%d threads)", len(out), rounds, elapsed,
                     dev, threads)
    return np.asarray(out, dtype=np.float64)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def device_description(device: Union[str, torch.device] = "cpu", threads: int = 1) -> str:
    """A string naming what latencies were measured on: ``'cpu:<model name>:threads=1'`` or
    ``'cuda:<device name>'``. Part of a latency model's cache key: a model fitted on one device
    says nothing reliable about another."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return f"cpu:{_cpu_model()}:threads={int(threads)}"


# --- the additive model --------------------------------------------------------------------------
@dataclass
class AdditiveLatencyModel:
    """``latency_ms(types) = const + sum_n coef[n, types[n]]``, fitted to measured latencies.

    Shapes: ``coef``, ``legal``: ``[N, V]``; :meth:`predict` maps ``[B, N]`` (or ``[N]``) type
    indices to ``[B]`` ms; :meth:`relaxed` maps features ``[..., N, V]`` to ``[...]``.

    Attributes
    ----------
    const, coef, legal
        The fit; types never seen in the data have coefficient 0.
    report
        ``r2``, ``mae_ms``, ``rmse_ms``, ``rel_err`` (mean ``|pred - y| / y``) on held-out
        networks, ``r2_train``, ``n_networks``, ``n_train``, ``n_test``, ``ridge``.
    signature
        ``SpaceSignature.to_dict()`` of the space, or ``None`` when fitted without one.
    device
        :func:`device_description` of the measuring device.
    input_shape
        The input batch shape the latencies were measured at.
    """

    const: float
    coef: np.ndarray
    legal: np.ndarray
    report: Dict[str, float] = field(default_factory=dict)
    signature: Optional[Dict[str, Any]] = None
    device: str = ""
    input_shape: Tuple[int, ...] = ()

    @property
    def cache_key(self) -> str:
        """sha256 (16 hex) of the space signature digest, the device and the input shape: a
        cached model may be reused exactly when all three agree."""
        digest = ""
        if self.signature is not None:
            from ..space.base import SpaceSignature

            digest = SpaceSignature.from_dict(self.signature).digest
        body = json.dumps({"space": digest, "device": self.device, "input_shape": list(self.input_shape)},
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def predict(self, types: np.ndarray) -> np.ndarray:
        """``[B, N]`` or ``[N]`` type indices -> ``[B]`` predicted ms."""
        types = np.atleast_2d(np.asarray(types, dtype=np.int64))
        if types.shape[1] != self.coef.shape[0]:
            raise ValueError(f"expected types of shape [B, {self.coef.shape[0]}], got {types.shape}")
        return self.const + self.coef[np.arange(self.coef.shape[0])[None, :], types].sum(axis=1)

    def relaxed(self, x: torch.Tensor, temperature: Union[float, torch.Tensor] = 0.2) -> torch.Tensor:
        """Expected latency (ms) under per-node softmaxes of ``x: [..., N, V]`` -> ``[...]``."""
        return expected_additive_cost(x, self.const, self.coef, self.legal, temperature)

    def to_dict(self) -> Dict[str, Any]:
        return {"format": _FORMAT, "const": float(self.const), "coef": self.coef.tolist(),
                "legal": self.legal.astype(bool).tolist(), "report": dict(self.report),
                "signature": self.signature, "device": self.device, "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AdditiveLatencyModel":
        if d.get("format") != _FORMAT:
            raise ValueError(f"unsupported latency model format {d.get('format')!r}; expected {_FORMAT}. "
                             "Re-fit it with fit_additive_latency")
        return cls(const=float(d["const"]), coef=np.asarray(d["coef"], dtype=np.float64),
                   legal=np.asarray(d["legal"], dtype=bool), report=dict(d.get("report", {})),
                   signature=d.get("signature"), device=str(d.get("device", "")),
                   input_shape=tuple(int(s) for s in d.get("input_shape", ())))

    def save(self, path: Union[str, Path]) -> None:
        """Write JSON (human-readable, no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Union[str, Path], space: Any = None) -> "AdditiveLatencyModel":
        """Read :meth:`save`'s JSON; with ``space``, raise ``SpaceMismatchError`` if it was fitted
        for another space. A missing file is an error (``FileNotFoundError``)."""
        model = cls.from_dict(json.loads(Path(path).read_text()))
        if space is not None and model.signature is not None:
            from ..space.base import SpaceSignature

            space.signature().check_matches(SpaceSignature.from_dict(model.signature), "latency model")
        return model


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return 1.0 - float(((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-12))


RIDGE_GRID: Tuple[float, ...] = tuple(float(10.0 ** e) for e in np.arange(-3.0, 3.01, 0.5))
"""Penalties :func:`fit_additive_latency` chooses from by cross-validation (``ridge='cv'``)."""


def _pooled_fit(types: np.ndarray, y: np.ndarray, v: int, ridge: float) -> Tuple[float, np.ndarray]:
    """``(const, coef [N, V])`` with ``coef[n, t] = shared[t] + dev[n, t]``: ridge on ``dev`` only.

    An operation costs much the same at every node that offers it, so its shared cost is fitted
    from every node at once and each node's deviation from it is shrunk by ``ridge``; a large
    ``ridge`` ties the nodes together (few effective parameters, robust to timing noise), a small
    one leaves every node free (the plain one-hot fit). ``shared`` gets a negligible penalty only,
    to make the split between the constant, ``shared`` and ``dev`` unique.
    """
    m, n = types.shape
    onehot = np.zeros((m, n * v))
    onehot[np.arange(m)[:, None], np.arange(n) * v + types] = 1.0
    counts = onehot.reshape(m, n, v).sum(1)
    design = np.concatenate([np.ones((m, 1)), counts, onehot], axis=1)
    pen = np.sqrt(np.concatenate([[0.0], np.full(v, 1e-6), np.full(n * v, ridge)]))
    w, *_ = np.linalg.lstsq(np.concatenate([design, np.diag(pen)[1:]], axis=0),
                            np.concatenate([y, np.zeros(v + n * v)]), rcond=None)
    coef = w[1:1 + v][None, :] + w[1 + v:].reshape(n, v)
    coef[:, counts.sum(0) == 0] = 0.0  # a type no node ever had: nothing to say about it
    return float(w[0]), coef


def _choose_ridge(types: np.ndarray, y: np.ndarray, v: int, folds: int, seed: int) -> float:
    """The :data:`RIDGE_GRID` value with the least k-fold squared error of :func:`_pooled_fit`."""
    n = types.shape[1]
    parts = np.array_split(np.random.default_rng(seed).permutation(len(y)), min(folds, len(y)))
    errors = []
    for ridge in RIDGE_GRID:
        sse = 0.0
        for part in parts:
            train = np.setdiff1d(np.arange(len(y)), part)
            const, coef = _pooled_fit(types[train], y[train], v, ridge)
            sse += float(((const + coef[np.arange(n)[None, :], types[part]].sum(1) - y[part]) ** 2).sum())
        errors.append(sse)
    return RIDGE_GRID[int(np.argmin(errors))]


def fit_additive_latency(types: np.ndarray, latency_ms: np.ndarray, *, space: Any = None,
                         num_types: Optional[int] = None, ridge: Union[float, str] = "cv", holdout: float = 0.2,
                         seed: int = 0, device: str = "",
                         input_shape: Sequence[int] = ()) -> AdditiveLatencyModel:
    """Ridge least squares of ``latency_ms ~ const + sum_n coef[n, types[n]]``.

    Each coefficient is an operation's cost shared by all nodes plus a per-node deviation, and
    ``ridge`` shrinks the deviations (see :func:`_pooled_fit`). With ``ridge='cv'`` (default) it
    is chosen from :data:`RIDGE_GRID` by 5-fold cross-validation: timings on a shared machine are
    noisy, and a per-node table of ``N * V`` coefficients fitted freely to a few hundred networks
    follows the noise (OFA MobileNetV3, 200 coefficients from 300 networks: held-out R^2 0.74 free,
    about 0.88 pooled on the same measurements; docs/benchmarks.md §12).

    The fit is first made on a random ``1 - holdout`` of the networks (the penalty chosen on
    that part only) and scored on the rest (the report); the returned model is then refitted on
    all of them, so the report slightly underestimates its quality. Types illegal at a node, or
    never seen in the data at all, get coefficient 0; a legal type seen only at other nodes gets
    its shared cost.

    Parameters
    ----------
    types
        ``[M, N]`` int node types of the profiled networks.
    latency_ms
        ``[M]`` measured latencies (e.g. from :func:`profile_latency`).
    space
        The ``GraphSpace`` (gives ``V``, the legal mask and the signature); without it ``V`` is
        ``num_types`` or ``types.max() + 1`` and every type is legal.
    ridge
        ``'cv'`` or a penalty ``>= 0`` on the per-node deviations.
    holdout
        Fraction of networks held out for the report, in ``[0, 1)``; 0 reports training fit only.
    device, input_shape
        What the latencies were measured on/at (see :func:`device_description`); kept in the
        model's cache key.
    """
    types = np.asarray(types)
    y = np.asarray(latency_ms, dtype=np.float64)
    if types.ndim != 2 or not np.issubdtype(types.dtype, np.integer):
        raise ValueError(f"types must be an [M, N] integer array, got shape {types.shape} dtype {types.dtype}")
    if y.shape != (types.shape[0],):
        raise ValueError(f"latency_ms must have shape [{types.shape[0]}] (one per row of types), got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError("latency_ms must be finite; drop failed measurements first")
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout!r}")
    if ridge != "cv" and (isinstance(ridge, (str, bool)) or not isinstance(ridge, (int, float))
                          or not ridge >= 0):
        raise ValueError(f"ridge must be 'cv' or a number >= 0, got {ridge!r}")
    m, n = types.shape
    if space is not None:
        v, legal, signature = space.num_types, np.asarray(space.legal, dtype=bool), space.signature().to_dict()
        if n != space.num_nodes:
            raise ValueError(f"types has {n} nodes per row but the space '{space.name}' has {space.num_nodes}")
    else:
        v = int(num_types) if num_types is not None else int(types.max()) + 1
        legal, signature = np.ones((n, v), dtype=bool), None
    if types.min() < 0 or types.max() >= v:
        raise ValueError(f"types must be in [0, {v}), got values in [{types.min()}, {types.max()}]")
    types = types.astype(np.int64)

    n_test = int(round(holdout * m))
    if holdout > 0 and (n_test < 2 or m - n_test < 2):
        raise ValueError(f"too few networks ({m}) for holdout={holdout}: need >= 2 on each side")
    perm = np.random.default_rng(seed).permutation(m)
    test, train = perm[:n_test], perm[n_test:]

    def penalty(rows: np.ndarray) -> float:
        return _choose_ridge(types[rows], y[rows], v, 5, seed) if ridge == "cv" else float(ridge)

    ridge_tr = penalty(train)
    c_tr, w_tr = _pooled_fit(types[train], y[train], v, ridge_tr)
    pred_tr = c_tr + w_tr[np.arange(n)[None, :], types[train]].sum(1)
    report: Dict[str, float] = {"r2_train": _r2(y[train], pred_tr), "n_networks": m, "n_train": len(train),
                                "n_test": n_test}
    if n_test:
        pred = c_tr + w_tr[np.arange(n)[None, :], types[test]].sum(1)
        err = np.abs(pred - y[test])
        report.update(r2=_r2(y[test], pred), mae_ms=float(err.mean()), rmse_ms=float(np.sqrt((err ** 2).mean())),
                      rel_err=float((err / np.maximum(np.abs(y[test]), 1e-12)).mean()))
    report["ridge"] = penalty(np.arange(m)) if n_test else ridge_tr
    const, coef = _pooled_fit(types, y, v, report["ridge"])
    coef = np.where(legal, coef, 0.0)  # never used for illegal types; keep the saved table clean
    _logger.info("additive latency fit on %d networks (ridge %g): held-out R^2 %s, MAE %s ms", m, report["ridge"],
                 f"{report['r2']:.3f}" if "r2" in report else "n/a",
                 f"{report['mae_ms']:.3f}" if "mae_ms" in report else "n/a")
    return AdditiveLatencyModel(const=const, coef=coef, legal=legal, report=report, signature=signature,
                                device=device, input_shape=tuple(int(s) for s in input_shape))


# --- guidance ------------------------------------------------------------------------------------
def latency_constraint(model: AdditiveLatencyModel, budget_ms: float, *, confidence: Optional[float] = None,
                       temperature: float = 0.2, scale: float = 1.0, margin: float = 0.03) -> "Constraint":
    """``latency <= budget_ms`` as a :class:`~nni_diffusionnag.search.generator.Constraint`.

    The additive model decides (``exact``: :meth:`AdditiveLatencyModel.predict`; the network is
    not re-measured) and its relaxation guides, noise-aware like
    :func:`~.mobilenetv3.space_budget_constraint`: the softmax temperature follows the noise
    level, never below ``temperature``. ``margin`` guides towards ``budget_ms * (1 - margin)``
    because the relaxed latency of nearly decided graphs is not the exact one. ``scale`` has not
    been swept for latency (the params constraints were); raise it if too many graphs end over
    budget.

    ``confidence`` (e.g. 0.95): the model is only a fit, and a searched architecture tends to sit
    just under the bound, where half of the predictions that say "within" are wrong. With it, an
    architecture is admitted only if its prediction plus the one-sided ``confidence`` quantile of
    a Gaussian with the model's held-out RMSE (``report['rmse_ms']``; ``1.25 * mae_ms`` for
    models saved without it) is within ``budget_ms``. ``None`` trusts the prediction.
    """
    from statistics import NormalDist

    from ..search.generator import Constraint

    if not budget_ms > 0:
        raise ValueError(f"budget_ms must be positive, got {budget_ms!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    name, bound = f"latency<={budget_ms:g}ms", float(budget_ms)
    if confidence is not None:
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence!r}")
        rmse = model.report.get("rmse_ms", 1.25 * model.report["mae_ms"] if "mae_ms" in model.report else None)
        if rmse is None:
            _logger.warning("the latency model has no held-out error (fitted with holdout=0): %s trusts its "
                            "predictions as they are", name)
        else:
            bound -= NormalDist().inv_cdf(confidence) * float(rmse)
            name = f"{name} (predicted <= {bound:.3g} ms: {100 * confidence:g}% sure at held-out RMSE {rmse:.2g} ms)"
            if not bound > 0:
                raise ValueError(f"the latency budget {budget_ms:g} ms is within the latency model's error "
                                 f"(RMSE {rmse:.3g} ms) of zero: raise it, or profile more carefully")
    return Constraint(name=name, budget=bound, relaxed=lambda x, noise_t: model.relaxed(x, noise_t.clamp_min(temperature)),
                      exact=model.predict, scale=scale, noise_aware=True, margin=margin)
