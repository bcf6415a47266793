"""``DiffusionNAGTuner``: DiffusionNAG as an NNI tuner, for ``nnictl create`` and NNI's web portal.

NNI 3.0 cannot start NAS strategies from a YAML config (nni#3452, nni#5791; docs/design.md, "NNI
3.0 defects"), but it can start tuners. This tuner is a thin adapter over the same NNI-free
:class:`~nni_diffusionnag.search.core.SearchCore` as the strategy, so both routes run one search
with one configuration (:class:`~nni_diffusionnag.search.config.SearchConfig`):

- ``update_search_space`` encodes any ``search_space.json`` that NNI's own tuners accept
  (:func:`~nni_diffusionnag.space.legacy.space_for_search_space`: ``choice`` with nesting,
  ``randint``, the ``q*`` grids, continuous types binned) and builds the core;
- ``generate_parameters`` asks the core for one architecture and raises
  :class:`nni.NoMoreTrialError` once the core is exhausted;
- ``receive_trial_result`` and ``trial_end`` tell the core results and failures;
- ``import_data`` replays ``[{'parameter': ..., 'value': ...}]``: ``nnictl resume`` sends the
  finished trials this way, so the search continues with its history and re-trains none of them.

``classArgs`` are the strategy's keyword arguments (:data:`~nni_diffusionnag.search.config.FIELDS`),
validated by :class:`DiffusionNAGClassArgsValidator`, which is derived from that configuration;
constraints go by name (``constraints: ['params<=0.5']``) or by ``'module:callable'``. With
nnictl, after ``nnictl algo register --meta nni_diffusionnag/meta.yml``::

    tuner:
      name: DiffusionNAG
      classArgs: {optimize_mode: maximize, warmup: 4, batch_size: 2, seed: 0}

Without registering, use ``tuner: {codeDirectory: ., className: nni_diffusionnag.tuner.DiffusionNAGTuner}``.

torch is imported at the first ``update_search_space``, not when the tuner is built: NNI's manager
gives the dispatcher 10 s to connect, and the dispatcher builds the tuner before it connects. Give
``prior`` as an absolute path: the dispatcher runs in the experiment's log directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import nni
from nni.tuner import Tuner
from nni.utils import ClassArgsValidator

from ..search.config import FIELDS, SearchConfig

__all__ = ["DiffusionNAGTuner", "DiffusionNAGClassArgsValidator"]

_logger = logging.getLogger(__name__)

# settings that only make sense from Python (objects, not YAML values)
_PYTHON_ONLY = ("dataset",)


class DiffusionNAGClassArgsValidator(ClassArgsValidator):
    """Validates the ``classArgs`` of :class:`DiffusionNAGTuner` with the search configuration's
    own rules: a ``ValueError`` naming the key, the value found and what is allowed."""

    def validate_class_args(self, **kwargs: Any) -> None:
        _config_from_class_args(kwargs)


def _config_from_class_args(class_args: Mapping[str, Any]) -> SearchConfig:
    python_only = sorted(set(class_args) & set(_PYTHON_ONLY))
    if python_only:
        raise ValueError(f"DiffusionNAG classArgs: {python_only} can only be given from Python (DiffusionNAG "
                         "strategy); valid classArgs: " + str(sorted(set(FIELDS) - set(_PYTHON_ONLY))))
    args = dict(class_args)
    try:
        return SearchConfig.from_kwargs(**args)
    except ValueError as err:
        raise ValueError(str(err).replace("DiffusionNAG: unknown argument(s)", "DiffusionNAG: unknown classArgs")
                         .replace("valid arguments:", "valid classArgs:")) from None


def _content(search_space: Mapping[str, Any]) -> str:
    """The search space with its dict keys sorted: equal for the same space written in another
    key order (the order of a ``choice`` list stays: it is the order of its options)."""
    try:
        return json.dumps(search_space, sort_keys=True, default=repr)
    except TypeError:  # keys of several types cannot be sorted: compare as written
        return repr(search_space)


class DiffusionNAGTuner(Tuner):
    """DiffusionNAG (An et al., ICLR 2024) as an NNI tuner over any legacy search space.

    Parameters
    ----------
    optimize_mode
        ``'maximize'`` or ``'minimize'`` the trial metric.
    seed
        Random seed; one is drawn and logged if None.
    **class_args
        Any other setting of :class:`~nni_diffusionnag.DiffusionNAG` by name (``batch_size``,
        ``warmup``, ``acquisition``, ``kappa``, ``discretize``, ``constraints``, ``prior``,
        ``device``, ``meta_predictor``...); None means the default. Unknown or invalid ones raise
        ``ValueError`` here, before any trial.
    """

    def __init__(self, optimize_mode: str = "maximize", seed: Optional[int] = None, **class_args: Any) -> None:
        self.config = _config_from_class_args({"optimize_mode": optimize_mode, "seed": seed, **class_args})
        self.core: Any = None  # nni_diffusionnag.search.core.SearchCore, built by update_search_space
        self._served: Dict[int, Any] = {}  # parameter id -> parameters, for every id served
        self._deferred: List[Any] = []  # import_data before the search space: replayed with it
        self._content: Optional[str] = None  # the search space in use, keys sorted (see _content)

    @property
    def space(self) -> Any:
        return self.core.space if self.core is not None else None

    # --- set-up --------------------------------------------------------------------------------
    def update_search_space(self, search_space: Mapping[str, Any]) -> None:
        """Encode the search space; an unsupported one raises ``UnsupportedSpaceError`` naming the label.

        The same space again (``nnictl update searchspace`` with equal content, its keys in any
        order) keeps the history; a different one starts the search over.
        """
        from ..search.core import SearchCore
        from ..space.legacy import space_for_search_space

        space = space_for_search_space(search_space, discretize=self.config.prior.discretize)
        content = _content(search_space)
        if self.core is not None and (content == self._content or (
                space.labels == self.core.space.labels and space.signature() == self.core.space.signature())):
            _logger.info("DiffusionNAGTuner: search space unchanged; the search goes on")
            return
        self._content = content
        if self.core is not None:
            _logger.warning("DiffusionNAGTuner: the search space changed; the search starts over")
        self.core = SearchCore(space, self.config)
        checkpoint = os.environ.get("NNI_CHECKPOINT_DIRECTORY")  # the dispatcher's: <experiment dir>/checkpoint
        if checkpoint:
            from ..search.core import PREDICTIONS_FILE

            self.core.prediction_log = Path(checkpoint) / PREDICTIONS_FILE
        self._served.clear()
        deferred, self._deferred = self._deferred, []
        if deferred:
            self.import_data(deferred)

    def _require_core(self) -> Any:
        if self.core is None:
            raise RuntimeError("DiffusionNAGTuner: update_search_space() must be called first")
        return self.core

    # --- proposals -----------------------------------------------------------------------------
    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> Dict[str, Any]:
        """One new architecture as NNI parameters.

        Raises
        ------
        nni.NoMoreTrialError
            When ``patience`` proposal rounds in a row produced nothing new.
        """
        core = self._require_core()
        proposal = core.propose(1)
        if not proposal:
            raise nni.NoMoreTrialError(f"DiffusionNAG: no new architecture after {self.config.loop.patience} "
                                       f"proposal rounds ({core.num_submitted} generated so far)")
        self._served[parameter_id] = proposal[0]
        _logger.debug("parameter %s: %s", parameter_id, proposal[0])
        return proposal[0]

    # --- results -------------------------------------------------------------------------------
    def _parameters_of(self, parameter_id: int, parameters: Any) -> Any:
        try:
            self.core.key_of(parameters)
            return parameters
        except (ValueError, TypeError, KeyError, AttributeError):
            return self._served.get(parameter_id)

    def receive_trial_result(self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any) -> None:
        """Record a final metric (a number or a dict with a numeric ``'default'``); unusable ones
        count as a failure of that architecture and are logged."""
        core = self._require_core()
        params = self._parameters_of(parameter_id, parameters)
        if params is None:
            _logger.warning("DiffusionNAGTuner: ignoring the result of parameter %s: %r is not an architecture of "
                            "this search space", parameter_id, parameters)
            return
        core.observe(params, value)

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A failed trial is recorded as a failure, and the search goes on.

        NNI keys this call by the parameter id the trial was *assigned*, which at trial
        concurrency > 1 can be another trial's (nni#5726; docs/design.md, "NNI 3.0 defects").
        Results come from ``receive_trial_result``, keyed by the true id, so they are not affected.
        """
        params = self._served.get(parameter_id)
        if not success and self.core is not None and params is not None:
            self.core.fail(params, f"trial of parameter {parameter_id} failed")

    def import_data(self, data: Any) -> None:
        """Replay earlier results ``[{'parameter': {...}, 'value': metric}, ...]``.

        ``nnictl resume`` calls this with the finished trials, ``nnictl experiment import`` too.
        The architectures join the history and are never proposed again. Records that do not
        decode, or whose values are unusable, are skipped with a warning.
        """
        if isinstance(data, str):
            data = nni.load(data)
        if self.core is None:
            self._deferred.extend(data)
            _logger.info("DiffusionNAGTuner: %d records will be imported with the search space", len(data))
            return
        imported, skipped = 0, []
        for record in data:
            if isinstance(record, str):
                record = nni.load(record)
            params = record.get("parameter") if isinstance(record, Mapping) else None
            value = record.get("value") if isinstance(record, Mapping) else None
            if isinstance(value, str):
                try:
                    value = nni.load(value)
                except Exception:  # noqa: BLE001 - an undecodable string is just unusable
                    pass
            try:
                recorded = self.core.observe(params, value)  # ValueError & co: not of this search space
            except (ValueError, TypeError, KeyError, AttributeError):
                recorded = None
            if recorded is None:
                skipped.append(record)
            else:
                imported += 1
        _logger.info("DiffusionNAGTuner: imported %d records (%d skipped)", imported, len(skipped))
        if skipped:
            _logger.warning("DiffusionNAGTuner: skipped records (not of this search space or unusable value): %s",
                            skipped[:5])

    # --- inspection ----------------------------------------------------------------------------
    def history(self) -> List[Dict[str, Any]]:
        """Results received so far: ``[{'sample': ..., 'metric': ...}]`` in arrival order."""
        return self.core.history() if self.core is not None else []
