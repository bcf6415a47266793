"""``DiffusionNAGTuner``: DiffusionNAG as an NNI tuner, for ``nnictl create`` and NNI's web portal.

NNI 3.0 cannot start NAS strategies from a YAML config (NNI_NOTES §3.1), but it can start
tuners. This tuner runs the loop of :class:`nni_diffusionnag.integration.strategy.DiffusionNAG` unchanged.
It holds one such strategy as its *core*, never attached to an engine, and uses its proposal step,
its de-duplication set and its history. Proposals are warm-up draws from the unguided prior, then
guided acquisition (UCB) proposals from a surrogate refitted on every result. NNI's tuner calls
only feed that core:

- ``generate_parameters`` serves the graphs of one ``core._propose()`` call, one at a time, and
  skips any that was already generated. It raises :class:`nni.NoMoreTrialError` after
  ``patience`` empty proposal rounds in a row.
- ``receive_trial_result`` gets the scalar with :func:`nni.utils.extract_scalar_reward` (a
  number, or a dict's ``'default'``) and then :func:`~nni_diffusionnag.integration.strategy.scalar_metric`.
  None/NaN/inf or a dict without ``'default'`` is logged and skipped. The core turns values to
  minimise into values to maximise when it fits.
- ``import_data`` replays ``[{'parameter': ..., 'value': ...}]``. ``nnictl resume`` sends the
  finished trials this way, so the search continues with its history and skips those
  architectures.

Search space: a legacy ``search_space.json`` of ``choice`` dimensions that
:func:`nni_diffusionnag.space.legacy.space_for_search_space` can encode. For now that is NNI's
NasBench201 one, written by ``examples/nnictl_nasbench201/make_search_space.py``. Parameters are
NNI samples, ``{'cell/0_1': 'conv_3x3', ...}``. A trial rebuilds its network with
``nni.nas.nn.pytorch.model_context(params)``.

With nnictl, after ``nnictl algo register --meta nni_diffusionnag/meta.yml``::

    tuner:
      name: DiffusionNAG
      classArgs: {optimize_mode: maximize, warmup: 4, batch_size: 2, seed: 0}

Without registering, use ``tuner: {codeDirectory: ., className: nni_diffusionnag.integration.tuner.DiffusionNAGTuner}``.

torch and nni.nas are imported at the first ``update_search_space``, not when this module is
imported. NNI's manager gives the dispatcher 10 s to connect, and the dispatcher builds the tuner
before it connects. Give ``prior`` as an absolute path: the dispatcher runs in the experiment's
log directory, so a relative path would be resolved there.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple

import numpy as np

import nni
from nni.tuner import Tuner
from nni.utils import ClassArgsValidator, extract_scalar_reward
from schema import And, Optional as SchemaOptional, Schema, SchemaError

__all__ = ["DiffusionNAGTuner", "DiffusionNAGClassArgsValidator", "CLASS_ARGS"]

_logger = logging.getLogger(__name__)

Key = Tuple[int, ...]

# classArgs -> meaning (also the error message for unknown keys). Defaults are the strategy's.
CLASS_ARGS: Dict[str, str] = {
    "optimize_mode": "'maximize' (default) or 'minimize' the trial metric",
    "seed": "integer in [0, 2**31); drawn and logged if absent",
    "batch_size": "integer >= 1: architectures per guided proposal round",
    "warmup": "integer >= 0: architectures drawn from the unguided prior first",
    "n_candidates": "integer >= 1 and >= batch_size: graphs generated per round before ranking",
    "scale": "number >= 0: guidance scale of the acquisition (0 = unguided)",
    "acquisition": "'ucb', 'ei' or 'mean'",
    "kappa": "number >= 0: exploration weight of UCB",
    "device": "'auto', 'cpu', 'cuda' or 'cuda:N': where the generator runs (the dispatcher sees GPUs "
              "only with tunerGpuIndices set)",
    "prior": "absolute path of a prior checkpoint ('~' allowed; the dispatcher runs in the experiment's log "
             "directory); default: the prior shipped for the space",
    "patience": "integer >= 1: empty proposal rounds in a row before NoMoreTrialError",
}
# Same as nni_diffusionnag.search.generator.ACQUISITIONS, which imports torch (too slow here; a test checks).
ACQUISITIONS = ("mean", "ucb", "ei")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class DiffusionNAGClassArgsValidator(ClassArgsValidator):
    """Validates the ``classArgs`` of :class:`DiffusionNAGTuner` (``nnictl`` and the constructor).

    Raises ``ValueError`` naming the offending key, what it must be, and the accepted keys.
    ``None`` values mean "default" and are accepted for every key.
    """

    def validate_class_args(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(CLASS_ARGS))
        if unknown:
            raise ValueError(f"DiffusionNAG: unknown classArgs {unknown}; accepted keys: {sorted(CLASS_ARGS)}")
        given = {k: v for k, v in kwargs.items() if v is not None}

        def rule(key: str, check: Any) -> And:
            return And(check, error=f"DiffusionNAG classArgs: {key}={given.get(key)!r} is invalid; "
                                    f"{key} must be {CLASS_ARGS[key]}")

        schema = Schema({
            SchemaOptional("optimize_mode"): rule("optimize_mode", lambda v: v in ("maximize", "minimize")),
            SchemaOptional("seed"): rule("seed", lambda v: _is_int(v) and 0 <= v < 2**31),
            SchemaOptional("batch_size"): rule("batch_size", lambda v: _is_int(v) and v >= 1),
            SchemaOptional("warmup"): rule("warmup", lambda v: _is_int(v) and v >= 0),
            SchemaOptional("n_candidates"): rule("n_candidates", lambda v: _is_int(v) and v >= 1),
            SchemaOptional("scale"): rule("scale", lambda v: _is_number(v) and v >= 0),
            SchemaOptional("acquisition"): rule("acquisition", lambda v: v in ACQUISITIONS),
            SchemaOptional("kappa"): rule("kappa", lambda v: _is_number(v) and v >= 0),
            SchemaOptional("device"): rule("device", lambda v: isinstance(v, str) and bool(_DEVICE.match(v))),
            SchemaOptional("prior"): rule("prior", lambda v: isinstance(v, str) and bool(v.strip())),
            SchemaOptional("patience"): rule("patience", lambda v: _is_int(v) and v >= 1),
        })
        try:
            schema.validate(given)
        except SchemaError as err:
            # err.code lists schema's own context lines too; the last line is our message.
            raise ValueError(str(err.code).strip().splitlines()[-1]) from None
        if "batch_size" in given and "n_candidates" in given and given["n_candidates"] < given["batch_size"]:
            raise ValueError(f"DiffusionNAG classArgs: n_candidates={given['n_candidates']} must be >= "
                             f"batch_size={given['batch_size']}")
        if "prior" in given and not Path(given["prior"]).expanduser().is_file():
            raise ValueError(f"DiffusionNAG classArgs: prior={given['prior']!r} is not a file (give an absolute path: "
                             f"a relative one is resolved against the current directory, {Path.cwd()}); train one "
                             "with `nni-diffusionnag train-prior` or leave prior out to use the shipped one")


class DiffusionNAGTuner(Tuner):
    """DiffusionNAG (An et al., ICLR 2024) as an NNI tuner over a ``choice`` search space.

    Parameters
    ----------
    optimize_mode
        ``'maximize'`` or ``'minimize'`` the trial metric.
    seed
        Random seed; one is drawn and logged if None.
    batch_size, warmup, n_candidates, scale, acquisition, kappa, device, patience
        As for :class:`nni_diffusionnag.integration.strategy.DiffusionNAG`. None means that class's default.
    prior
        A prior checkpoint path. None means the prior shipped for the space.

    Unknown or invalid arguments raise ``ValueError`` (see :class:`DiffusionNAGClassArgsValidator`).
    """

    def __init__(self, optimize_mode: str = "maximize", seed: Optional[int] = None, batch_size: Optional[int] = None,
                 warmup: Optional[int] = None, n_candidates: Optional[int] = None, scale: Optional[float] = None,
                 acquisition: Optional[str] = None, kappa: Optional[float] = None, device: Optional[str] = None,
                 prior: Optional[str] = None, patience: Optional[int] = None, **unknown: Any) -> None:
        args = dict(optimize_mode=optimize_mode, seed=seed, batch_size=batch_size, warmup=warmup,
                    n_candidates=n_candidates, scale=scale, acquisition=acquisition, kappa=kappa, device=device,
                    prior=prior, patience=patience)
        DiffusionNAGClassArgsValidator().validate_class_args(**args, **unknown)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
            _logger.info("DiffusionNAGTuner: no seed given, using seed=%d", seed)
        self.optimize_mode = optimize_mode
        self.seed = seed
        self.prior = str(Path(prior).expanduser().resolve()) if prior else None
        # Keyword arguments of the core strategy; tests may add e.g. a smaller surrogate config.
        self._core_args: Dict[str, Any] = {k: v for k, v in args.items() if v is not None and k != "seed"}
        if self.prior:
            self._core_args["prior"] = self.prior
        self._lock = threading.Lock()
        self._core: Any = None  # nni_diffusionnag.integration.strategy.DiffusionNAG, built by update_search_space
        self.space: Any = None  # its GraphSpace
        self._buffer: Deque[np.ndarray] = deque()  # proposals of the last round not served yet
        self._params: Dict[int, Key] = {}  # parameter id -> graph, for every id served
        self._pending: Dict[int, Key] = {}  # parameter id -> graph, until its trial ends or reports
        self._deferred: List[Any] = []  # import_data before the search space: replayed with it

    # --- set-up --------------------------------------------------------------------------------
    def _build_core(self, space: Any) -> Any:
        from ..search.generator import GuidedGenerator
        from ..prior.model import DiffusionPrior
        from .strategy import DiffusionNAG

        core = DiffusionNAG(seed=self.seed, **self._core_args)
        # What DiffusionNAG._initialize does, without an engine.
        prior = (DiffusionPrior.load(self.prior, space, core.device) if self.prior
                 else DiffusionPrior.shipped(space, core.device))
        core.space = space
        core.generator = GuidedGenerator(prior, core.surrogate_config, core.sampler, core.constraints, seed=core.seed)
        _logger.info("DiffusionNAGTuner on %s with prior %s (%s): %s", space, self.prior or "shipped",
                     prior.device, core.extra_repr())
        return core

    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        """Encode the legacy search space; an unsupported one raises ``UnsupportedSpaceError``.

        The same space again (``nnictl update searchspace`` with equal content) keeps the history;
        a different one starts the search over.
        """
        from ..space.legacy import space_for_search_space

        space = space_for_search_space(search_space)
        with self._lock:
            if self._core is not None and space.labels == self.space.labels:
                _logger.info("DiffusionNAGTuner: search space unchanged; the search goes on")
                return
            if self._core is not None:
                _logger.warning("DiffusionNAGTuner: the search space changed; the search starts over")
            self._core = self._build_core(space)
            self.space = space
            self._buffer.clear()
            self._params.clear()
            self._pending.clear()
            deferred, self._deferred = self._deferred, []
        if deferred:
            self.import_data(deferred)

    def _require_core(self) -> Any:
        if self._core is None:
            raise RuntimeError("DiffusionNAGTuner: update_search_space() must be called first")
        return self._core

    # --- proposals -----------------------------------------------------------------------------
    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> Dict[str, Any]:
        """One new architecture as an NNI sample ``{label: op}``.

        Raises
        ------
        nni.NoMoreTrialError
            When ``patience`` proposal rounds in a row produced nothing new.
        """
        with self._lock:
            core = self._require_core()
            empty_rounds = 0
            while True:
                while self._buffer:
                    types = self._buffer.popleft()
                    key = self.space.key(types)
                    with core._lock:
                        if key in core._submitted:  # imported or reported since this round was proposed
                            continue
                        core._submitted[key] = len(core._submitted)
                    self._params[parameter_id] = key
                    self._pending[parameter_id] = key
                    params = self.space.types_to_sample(types)
                    _logger.debug("parameter %s: %s", parameter_id, params)
                    return params
                if empty_rounds >= core.patience:
                    raise nni.NoMoreTrialError(
                        f"DiffusionNAG: {empty_rounds} proposal rounds in a row produced no new architecture "
                        f"({len(core._submitted)} generated so far)")
                batch = core._propose()
                with core._lock:
                    new = [types for types in batch if self.space.key(types) not in core._submitted]
                if not new:
                    empty_rounds += 1
                    _logger.warning("DiffusionNAGTuner: a proposal round produced no new architecture (%d/%d)",
                                    empty_rounds, core.patience)
                self._buffer.extend(new)

    # --- results -------------------------------------------------------------------------------
    def _reward(self, value: Any) -> Optional[float]:
        from .strategy import scalar_metric

        try:
            reward = extract_scalar_reward(value)
        except RuntimeError:
            return None
        return scalar_metric(reward)

    def _key_of(self, parameters: Any) -> Optional[Key]:
        try:
            return self.space.key(self.space.sample_to_types(parameters))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Record a final metric (a number or a dict with ``'default'``); unusable ones are skipped."""
        with self._lock:
            core = self._require_core()
            key = self._key_of(parameters)
            if key is None:
                key = self._params.get(parameter_id)
            self._pending.pop(parameter_id, None)
            if key is None:
                _logger.warning("DiffusionNAGTuner: ignoring the result of parameter %s: %r is not an "
                                "architecture of this search space", parameter_id, parameters)
                return
            reward = self._reward(value)
            with core._lock:
                core._submitted.setdefault(key, len(core._submitted))
                if reward is None:
                    core._failed.append((key, f"unusable metric {value!r}"))
                else:
                    core._history.append((key, reward))
        if reward is None:
            _logger.warning("DiffusionNAGTuner: ignoring the result of parameter %s: metric %r is None/NaN/inf or "
                            "not a number or a dict with a numeric 'default'", parameter_id, value)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """Bookkeeping; a failed trial is logged and recorded as a failure, and the search goes on.

        NNI keys this call by the parameter id the trial was *assigned*, which at trial
        concurrency > 1 can be another trial's (NNI_NOTES §3.5). Results come from
        ``receive_trial_result``, which is keyed by the true id, so they are not affected.
        """
        with self._lock:
            key = self._pending.pop(parameter_id, None)
            if success:
                return
            key = key if key is not None else self._params.get(parameter_id)
            if self._core is not None and key is not None:
                with self._core._lock:
                    self._core._failed.append((key, "trial failed"))
            sample = self.space.types_to_sample(key) if key is not None else None
        _logger.warning("DiffusionNAGTuner: the trial of parameter %s (%s) failed; the search goes on",
                        parameter_id, sample)

    def import_data(self, data: Any) -> None:
        """Replay earlier results ``[{'parameter': {label: op}, 'value': metric}, ...]``.

        ``nnictl resume`` calls this with the finished trials. ``nnictl experiment import`` calls
        it too. The architectures join the history and are never proposed again. Records that do
        not decode, or that have unusable values, are skipped with a warning.
        """
        if isinstance(data, str):
            data = nni.load(data)
        with self._lock:
            if self._core is None:
                self._deferred.extend(data)
                _logger.info("DiffusionNAGTuner: %d records will be imported with the search space", len(data))
                return
            core = self._core
            imported, skipped = 0, []
            for record in data:
                if isinstance(record, str):
                    record = nni.load(record)
                params = record.get("parameter") if isinstance(record, Mapping) else None
                value = record.get("value") if isinstance(record, Mapping) else None
                if isinstance(value, str):
                    try:
                        value = nni.load(value)
                    except Exception:  # noqa: BLE001 - any undecodable string is just unusable
                        pass
                key, reward = self._key_of(params), self._reward(value)
                if key is None or reward is None:
                    skipped.append(record)
                    continue
                with core._lock:
                    core._submitted.setdefault(key, len(core._submitted))
                    core._history.append((key, reward))
                imported += 1
        _logger.info("DiffusionNAGTuner: imported %d records (%d skipped)", imported, len(skipped))
        if skipped:
            _logger.warning("DiffusionNAGTuner: skipped records (not of this search space or unusable value): %s",
                            skipped[:5])

    # --- inspection ----------------------------------------------------------------------------
    def history(self) -> List[Dict[str, Any]]:
        """Results received so far: ``[{'sample': ..., 'metric': ...}]`` in arrival order."""
        return self._core.history() if self._core is not None else []
