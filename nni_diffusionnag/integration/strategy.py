"""``DiffusionNAG``: an NNI 3.0 exploration strategy that generates architectures with guided diffusion.

A thin adapter over the NNI-free :class:`~nni_diffusionnag.search.core.SearchCore`, which owns the
search (docs/design.md, "The BO loop"). This class only speaks NNI:

- ``_initialize`` encodes the model space as graphs
  (:func:`~nni_diffusionnag.integration.mutables.space_for_model`) and builds the core;
- ``_run`` asks the core for one architecture whenever a worker is idle, turns it into a model
  with ``model_space.freeze(sample)`` (which checks the space's constraints; a refusal is told to
  the core as a rejection) and submits it to the engine;
- results come from **FinalMetric** events, whose model is the true one even when NNI's local
  training service swaps trials at concurrency > 1 (TrainingEnd can be mislabelled, nni#5726;
  docs/design.md, "NNI 3.0 defects"); failed trials are told to the core, and the search goes on.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any, Dict, List, Optional

from . import compat

compat.install()

from nni.mutable import SampleValidationError  # noqa: E402
from nni.nas.execution import ExecutionEngine, TrainingServiceExecutionEngine  # noqa: E402
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent  # noqa: E402
from nni.nas.space import ExecutableModelSpace, ModelStatus  # noqa: E402
from nni.nas.strategy.base import Strategy  # noqa: E402

from ..search.config import SearchConfig  # noqa: E402
from ..search.core import SearchCore, scalar_metric  # noqa: E402
from .mutables import space_for_model  # noqa: E402

__all__ = ["DiffusionNAG", "scalar_metric"]

_logger = logging.getLogger(__name__)

# Trial statuses of the NNI manager's database that it runs (again) after a resume: NNI 3.0 requeues
# WAITING/RUNNING trials and records them as ADD_RESUMED (nni_node/core/nnimanager.js).
_MANAGER_WILL_RUN = frozenset({"WAITING", "RUNNING", "UNKNOWN", "ADD_RESUMED"})


class DiffusionNAG(Strategy):
    """DiffusionNAG (An et al., ICLR 2024) as an NNI exploration strategy.

    Every argument is checked when the strategy is built (a typo, a NaN, a missing file, a CUDA
    device this machine lacks: a ``ValueError`` naming it), before any trial runs.

    Parameters
    ----------
    config
        A :class:`~nni_diffusionnag.search.config.SearchConfig`; or give its settings by their flat
        names as keyword arguments instead:
    prior
        A prior checkpoint path, or None: the prior shipped for the space, else the closed-form
        prior of the space's decisions (nothing trained; see ``prior_kind``).
    prior_kind
        ``'auto'``, ``'learned'`` or ``'exact'`` (:class:`~nni_diffusionnag.search.config.PriorConfig`).
    prior_time_budget
        Wall-clock bound of training a prior on the fly (``prior_kind='learned'``), seconds.
    discretize
        Bins for numerical mutables (``nni.uniform``...): an int for all of them or
        ``{label: n_bins}``; without it such a space is refused with an error naming the label.
    batch_size, warmup, n_candidates, patience, seed, threads
        The loop (:class:`~nni_diffusionnag.search.config.LoopConfig`).
    scale, acquisition, kappa, optimize_mode
        Guidance and ranking (:class:`~nni_diffusionnag.search.config.AcquisitionConfig`); kappa
        0.3 reached the NB201 optimum faster than 1.0 in our runs (docs/benchmarks.md §3); scale
        None picks 0.15 for a one-objective search from scratch with the GNN ensemble and 0.3
        elsewhere (§3, 'Guidance scale').
    constraints
        Cost budgets: :class:`~nni_diffusionnag.search.generator.Constraint` objects, factories
        ``(graph_space, model_space) -> Constraint`` (e.g.
        :func:`nni_diffusionnag.properties.mobilenetv3.mobilenetv3_budget`), named budgets
        (``'params<=0.5'``) or ``'module:callable'``.
    surrogate, sampler
        Surrogate ensemble and predictor-corrector settings (dataclasses or dicts of their fields).
    device
        Generator device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda:1'``...
    meta_predictor, meta_adapt_steps, dataset
        Transfer from earlier tasks (:class:`~nni_diffusionnag.search.config.TransferConfig`).
    objectives
        Objectives beside the trial metric, for a Pareto-front search
        (:class:`~nni_diffusionnag.search.config.Objective`): ``'params'``/``'flops'`` where the
        space has a cost model, or keys the trials report in their final dict
        (``'latency_ms:min'``); see :meth:`pareto_front`.

    Examples
    --------
    >>> from nni.nas.experiment import NasExperiment
    >>> from nni.nas.hub.pytorch import NasBench201
    >>> exp = NasExperiment(NasBench201(), evaluator, DiffusionNAG(batch_size=8))  # doctest: +SKIP
    """

    def __init__(self, config: Optional[SearchConfig] = None, **settings: Any) -> None:
        super().__init__()
        if config is not None and settings:
            raise ValueError(f"DiffusionNAG: give either config= or settings, not both (got {sorted(settings)})")
        self.config = config if config is not None else SearchConfig.from_kwargs(**settings)
        self.core: Optional[SearchCore] = None
        self._pending_state: Optional[Dict[str, Any]] = None  # load_state_dict before initialize
        self._running: Dict[int, ExecutableModelSpace] = {}  # strong refs: the engine keeps only weakrefs
        self._running_lock = threading.Lock()
        self.persist: Optional[Any] = None  # set by DiffusionNAGExperiment: save after every result
        self.prediction_log: Optional[Any] = None  # set by DiffusionNAGExperiment: for `nni-diffusionnag report`
        self._warned_no_metric = False
        self._reported: set = set()  # models whose FinalMetric arrived

    def extra_repr(self) -> str:
        loop, acq = self.config.loop, self.config.acquisition
        seed = self.core.seed if self.core is not None else loop.seed
        # None until the space is known: the defaults depend on the surrogate it gets (search/core.py)
        batch_size = self.core.batch_size if self.core is not None else loop.batch_size
        warmup = self.core.warmup if self.core is not None else loop.warmup
        scale = self.core.scale if self.core is not None else acq.scale
        return (f"batch_size={batch_size}, warmup={warmup}, scale={scale}, "
                f"acquisition={acq.acquisition!r}, optimize_mode={acq.optimize_mode!r}, seed={seed}")

    # --- views of the core -----------------------------------------------------------------------
    @property
    def space(self) -> Any:
        """The graph encoding of the model space (after initialisation)."""
        return self.core.space if self.core is not None else None

    @property
    def generator(self) -> Any:
        """The guided generator (prior, surrogate, constraints) of the core."""
        return self.core.generator if self.core is not None else None

    @property
    def seed(self) -> Optional[int]:
        return self.core.seed if self.core is not None else self.config.loop.seed

    def history(self) -> List[Dict[str, Any]]:
        """Results received so far: ``[{'sample': ..., 'metric': ...}]`` in arrival order."""
        return self.core.history() if self.core is not None else []

    def pareto_front(self) -> List[Dict[str, Any]]:
        """The non-dominated results over the trial metric and the ``objectives``:
        ``[{'sample': ..., 'objectives': {'default': ..., 'params': ...}}]``, best default first
        (``export_top_models`` still ranks by the default metric alone, as NNI defines it)."""
        return self.core.pareto_front() if self.core is not None else []

    # --- lifecycle -----------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        space = space_for_model(model_space, self.config.prior.discretize)
        self.core = SearchCore(space, self.config, model_space=model_space)
        self.core.persist = self.persist
        self.core.prediction_log = self.prediction_log
        if self._pending_state is not None:
            self.core.load_state_dict(self._pending_state)
            self._pending_state = None
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        return model_space

    def _adopt_manager_trials(self, engine: TrainingServiceExecutionEngine) -> None:
        """On a resume, take over what the NNI manager knows and the restored state does not.

        The state on disk holds every result the strategy received. A trial still running when the
        process died is re-run by the manager on resume, under its old parameter id, which the new
        engine does not know: NNI would drop its metric, and the strategy, which lost it, would
        propose the same architecture again (the RNG is restored too). So its model is registered
        with the engine and counted as submitted. A trial that finished while nobody listened is
        recorded from the manager's database (metric or failure), never trained again.
        """
        import nni

        adopted = recovered = 0
        for trial in engine.nodejs_binding.list_trial_jobs():
            if len(trial.hyperParameters) != 1:
                continue  # not submitted by a NAS engine
            param = trial.hyperParameters[0]
            model = nni.load(nni.dump(param.parameters))  # as NNI's own list_models() rebuilds it
            sample = getattr(model, "sample", None)
            if not isinstance(model, ExecutableModelSpace) or sample is None:
                continue
            if not self.core.mark_submitted(sample):
                continue  # its result (or failure) is in the restored state, or it is adopted already
            if trial.status in _MANAGER_WILL_RUN:
                with self._running_lock:
                    self._running[id(model)] = model
                # NNI 3.0 has no public way to attach a model to a parameter id it did not submit
                engine._models[param.parameter_id] = weakref.ref(model)
                adopted += 1
            else:
                if trial.status == "SUCCEEDED" and trial.finalMetricData:
                    self.core.observe(sample, trial.finalMetricData[-1].data)
                else:
                    self.core.fail(sample, f"trial {trial.trialJobId} ended {trial.status} while the strategy was down")
                recovered += 1
        if adopted or recovered:
            _logger.warning("DiffusionNAG: from the NNI manager: %d trial(s) it runs again after the resume, adopted; "
                            "%d that ended while the strategy was down, recorded; none is trained twice",
                            adopted, recovered)

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def _run(self) -> None:
        if isinstance(self.engine, TrainingServiceExecutionEngine):
            self._adopt_manager_trials(self.engine)  # after NNI restored the state (resume)
        while self.wait_for_resource():
            proposal = self.core.propose(1)
            if not proposal:
                break  # exhausted: the core said why
            sample = proposal[0]
            try:
                model = self.model_space.freeze(sample)  # validates, constraints included
            except (SampleValidationError, ValueError) as err:
                self.core.reject(sample, str(err))
                continue
            with self._running_lock:
                self._running[id(model)] = model
            self.engine.submit_models(model)
        self.engine.wait_models()

    # --- events (engine threads: keep short) ---------------------------------------------------
    def _had_metric(self, model: ExecutableModelSpace) -> bool:
        with self._running_lock:  # ids are reused once a model is gone: forget it at its end
            reported = id(model) in self._reported
            self._reported.discard(id(model))
        return reported

    def _forget(self, model: ExecutableModelSpace) -> None:
        with self._running_lock:
            self._running.pop(id(model), None)

    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        self._forget(event.model)
        with self._running_lock:
            self._reported.add(id(event.model))
        self.core.observe(event.model.sample, event.metric)

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        self._forget(event.model)
        if event.status == ModelStatus.Failed:
            self.core.fail(event.model.sample, "trial failed")
        elif event.status == ModelStatus.Trained and not self._had_metric(event.model):
            if not self._warned_no_metric:
                self._warned_no_metric = True
                _logger.warning("DiffusionNAG: a trial ended without a final metric. The evaluator must call "
                                "nni.report_final_result(score): NNI ignores a score the function returns")
            self.core.fail(event.model.sample, "no final metric reported")

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        if self.core is None:
            return dict(self._pending_state or {})
        return self.core.state_dict()

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if self.core is None:
            self._pending_state = dict(state_dict)
        else:
            self.core.load_state_dict(state_dict)
