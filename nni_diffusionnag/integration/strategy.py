"""``DiffusionNAG``: an NNI 3.0 exploration strategy that generates architectures with guided diffusion.

The loop (a BO loop whose candidate generator is the guided diffusion prior):

1. the first ``warmup`` architectures are drawn from the unguided prior (it has learned the
   space, so these are a spread-out sample);
2. afterwards, whenever the queue is empty, the surrogate ensemble is refitted on every result
   received so far and a batch is generated with guidance by the acquisition (UCB by default) of
   that surrogate and by the constraints, de-duplicated against everything submitted, ranked by
   the acquisition, and queued;
3. each queued graph becomes an NNI sample, ``model_space.freeze(sample)``, and is submitted to the
   engine when a worker is idle.

Results are recorded from **FinalMetric** events, whose parameter id is the true one even when
NNI's local training service swaps trials at concurrency > 1 (TrainingEnd can be mislabelled,
NNI_NOTES §3.5). Failed trials and None/NaN/inf or dict-without-'default' metrics are logged and
skipped; the search goes on. Refits happen in the strategy thread at proposal time, never in the
engine's callback thread, so callbacks stay short and submission is never blocked by them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import compat

compat.install()

from nni.mutable import SampleValidationError  # noqa: E402
from nni.nas.execution import ExecutionEngine  # noqa: E402
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent  # noqa: E402
from nni.nas.space import ExecutableModelSpace, ModelStatus  # noqa: E402
from nni.nas.strategy.base import Strategy  # noqa: E402

from ..diffusion.guidance import GuidanceTerm  # noqa: E402
from ..search.generator import DEFAULT_SCALE, Constraint, GuidedGenerator  # noqa: E402
from ..nn.surrogate import SurrogateConfig, SurrogateEnsemble  # noqa: E402
from ..prior.model import DiffusionPrior, SamplerConfig  # noqa: E402
from ..space import GraphSpace, space_for_model  # noqa: E402

__all__ = ["DiffusionNAG", "scalar_metric"]

_logger = logging.getLogger(__name__)

Key = Tuple[int, ...]


def scalar_metric(metric: Any) -> Optional[float]:
    """The number to optimise from a reported metric, or None if it is unusable.

    A dict needs a ``'default'`` entry (NNI's convention); None, NaN and inf are unusable.
    """
    if isinstance(metric, dict):
        if "default" not in metric:
            return None
        metric = metric["default"]
    try:
        value = float(metric)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class DiffusionNAG(Strategy):
    """DiffusionNAG (An et al., ICLR 2024) as an NNI exploration strategy.

    Parameters
    ----------
    prior
        A prior checkpoint path, or None: the prior shipped for the space, else one cached for it
        earlier, else one trained now from samples of the space (within ``prior_time_budget``
        seconds, with a progress bar) and cached for next time (``$NNI_DIFFUSIONNAG_CACHE``,
        default ``~/.cache/nni-diffusionnag/priors``).
    prior_time_budget
        Wall-clock bound of that training, seconds.
    discretize
        Bins for numerical mutables (``nni.uniform``...): an int for all of them or
        ``{label: n_bins}``; without it such a space is refused with an error naming the label.
    batch_size
        Architectures proposed per generation round (more = fewer refits, less adaptivity).
    warmup
        Architectures drawn from the unguided prior before the surrogate guides.
    n_candidates
        Graphs generated per round before ranking.
    scale
        Guidance scale of the acquisition (relative to the prior's score, see
        :mod:`nni_diffusionnag.diffusion.guidance`); 0 = unguided throughout.
    acquisition
        ``'ucb'``, ``'ei'`` or ``'mean'``.
    kappa
        Exploration weight of UCB (0.3 reached the NB201 optimum faster than 1.0 in our runs,
        see docs/benchmarks.md).
    optimize_mode
        ``'maximize'`` or ``'minimize'`` the metric.
    constraints
        Cost budgets: :class:`~nni_diffusionnag.search.generator.Constraint` objects (e.g.
        :func:`nni_diffusionnag.properties.budget_constraint` for NB201) or factories
        ``(graph_space, model_space) -> Constraint`` resolved once the space is known (e.g.
        :func:`nni_diffusionnag.properties.mobilenetv3.mobilenetv3_budget`).
    surrogate
        Surrogate ensemble settings.
    sampler
        Predictor-corrector settings.
    device
        Generator device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda:1'``...
    seed
        Random seed; one is drawn and logged if None.
    patience
        Generation rounds in a row that may yield nothing new before the search stops.
    meta_predictor
        Path of a meta-surrogate checkpoint (``nni-diffusionnag train-meta``, :mod:`nni_diffusionnag.transfer.meta`)
        trained on earlier tasks of the same space (another space: ``SpaceMismatchError``). With it
        there is no unguided warmup (``warmup`` is ignored): the first batch is guided and ranked by
        the meta-surrogate, and every refit fine-tunes a fresh copy of it on the results so far.
    meta_adapt_steps
        Fine-tuning steps of that refit with 2 results; grows by 10 per further result up to
        ``surrogate.steps``, so the target's own data weigh more as they accumulate.
    dataset
        The target task's images (a ``torch.utils.data.Dataset``/``DataLoader`` of
        ``(image, label)`` or a pair of tensors ``(x, y)``); then ``meta_predictor`` is a
        *dataset-aware* meta-predictor (:mod:`nni_diffusionnag.transfer.dataset_encoding`). The dataset is
        encoded once (8 random draws of its images, predictions averaged); the prediction steers
        the first batch (no unguided warm-up; ranked by the same predictor) with a guidance scale
        that decays as ``2 / (2 + results)`` while the online surrogate, fitted on the target's
        own results, takes over.

    Examples
    --------
    >>> from nni.nas.experiment import NasExperiment
    >>> from nni.nas.hub.pytorch import NasBench201
    >>> exp = NasExperiment(NasBench201(), evaluator, DiffusionNAG(batch_size=8))  # doctest: +SKIP
    """

    def __init__(self, *, prior: Optional[str] = None, batch_size: int = 5, warmup: int = 10, n_candidates: int = 100,
                 scale: float = DEFAULT_SCALE, acquisition: str = "ucb", kappa: float = 0.3,
                 optimize_mode: str = "maximize", constraints: Sequence[Constraint] = (),
                 surrogate: SurrogateConfig = SurrogateConfig(), sampler: SamplerConfig = SamplerConfig(num_steps=30),
                 device: str = "auto", seed: Optional[int] = None, patience: int = 3,
                 prior_time_budget: float = 120.0, discretize: Any = None, meta_predictor: Optional[str] = None,
                 meta_adapt_steps: int = 60, dataset: Any = None) -> None:
        super().__init__()
        if optimize_mode not in ("maximize", "minimize"):
            raise ValueError(f"optimize_mode must be 'maximize' or 'minimize', got {optimize_mode!r}")
        if batch_size < 1 or warmup < 0 or n_candidates < batch_size:
            raise ValueError(f"need batch_size >= 1, warmup >= 0, n_candidates >= batch_size; got "
                             f"{batch_size}, {warmup}, {n_candidates}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
            _logger.info("DiffusionNAG: no seed given, using seed=%d", seed)
        self.prior_path, self.batch_size, self.warmup, self.n_candidates = prior, batch_size, warmup, n_candidates
        self.scale, self.acquisition, self.kappa, self.optimize_mode = scale, acquisition, kappa, optimize_mode
        self.constraints, self.surrogate_config, self.sampler = list(constraints), surrogate, sampler
        self.device, self.seed, self.patience = device, seed, patience
        self.prior_time_budget, self.discretize = prior_time_budget, discretize
        if dataset is not None and not meta_predictor:
            raise ValueError("dataset= needs meta_predictor=PATH, a dataset-aware meta-predictor to read it with")
        # with a dataset the checkpoint is a dataset-aware meta-predictor, else a task-table one
        self.dataset_meta, self.dataset = (meta_predictor, dataset) if dataset is not None else (None, None)
        self.meta_predictor = None if dataset is not None else meta_predictor
        self.meta_adapt_steps, self.meta = meta_adapt_steps, None
        if meta_predictor:
            self.warmup = 0  # the meta-predictor guides from the first proposal on
        self._dataset_value: Optional[Any] = None  # f(x_t, t) of the dataset-aware predictor, once encoded
        self._lock = threading.Lock()
        self._history: List[Tuple[Key, float]] = []  # (graph, metric as reported), in arrival order
        self._failed: List[Tuple[Key, str]] = []
        self._submitted: Dict[Key, int] = {}  # graph -> submission index
        self._rejected: set = set()  # graphs the model space refused (constraints): never proposed again
        self._running: Dict[int, ExecutableModelSpace] = {}  # strong refs: the engine only keeps weakrefs
        self._queue: Deque[np.ndarray] = deque()
        self._fitted_on = 0
        self._surrogate_state: Optional[Dict[str, torch.Tensor]] = None
        self.space: Optional[GraphSpace] = None
        self.generator: Optional[GuidedGenerator] = None

    def extra_repr(self) -> str:
        return (f"batch_size={self.batch_size}, warmup={self.warmup}, scale={self.scale}, "
                f"acquisition={self.acquisition!r}, optimize_mode={self.optimize_mode!r}, seed={self.seed}")

    # --- lifecycle -----------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        self.space = space_for_model(model_space, self.discretize)
        if self.prior_path:
            prior = DiffusionPrior.load(self.prior_path, self.space, self.device)
        else:
            from ..prior.cache import prior_for_space

            prior = prior_for_space(self.space, model_space, time_budget_s=self.prior_time_budget,
                                    device=self.device, seed=self.seed)
        # A constraint may be a factory of the space (its cost model depends on the encoding).
        constraints = [c if isinstance(c, Constraint) else c(self.space, model_space) for c in self.constraints]
        self.generator = GuidedGenerator(prior, self.surrogate_config, self.sampler, constraints, seed=self.seed)
        if self.meta_predictor:
            from ..transfer.meta import load_meta

            self.meta = load_meta(self.meta_predictor, self.space, device=str(prior.device))
            if self.meta.sde.kind != prior.sde.kind:
                raise ValueError(f"meta-surrogate '{self.meta_predictor}' is noise-aware for a {self.meta.sde.kind} "
                                 f"SDE but the prior uses {prior.sde.kind}")
            self.generator.surrogate_config = self.meta.config  # same shape: resume restores into it
            self.generator.surrogate = self.meta.copy_surrogate()
        if self.dataset_meta:
            self._init_dataset_meta(prior)
        if self._surrogate_state is not None:  # load_state_dict came first (resume)
            self._restore_surrogate()
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)
        _logger.info("DiffusionNAG on %s with prior %s (%s)", self.space, self.prior_path or "shipped", prior.device)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._on_final_metric)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._on_training_end)

    def _run(self) -> None:
        empty_rounds = 0
        while self.wait_for_resource():
            if not self._queue:
                batch = self._propose()
                if len(batch) == 0:
                    empty_rounds += 1
                    if empty_rounds >= self.patience:
                        _logger.warning("DiffusionNAG: %d generation rounds produced no new architecture; stopping",
                                        empty_rounds)
                        break
                    continue
                empty_rounds = 0
                self._queue.extend(batch)
            types = self._queue.popleft()
            key = self.space.key(types)
            if key in self._submitted or key in self._rejected:
                continue
            try:
                sample = self.space.types_to_sample(types)
                model = self.model_space.freeze(sample)  # validates, constraints included
            except (SampleValidationError, ValueError) as err:
                _logger.warning("generated graph rejected by the model space (%s)", err)
                self._rejected.add(key)
                continue
            with self._lock:
                self._submitted[key] = len(self._submitted)
                self._running[id(model)] = model
            self.engine.submit_models(model)
        self.engine.wait_models()

    # --- proposals -----------------------------------------------------------------------------
    def _propose(self) -> np.ndarray:
        t0 = time.time()
        with self._lock:
            history = list(self._history)
            exclude = set(self._submitted) | self._rejected
        n_warm = max(0, self.warmup - len(self._submitted))
        rank_fn = None
        if self._dataset_value is not None:
            # the dataset-aware prediction fades as the target's own results accumulate
            weight = 2.0 / (2.0 + len(history))
            self.generator.targets = [GuidanceTerm(self._dataset_value, self.scale * weight, "dataset-meta")]
            rank_fn = self._dataset_rank
        if self.meta is not None:
            self._refit_from_meta(history)
            batch = self.generator.propose(self.batch_size, exclude, self.n_candidates, self.scale,
                                           self.acquisition, self.kappa)
            how = "meta-guided"
        elif n_warm == 0 and len(history) >= 2:
            if len(history) > self._fitted_on:
                self.generator.fit(np.array([k for k, _ in history]), self._to_maximise([v for _, v in history]))
                self._fitted_on = len(history)
            batch = self.generator.propose(self.batch_size, exclude, self.n_candidates, self.scale,
                                           self.acquisition, self.kappa)
            how = "guided"
        else:
            k = n_warm or self.batch_size
            if rank_fn is not None:
                batch = self.generator.propose(k, exclude, self.n_candidates, scale=0.0, rank_fn=rank_fn)
                how = "dataset-guided"
            else:
                batch = self.generator.propose(k, exclude, max(k, self.n_candidates // 4), scale=0.0)
                how = "unguided"
        _logger.info("DiffusionNAG: %d %s proposals in %.2f s (%d results so far)", len(batch), how,
                     time.time() - t0, len(history))
        return batch

    def _to_maximise(self, values: Sequence[float]) -> np.ndarray:
        """Metrics as the generator sees them: it always maximises."""
        return (1.0 if self.optimize_mode == "maximize" else -1.0) * np.asarray(values, dtype=np.float64)

    def _init_dataset_meta(self, prior: DiffusionPrior) -> None:
        from ..transfer.dataset_encoding import load_dataset_meta

        predictor = load_dataset_meta(self.dataset_meta, self.space)  # another space: SpaceMismatchError
        if predictor.sde.kind != prior.sde.kind:
            raise ValueError(f"dataset meta-predictor '{self.dataset_meta}' is noise-aware for a "
                             f"{predictor.sde.kind} SDE but the prior uses {prior.sde.kind}")
        # 8 random draws of the target's images, predictions averaged (bad shapes: a clear ValueError here)
        tasks = torch.stack([predictor.encode(self.dataset, seed=self.seed + i) for i in range(8)]).to(prior.device)
        model, sde = predictor.model.to(prior.device).eval(), prior.sde
        self._dataset_value = lambda x, t: model.forward_mean(x, sde.noise_level(t), tasks)
        _logger.info("DiffusionNAG: target dataset encoded for the meta-predictor %s", self.dataset_meta)

    def _dataset_rank(self, types: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = self.generator.features(types)
            t = torch.full((len(x),), self.sampler.eps, device=x.device)
            return self._dataset_value(x, t).cpu().numpy()

    def _refit_from_meta(self, history: List[Tuple[Key, float]]) -> None:
        """Blend of transfer and online knowledge: each refit warm-starts from the meta-surrogate's
        weights (not from the previous refit) and fine-tunes on the results so far, with more steps
        as results accumulate. Chosen over a weighted sum of two predictors because one network
        keeps guidance and ranking consistent, and the meta weights fill in wherever the few target
        results say nothing; the labels are rank-normalised like the meta-training ones."""
        if len(history) < 2 or len(history) <= self._fitted_on:
            return
        from ..transfer.meta import _standardise

        values = _standardise(self._to_maximise([v for _, v in history]), self.meta.info.get("labels", "zscore"))
        steps = min(max(self.surrogate_config.steps, self.meta_adapt_steps),
                    self.meta_adapt_steps + 10 * (len(history) - 2))
        self.generator.surrogate = self.meta.adapt(np.array([k for k, _ in history]), values, steps=steps,
                                                   seed=self.seed + len(history))
        self.generator.best_value = float(values.max())
        self._fitted_on = len(history)

    # --- events (engine threads: keep short) ---------------------------------------------------
    def _model_key(self, model: ExecutableModelSpace) -> Key:
        return self.space.key(self.space.sample_to_types(model.sample))

    def _on_final_metric(self, event: FinalMetricEvent) -> None:
        value = scalar_metric(event.metric)
        key = self._model_key(event.model)
        with self._lock:
            self._running.pop(id(event.model), None)
            if value is None:
                self._failed.append((key, f"unusable metric {event.metric!r}"))
                _logger.warning("ignoring the result of %s: metric %r is None/NaN/inf or a dict without 'default'",
                                event.model.sample, event.metric)
                return
            self._history.append((key, value))

    def _on_training_end(self, event: TrainingEndEvent) -> None:
        with self._lock:
            self._running.pop(id(event.model), None)
            if event.status == ModelStatus.Failed:
                self._failed.append((self._model_key(event.model), "trial failed"))
                _logger.warning("trial failed for %s; the search goes on", event.model.sample)

    # --- results and checkpointing -------------------------------------------------------------
    def history(self) -> List[Dict[str, Any]]:
        """Results received so far: ``[{'sample': ..., 'metric': ...}]`` in arrival order."""
        with self._lock:
            return [{"sample": self.space.types_to_sample(k), "metric": v} for k, v in self._history]

    def state_dict(self) -> Dict[str, Any]:
        with self._lock:
            state: Dict[str, Any] = {
                "history": [(list(k), v) for k, v in self._history],
                "failed": [(list(k), why) for k, why in self._failed],
                "submitted": [list(k) for k in self._submitted],
                "seed": self.seed,
                "generator_calls": self.generator._calls if self.generator else 0,
                "torch_rng": torch.get_rng_state(),
            }
        sur = self.generator.surrogate if self.generator else None
        if sur is not None:
            state["surrogate"] = {k: v.detach().cpu() for k, v in sur.state_dict().items()}
            state["fitted_on"] = self._fitted_on
        elif self._surrogate_state is not None:
            state["surrogate"], state["fitted_on"] = self._surrogate_state, self._fitted_on
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        with self._lock:
            self._history = [(tuple(k), float(v)) for k, v in state_dict["history"]]
            self._failed = [(tuple(k), why) for k, why in state_dict.get("failed", [])]
            # models that were still running when the checkpoint was taken are lost: resubmittable
            done = {k for k, _ in self._history} | {k for k, _ in self._failed}
            self._submitted = {k: i for i, k in enumerate(tuple(k) for k in state_dict["submitted"]) if k in done}
            self.seed = state_dict.get("seed", self.seed)
        torch.set_rng_state(state_dict["torch_rng"])
        self._surrogate_state = state_dict.get("surrogate")
        self._fitted_on = state_dict.get("fitted_on", 0)
        if self.generator is not None:
            self.generator._calls = state_dict.get("generator_calls", 0)
            self._restore_surrogate()
        _logger.info("DiffusionNAG state loaded: %d results, %d failures", len(self._history), len(self._failed))

    def _restore_surrogate(self) -> None:
        if self._surrogate_state is None:
            return
        gen = self.generator
        gen.surrogate = SurrogateEnsemble(gen.space.num_types, gen.space.adjacency, gen.surrogate_config,
                                          log_noise=gen.sde.kind == "ve").to(gen.device)
        gen.surrogate.load_state_dict(self._surrogate_state)
        gen.surrogate.eval()
        values = [v for _, v in self._history] or [0.0]
        if self.meta is not None:
            from ..transfer.meta import _standardise

            vals = _standardise(self._to_maximise(values), self.meta.info.get("labels", "zscore")) if len(values) > 1 else [0.0]
            gen.best_value = float(np.max(vals))
            return
        gen.best_value = float(self._to_maximise(values).max())
