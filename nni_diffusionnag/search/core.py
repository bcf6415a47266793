"""The search core: everything a DiffusionNAG search is, behind a small ask/tell API, without NNI.

One :class:`SearchCore` owns the history (architectures and their metrics), the failures, the
submitted and rejected sets, the warm-up, the surrogate refits, the guided proposals, the
constraints, transfer from a meta-predictor and its ``state_dict``. The NNI strategy
(:class:`~nni_diffusionnag.DiffusionNAG`) and the NNI tuner
(:class:`~nni_diffusionnag.DiffusionNAGTuner`) are thin adapters over it, the way NNI's
``TpeTuner`` is a shell over its ``suggest`` functions:

- :meth:`SearchCore.propose` ``(k)`` returns up to ``k`` new architectures as samples
  (``{label: value}``) and marks them submitted; an empty list means the search is exhausted
  (``patience`` proposal rounds in a row produced nothing new);
- :meth:`SearchCore.observe` ``(sample, metric)`` records a result, judged by :func:`scalar_metric`;
- :meth:`SearchCore.fail` ``(sample, reason)`` records a failed trial, once per architecture;
- :meth:`SearchCore.reject` ``(sample, reason)`` un-submits an architecture the model space
  refused (a constraint): it is never proposed again;
- :meth:`SearchCore.state_dict` / :meth:`SearchCore.load_state_dict` checkpoint all of it.

The loop behind ``propose`` (docs/design.md, "The BO loop"): the first ``warmup`` architectures
come from the unguided prior; afterwards, whenever the queue of proposals is empty, the
surrogate ensemble is refitted on every result so far, ``n_candidates`` graphs are generated
with guidance by its acquisition (and by the constraints), de-duplicated against everything
submitted or rejected, ranked by the acquisition, and the best ``batch_size`` queued.

Threads: NNI calls results back on its own threads while the strategy proposes. One lock guards
the state; a proposal round works on a snapshot outside it, so recording a result never waits
for a refit, and only one round runs at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..diffusion.guidance import GuidanceTerm
from ..nn.factory import surrogate_kind
from ..nn.targets import standardise, to_metric_units
from ..space.base import GraphSpace
from .config import DEFAULT_SCALE, LOOP_SCALE, SearchConfig, resolve_callable
from .generator import Constraint, GuidedGenerator
from .multiobjective import MultiObjective
from .pareto import pareto_mask

__all__ = ["SearchCore", "scalar_metric", "Key"]

_logger = logging.getLogger(__name__)

#: What the surrogate predicted for each proposal, in the experiment's checkpoint folder (both routes).
PREDICTIONS_FILE = "diffusionnag-predictions.jsonl"
# A proposal round that yields nothing new is followed by one with this many times its candidates
# (SearchCore.propose): tight constraints reject most draws, and patience rounds of a fixed size
# would end a search that still has architectures left.
EMPTY_ROUND_GROWTH = 8

Key = Tuple[int, ...]
Sample = Dict[str, Any]


def scalar_metric(metric: Any) -> Optional[float]:
    """The number to optimise from a reported metric, or None if it is unusable.

    The rule NNI applies to final metrics (``nni.utils.extract_scalar_reward``): a real number, or
    a dict whose ``'default'`` entry is one. Strings (even ``"90.43"``), None, NaN and inf are
    unusable, so a trial NNI marks failed is never recorded as a result here.
    """
    if isinstance(metric, Mapping):
        if "default" not in metric:
            return None
        metric = metric["default"]
    if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
        return None
    value = float(metric)
    return value if math.isfinite(value) else None


def resolve_constraints(specs: Sequence[Any], space: GraphSpace, model_space: Any = None,
                        latency_model: Any = None) -> List[Constraint]:
    """Constraints of the configuration for this space: objects as they are, factories
    ``(graph_space, model_space) -> Constraint`` called, named budgets (``'params<=0.5'``,
    ``'latency<=8ms'`` with ``latency_model``, a dict) and ``'module:callable'`` references
    resolved first."""
    from ..properties.budgets import parse_budget

    out = []
    for spec in specs:
        if isinstance(spec, str) and ":" in spec:
            spec = resolve_callable(spec)
        elif isinstance(spec, (str, Mapping)):
            spec = parse_budget(spec, latency_model)
        c = spec if isinstance(spec, Constraint) else spec(space, model_space)
        if not isinstance(c, Constraint):
            raise TypeError(f"DiffusionNAG: the constraint factory {spec!r} returned {c!r}, not a Constraint")
        out.append(c)
    return out


def check_feasible(space: GraphSpace, constraints: Sequence[Constraint], seed: int = 0,
                   samples: int = 4096) -> None:
    """Refuse constraints that no architecture of the space meets, naming them, before any trial.

    Where the space can be enumerated the check is exact (the smallest cost is reported);
    elsewhere ``samples`` random architectures are tried and, if none fits, the search is
    refused too (the smallest cost seen is reported: a budget that tight is worth a look even if
    some rare architecture would meet it).
    """
    if not constraints:
        return
    every = space.enumerate_types()
    exact = every is not None
    types = every if exact else space.random_types(samples, np.random.default_rng(seed))
    for c in constraints:
        costs = np.asarray(c.exact(types), dtype=np.float64)
        if np.any(costs <= c.budget):
            continue
        how = (f"the smallest of all {len(types):,} architectures of '{space.name}'" if exact
               else f"the smallest of {len(types):,} random architectures of '{space.name}'")
        raise ValueError(f"DiffusionNAG: no architecture meets the constraint {c.name}: {how} costs "
                         f"{costs.min():.6g} (budget {c.budget:g}); raise the budget")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` inside the block (0: unchanged)."""
    before = torch.get_num_threads()
    if not n or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SearchCore:
    """A DiffusionNAG search over one graph space (see the module docstring).

    Parameters
    ----------
    space
        The graph encoding of the search space.
    config
        The validated settings (:class:`~nni_diffusionnag.search.config.SearchConfig`).
    model_space
        The NNI model space, when there is one: a prior trained on the fly keeps only samples it
        ``contains``, and constraint factories may read it. Used through duck typing only.
    prior
        A prior to use instead of the one the configuration names (tests, benchmarks).
    """

    def __init__(self, space: GraphSpace, config: SearchConfig = SearchConfig(), *, model_space: Any = None,
                 prior: Any = None) -> None:
        self.space, self.config = space, config
        seed = config.loop.seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
            _logger.info("DiffusionNAG: no seed given, using seed=%d", seed)
        self.seed: int = seed
        if prior is None:
            prior = self._load_prior(model_space)
        latency_model = config.latency()
        constraints = resolve_constraints(config.constraints, space, model_space, latency_model)
        check_feasible(space, constraints, seed)
        self.generator = GuidedGenerator(prior, config.surrogate, config.prior.sampler, constraints, seed=self.seed)
        self.mo: Optional[MultiObjective] = None
        if config.objectives:  # a cost objective on a space without a cost model fails here, by name
            self.mo = MultiObjective(config.objectives, self.generator, model_space, config.acquisition.optimize_mode,
                                     latency_model)
        self.meta: Any = None
        self._sources = False
        self.source_weights: Optional[Dict[str, float]] = None  # the last refit's, for the log and tests
        self._dataset_value: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None
        if config.transfer.meta_predictor:
            if config.transfer.dataset is not None:
                self._init_dataset_meta(prior)
            else:
                self._init_meta(prior)

        # proposals per refit: the configured ones, else 1 with a GP (a refit costs 0.3-1.2 s) and
        # with the GNN ensemble (about a second) 2 on one objective, 5 on several (a batch picked for
        # hypervolume spreads along the front); config.LoopConfig says why
        kind = surrogate_kind(space, self.generator.surrogate_config)
        self.batch_size = config.loop.batch_size or (1 if kind == "gp" else 5 if config.objectives else 2)
        # unguided architectures first: none with a meta-predictor (it guides at once), else the
        # configured number, else 5 with the GNN ensemble on one objective and 10 with the GP or
        # with several objectives (config.LoopConfig says why)
        default_warmup = 10 if kind == "gp" or config.objectives else 5
        warmup = config.loop.warmup if config.loop.warmup is not None else default_warmup
        self.warmup = 0 if config.transfer.meta_predictor else warmup
        # guidance scale: the configured one, else LOOP_SCALE where it was measured (the GNN ensemble
        # on one objective, from scratch, unconstrained) and DEFAULT_SCALE elsewhere (config.py says why)
        plain = kind == "gnn" and not (config.objectives or config.constraints or config.transfer.meta_predictor)
        self.scale: float = (config.acquisition.scale if config.acquisition.scale is not None
                             else LOOP_SCALE if plain else DEFAULT_SCALE)
        # a batch_size that was set is checked by LoopConfig; the one picked here is checked here
        if config.loop.batch_size is None and config.loop.n_candidates < self.batch_size:
            raise ValueError(f"DiffusionNAG: n_candidates={config.loop.n_candidates} must be >= the batch size "
                             f"{self.batch_size} (batch_size=None picks {self.batch_size} with the {kind} surrogate"
                             f"{' and several objectives' if config.objectives and kind != 'gp' else ''})")
        self._lock = threading.Lock()  # guards the state below
        self._round_lock = threading.Lock()  # one proposal round at a time
        self._history: List[Tuple[Key, float]] = []  # (graph, metric as reported), in arrival order
        self._failed: List[Tuple[Key, str]] = []
        self._done: set = set()  # keys of _history and _failed, for O(1) look-ups
        self._submitted: Dict[Key, int] = {}  # graph -> submission index
        self._rejected: set = set()  # graphs the model space refused: never proposed again
        self._queue: Deque[np.ndarray] = deque()  # proposals of the last round not handed out yet
        self._extras: Dict[Key, Dict[str, float]] = {}  # reported values of the extra objectives
        # LoopConfig.dedup_key: graphs with one key are one architecture (keys cached per graph)
        self._dedup_key = config.loop.dedup_key
        self._ids: Dict[Key, Any] = {}
        self._dedup_warned = False  # dedup_key raised on a sample (then compared as itself): warned once
        if self._dedup_key is not None:
            self._check_dedup_key()
            self.generator.identity = self._identity
        self._warned_missing: set = set()
        self._fitted_on = 0
        self._believed: frozenset = frozenset()  # running trials the last single-objective fit believed
        # (targets, values to maximise) of the last single-objective refit: the surrogate learns the
        # targets (SurrogateConfig.labels), its predictions are mapped back through them for the log
        self._fit_labels: Optional[Tuple[np.ndarray, np.ndarray]] = None
        # Called after every recorded result, failure or rejection (outside the lock): where the
        # search keeps durable state, e.g. DiffusionNAGExperiment's checkpoint. Errors are logged.
        self.persist: Optional[Callable[[], None]] = None
        # Where to append what the surrogate predicted for each guided proposal, one JSON line
        # {"sample", "mean", "std"} in the metric's units (read by `nni-diffusionnag report`); None: nowhere.
        self.prediction_log: Optional[Any] = None
        surrogate = "meta-learned GNN" if self.meta is not None else {"gp": "GP", "gnn": "GNN ensemble"}[kind]
        _logger.info("DiffusionNAG on %s with prior %s (%s), %s surrogate, %d proposal(s) per refit, %d unguided "
                     "first%s", space, getattr(prior, "kind", "learned"), prior.device, surrogate, self.batch_size, self.warmup,
                     f": {config.describe()}" if config.describe() else "")

    # --- set-up --------------------------------------------------------------------------------
    def _check_dedup_key(self) -> None:
        """Call ``dedup_key`` on one sample of the space now, so that a function that fails or
        returns something unhashable is refused before any trial runs."""
        sample = self.space.types_to_sample(self.space.random_types(1, np.random.default_rng(self.seed))[0])
        try:
            hash(self._dedup_key(sample))
        except Exception as err:  # noqa: BLE001 - any failure of a user's function is a setup error
            raise ValueError(f"DiffusionNAG: dedup_key={self._dedup_key!r} must map a sample (a dict such as "
                             f"{sample!r}) to a hashable key; it raised {type(err).__name__}: {err}") from None

    def _identity(self, types: Any) -> Any:
        """What de-duplication compares: the graph's key, or with ``dedup_key`` the user's key of its sample."""
        key = self.space.key(types)
        if self._dedup_key is None:
            return key
        if key not in self._ids:
            sample = self.space.types_to_sample(key)
            try:
                ident = ("dedup_key", self._dedup_key(sample))
                hash(ident)
            except Exception as err:  # noqa: BLE001 - a user's function failing on one sample must not end the search
                # checked on one sample at construction; any other may still fail: compare it as itself
                ident = ("sample", key)
                if not self._dedup_warned:
                    _logger.warning("DiffusionNAG: dedup_key=%r raised %s: %s on %r; such samples are compared as "
                                    "they are (this warning is shown once)", self._dedup_key, type(err).__name__,
                                    err, sample)
                self._dedup_warned = True
            self._ids[key] = ident
        return self._ids[key]

    def _claimed(self) -> set:
        """Identities of every graph submitted, reported or refused (call under the lock)."""
        keys = set(self._submitted) | self._rejected
        return keys if self._dedup_key is None else {self._identity(k) for k in keys}

    def _load_prior(self, model_space: Any) -> Any:
        from ..prior.cache import prior_for_space
        from ..prior.model import DiffusionPrior

        pc = self.config.prior
        if pc.prior:
            return DiffusionPrior.load(pc.prior, self.space, pc.device)
        return prior_for_space(self.space, model_space, time_budget_s=pc.prior_time_budget, device=pc.device,
                               seed=self.seed, kind=pc.prior_kind)

    def _init_meta(self, prior: Any) -> None:
        from ..transfer.meta import load_meta

        path = self.config.transfer.meta_predictor
        self.meta = load_meta(path, self.space, device=str(prior.device))
        self._sources = hasattr(self.meta, "predict_each")  # per-task sources (train-meta --per-task)
        if self.meta.sde.kind != prior.sde.kind:
            raise ValueError(f"meta-surrogate '{path}' is noise-aware for a {self.meta.sde.kind} SDE but the prior "
                             f"uses {prior.sde.kind}")
        if self._sources:
            # the sources are combined by the target's results (transfer/sources.py); the loop's own
            # surrogate kind learns what they miss; before any result: their unweighted consensus
            self.generator.surrogate = self.meta.combine(np.full(len(self.meta.tasks), 1.0 / len(self.meta.tasks)))
            self.generator.best_value = 0.0
            _logger.info("DiffusionNAG: transfer from %d source tasks (%s), weighed by the target's results",
                         len(self.meta.tasks), ", ".join(self.meta.tasks))
            return
        # same shape (a GNN ensemble, whatever 'auto' would pick): resume restores into it
        self.generator.surrogate_config = dataclasses.replace(self.meta.config, kind="gnn")
        self.generator.surrogate = self.meta.copy_surrogate()

    def _init_dataset_meta(self, prior: Any) -> None:
        from ..transfer.dataset_encoding import load_dataset_meta

        path, dataset = self.config.transfer.meta_predictor, self.config.transfer.dataset
        predictor = load_dataset_meta(path, self.space)  # another space: SpaceMismatchError
        if predictor.sde.kind != prior.sde.kind:
            raise ValueError(f"dataset meta-predictor '{path}' is noise-aware for a {predictor.sde.kind} SDE but the "
                             f"prior uses {prior.sde.kind}")
        # 8 random draws of the target's images, predictions averaged (bad shapes: a clear ValueError here)
        tasks = torch.stack([predictor.encode(dataset, seed=self.seed + i) for i in range(8)]).to(prior.device)
        model, sde = predictor.model.to(prior.device).eval(), prior.sde
        self._dataset_value = lambda x, t: model.forward_mean(x, sde.noise_level(t), tasks)
        _logger.info("DiffusionNAG: target dataset encoded for the meta-predictor %s", path)

    # --- ask -----------------------------------------------------------------------------------
    def propose(self, k: int = 1) -> List[Sample]:
        """Up to ``k`` new architectures as samples, each marked submitted.

        Fewer than ``k`` (possibly none) only when ``patience`` proposal rounds in a row produced
        nothing new: the search is exhausted. Each empty round draws :data:`EMPTY_ROUND_GROWTH`
        times the candidates of the one before, so a space whose constraints admit few
        architectures (say 1 in 400 draws) is not mistaken for an exhausted one.
        """
        out: List[Sample] = []
        empty_rounds = 0
        while len(out) < k:
            with self._lock:
                claimed = self._claimed() if self._queue else set()
                while self._queue and len(out) < k:
                    types = self._queue.popleft()
                    key = self.space.key(types)
                    if self._identity(key) in claimed:  # reported or refused since
                        continue
                    self._submitted[key] = len(self._submitted)
                    claimed.add(self._identity(key))
                    out.append(self.space.types_to_sample(types))
            if len(out) >= k:
                break
            if empty_rounds >= self.config.loop.patience:
                _logger.warning("DiffusionNAG: %d proposal rounds in a row produced no new architecture (%d "
                                "submitted so far); the search is exhausted", empty_rounds, len(self._submitted))
                break
            batch = self._round(self.config.loop.n_candidates * EMPTY_ROUND_GROWTH ** empty_rounds)
            with self._lock:
                claimed = self._claimed()
                fresh = [t for t in batch if self._identity(t) not in claimed]
                self._queue.extend(fresh)
            empty_rounds = 0 if fresh else empty_rounds + 1
        return out

    def _round(self, n_candidates: int) -> np.ndarray:
        """One proposal round of ``n_candidates`` per generation: warm-up draws, or a refit followed
        by guided generation."""
        with self._round_lock, _torch_threads(self.config.loop.threads):
            t0 = time.time()
            with self._lock:
                history = list(self._history)
                exclude = self._claimed()
                # trials still running: only the believer refit reads them (LoopConfig.pending)
                pending = ([k for k in self._submitted if k not in self._done]
                           if self.config.loop.pending == "believer" else [])
                n_warm = max(0, self.warmup - len(self._submitted))
            loop, acq, gen = self.config.loop, self.config.acquisition, self.generator
            rank_fn = None
            if self._dataset_value is not None:
                # the dataset-aware prediction fades as the target's own results accumulate
                weight = 2.0 / (2.0 + len(history))
                gen.targets = [GuidanceTerm(self._dataset_value, self.scale * weight, "dataset-meta")]
                rank_fn = self._dataset_rank
            if self.meta is not None:
                self._refit_from_meta(history)
                local = dict(anchors=self._anchors(history), local_fraction=loop.local_fraction,
                             local_t=loop.local_noise, local_mix=loop.local_mix) if self._sources and history else {}
                batch = gen.propose(self.batch_size, exclude, n_candidates, self.scale, acq.acquisition, acq.kappa,
                                    **local)
                how = "meta-guided"
            elif self.mo is not None and n_warm == 0 and len(history) >= 2:
                batch = self._mo_round(history, exclude, n_candidates)
                how = "Pareto-guided"
            elif n_warm == 0 and len(history) >= 2:
                self._refit(history, pending)
                batch = gen.propose(self.batch_size, exclude, n_candidates, self.scale, acq.acquisition, acq.kappa,
                                    anchors=self._anchors(history), local_fraction=loop.local_fraction,
                                    local_t=loop.local_noise, near=self._stalled_best(history),
                                    local_mix=loop.local_mix)
                how = "guided"
            else:
                k = n_warm or self.batch_size
                if rank_fn is not None:
                    batch = gen.propose(k, exclude, n_candidates, scale=0.0, rank_fn=rank_fn)
                    how = "dataset-guided"
                else:
                    batch = self._warmup_draws(k, exclude, n_candidates)
                    how = "unguided"
            _logger.info("DiffusionNAG: %d %s proposals in %.2f s (%d results so far)", len(batch), how,
                         time.time() - t0, len(history))
            if self.prediction_log is not None and gen.surrogate is not None and len(batch):
                self._log_predictions(batch)
            return batch

    def _refit(self, history: List[Tuple[Key, float]], pending: List[Key]) -> None:
        """Refit the single-objective surrogate when results (or, with ``pending='believer'``, the
        running trials) changed since the last fit. Believed trials carry the last fit's prediction
        as their label (LoopConfig, ``pending``)."""
        gen = self.generator
        believe = self.config.loop.pending == "believer" and bool(pending) and gen.surrogate is not None
        believed = frozenset(pending) if believe else frozenset()
        if len(history) <= self._fitted_on and believed == self._believed:
            return
        keys, labels = np.array([k for k, _ in history]), self._labels_for(history)
        if believe:
            fantasy, _ = gen.predict(np.array(pending))
            keys, labels = np.concatenate([keys, np.array(pending)]), np.concatenate([labels, fantasy])
        # refit_steps: continue from the last fit's weights (GNN ensemble only)
        warm = gen.surrogate_config.refit_steps is not None and hasattr(gen.surrogate, "members")
        gen.fit(keys, labels, warm_start=warm)
        gen.best_value = float(labels[:len(history)].max())  # the best *result*, not a belief (EI)
        self._fitted_on, self._believed = len(history), believed

    def _log_predictions(self, batch: np.ndarray) -> None:
        import json
        from pathlib import Path

        mean, std = self.generator.predict(batch)
        if self._fit_labels is not None:  # targets -> the metric's units
            targets, values = self._fit_labels
            lo, hi = to_metric_units(mean - std, targets, values), to_metric_units(mean + std, targets, values)
            mean, std = to_metric_units(mean, targets, values), (hi - lo) / 2.0
        sign = self.config.acquisition.sign  # the surrogate learns sign * metric
        lines = [json.dumps({"sample": self.space.types_to_sample(t), "mean": float(sign * m), "std": float(s)},
                            default=str) for t, m, s in zip(batch, mean, std)]
        try:
            path = Path(self.prediction_log)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write("\n".join(lines) + "\n")
        except OSError as err:  # a report figure is not worth ending the search for
            _logger.warning("DiffusionNAG: could not write predictions to %s (%s)", self.prediction_log, err)
            self.prediction_log = None

    def _mo_round(self, history: List[Tuple[Key, float]], exclude: set, n_candidates: int) -> np.ndarray:
        """Refit every learned objective, then generate under per-graph trade-offs and pick by
        expected hypervolume improvement (:mod:`.multiobjective`)."""
        mo, acq = self.mo, self.config.acquisition
        types = np.array([k for k, _ in history])
        maximised = self._mo_targets(history)
        if len(history) > self._fitted_on:
            self.generator.fit(types, maximised[:, 0])
            mo.fit(types, maximised)
            self._fitted_on = len(history)
        rng = np.random.default_rng([self.seed, len(history), self.generator._calls])
        return mo.propose(self.batch_size, exclude, n_candidates, self.scale, acq.kappa, maximised, rng)

    def _mo_targets(self, history: Sequence[Tuple[Key, float]]) -> np.ndarray:
        """``[n, m]`` values multi-objective search learns, guides and selects on, all to maximise:
        the trial metric (column 0) as single-objective search learns it (:meth:`_labels_for`: rank
        scores by default), every other objective in its own units. Exact costs are exact, and a
        reported cost such as ``latency_ms`` is what the hypervolume is measured in (rank scores of
        it lowered the NAS-Bench-Graph hypervolume, docs/benchmarks.md §11). A rank transform is
        monotone, so the front and the median reference point are the same results; it spreads
        the top of a long-tailed metric (NB201's 10% cells) as much as the rest."""
        maximised = self._objective_values(history) * self.mo.sign
        maximised[:, 0] = self._labels_for(history)  # history holds finite metrics only (observe)
        return maximised

    def _objective_values(self, history: Sequence[Tuple[Key, float]]) -> np.ndarray:
        """``[n, m]`` objective values of ``history`` as reported/computed (NaN: not reported)."""
        with self._lock:
            extras = [self._extras.get(k, {}) for k, _ in history]
        types = np.array([k for k, _ in history]).reshape(len(history), self.space.num_nodes)
        return self.mo.observed(types, [v for _, v in history], extras)

    def pareto_front(self) -> List[Dict[str, Any]]:
        """The non-dominated results: ``[{'sample': ..., 'objectives': {name: value}}]``, with the
        default metric first, over the results that have every objective (sorted by the default
        metric, best first). Without extra objectives: the best result(s)."""
        with self._lock:
            history = list(self._history)
        if not history:
            return []
        if self.mo is None:
            values = np.array([[v] for _, v in history]) * self.config.acquisition.sign
            names = ["default"]
        else:
            values, names = self._objective_values(history) * self.mo.sign, self.mo.names
        ok = np.flatnonzero(np.isfinite(values).all(axis=1))
        front = ok[pareto_mask(values[ok])]
        front = front[np.argsort(-values[front, 0], kind="stable")]
        sign = self.mo.sign if self.mo is not None else np.array([self.config.acquisition.sign])
        return [{"sample": self.space.types_to_sample(history[i][0]),
                 "objectives": {n: float(values[i, j] * sign[j]) for j, n in enumerate(names)}} for i in front]

    def _record_extras(self, key: Key, sample: Mapping[str, Any], metric: Any) -> None:
        """The reported extra objectives of a result; a missing or unusable one is said once."""
        got: Dict[str, float] = {}
        for name in self.mo.reported:
            value = metric.get(name) if isinstance(metric, Mapping) else None
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
            if ok:
                got[name] = float(value)
            elif name not in self._warned_missing:
                self._warned_missing.add(name)
                keys = sorted(metric) if isinstance(metric, Mapping) else type(metric).__name__
                _logger.warning("DiffusionNAG: objective %r is missing or not a finite number in the result of %s "
                                "(%r; the trial reported %s). Trials must report it in their final dict, e.g. "
                                "nni.report_final_result({'default': acc, %r: value}); results without it are "
                                "left out of the Pareto front and of its surrogate, and the search goes on",
                                name, dict(sample), value, keys, name)
        with self._lock:
            self._extras[key] = got

    def _to_maximise(self, values: Sequence[float]) -> np.ndarray:
        """Metrics as the generator sees them: it always maximises."""
        return self.config.acquisition.sign * np.asarray(values, dtype=np.float64)

    def _anchors(self, history: Sequence[Tuple[Key, float]]) -> np.ndarray:
        """The ``local_anchors`` best graphs of ``history`` ``[A, N]``: local candidates vary them."""
        values = self._to_maximise([v for _, v in history])
        best = np.argsort(-values, kind="stable")[:self.config.loop.local_anchors]
        return np.array([history[i][0] for i in best]).reshape(len(best), self.space.num_nodes)

    def _warmup_draws(self, k: int, exclude: set, n_candidates: int) -> np.ndarray:
        """``k`` unguided graphs: prior samples, or with ``warmup_design='balanced'`` and an exact
        product prior a balanced design (topped up with prior samples where the constraints or
        ``exclude`` refuse some of it)."""
        gen = self.generator
        design = np.zeros((0, self.space.num_nodes), dtype=np.int64)
        balanced = getattr(gen.prior, "balanced_types", None)
        if self.config.loop.warmup_design == "balanced" and balanced is not None:
            design = balanced(k, np.random.default_rng([self.seed, len(self._submitted), 17]))
            design = design[gen.admissible(design, exclude)]
        if len(design) < k:
            more = exclude | {self._identity(t) for t in design}
            rest = gen.propose(k - len(design), more, max(k, n_candidates // 4), scale=0.0)
            design = np.concatenate([design, rest]) if len(design) else rest
        return design

    def _stalled_best(self, history: Sequence[Tuple[Key, float]]) -> Optional[np.ndarray]:
        """The best graph ``[N]`` once ``local_patience`` results in a row brought no new best, else None."""
        patience = self.config.loop.local_patience
        if not patience or not history:
            return None
        values = self._to_maximise([v for _, v in history])
        best = int(np.argmax(values))  # the first time the best value arrived
        if len(history) - 1 - best < patience:
            return None
        return np.asarray(history[best][0])

    def _labels_for(self, history: Sequence[Tuple[Key, float]]) -> np.ndarray:
        """Surrogate targets of ``history``: its values to maximise as they are (``labels='zscore'``)
        or their rank scores (``'rank'``, remembered with the values for :meth:`_log_predictions`)."""
        values = self._to_maximise([v for _, v in history])
        if self.generator.surrogate_config.labels == "zscore":  # the surrogates standardise values themselves
            self._fit_labels = None
            return values
        targets = standardise(values, "rank")
        self._fit_labels = (targets, values)
        return targets

    def _dataset_rank(self, types: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = self.generator.features(types)
            t = torch.full((len(x),), self.config.prior.sampler.eps, device=x.device)
            return self._dataset_value(x, t).cpu().numpy()

    def _refit_from_meta(self, history: List[Tuple[Key, float]]) -> None:
        """Blend of transfer and online knowledge: each refit warm-starts from the meta-surrogate's
        weights (not from the previous refit) and fine-tunes on the results so far, with more steps
        as results accumulate. Chosen over a weighted sum of two predictors because one network
        keeps guidance and ranking consistent, and the meta weights fill in wherever the few target
        results say nothing; the labels are rank-normalised like the meta-training ones."""
        if len(history) < 2 or len(history) <= self._fitted_on:
            return
        if self._sources:
            self._refit_from_sources(history)
            return
        steps0 = self.config.transfer.meta_adapt_steps
        values = standardise(self._to_maximise([v for _, v in history]), self.meta.info.get("labels", "zscore"))
        steps = min(max(self.config.surrogate.steps, steps0), steps0 + 10 * (len(history) - 2))
        self.generator.surrogate = self.meta.adapt(np.array([k for k, _ in history]), values, steps=steps,
                                                   seed=self.seed + len(history))
        self.generator.best_value = float(values.max())
        self._fitted_on = len(history)

    def _refit_from_sources(self, history: List[Tuple[Key, float]]) -> None:
        """Weigh the source tasks by the target's results so far, then fit the loop's surrogate to
        what their weighted prediction misses (transfer/sources.py has the formula and its reasons)."""
        from ..transfer.sources import effective_weights, source_weights

        gen = self.generator
        types = np.array([k for k, _ in history])
        y = standardise(self._to_maximise([v for _, v in history]), "rank")
        predictions = self.meta.predict_each(types, eps=self.config.prior.sampler.eps)
        w, c = source_weights(predictions, y)
        eff = effective_weights(w, c)  # sources with a tiny share dropped: they cost guidance time
        gen.surrogate = None  # a fresh residual model of the configured kind
        gen.fit(types, y - eff @ predictions)
        gen.surrogate = self.meta.combine(eff, residual=gen.surrogate)
        gen.best_value = float(y.max())
        self._fitted_on = len(history)
        self.source_weights = {t: float(e) for t, e in zip(self.meta.tasks, eff)}
        _logger.info("DiffusionNAG: source weights after %d results: %s", len(history),
                     ", ".join(f"{t} {v:.2f}" for t, v in self.source_weights.items()))

    # --- tell ----------------------------------------------------------------------------------
    def key_of(self, sample: Mapping[str, Any]) -> Key:
        """The graph identity of a sample; ``ValueError`` if it is not an architecture of the space."""
        return self.space.key(self.space.sample_to_types(sample))

    def observe(self, sample: Mapping[str, Any], metric: Any) -> Optional[float]:
        """Record the result of ``sample``; returns the recorded value, or None if the metric is
        unusable (then the architecture counts as failed, once)."""
        key = self.key_of(sample)
        value = scalar_metric(metric)
        if value is not None and self.mo is not None and self.mo.reported:
            self._record_extras(key, sample, metric)
        with self._lock:
            self._submitted.setdefault(key, len(self._submitted))  # imported results too
            if value is None:
                self._add_failure(key, f"unusable metric {metric!r}")
            elif key in self._done and not any(k == key for k, _ in self._failed):
                _logger.debug("result of %s already recorded; ignoring the repeat", sample)
            else:
                if key in self._done:  # a late metric wins over a recorded failure
                    self._failed = [(k, why) for k, why in self._failed if k != key]
                self._history.append((key, value))
                self._done.add(key)
        if value is None:
            _logger.warning("DiffusionNAG: ignoring the result of %s: metric %r is not a number or a dict with a "
                            "numeric 'default' (None, NaN, inf and strings are unusable)", dict(sample), metric)
        self._persist()
        return value

    def _persist(self) -> None:
        if self.persist is None:
            return
        try:
            self.persist()
        except Exception as err:  # noqa: BLE001 - a full disk must not end the search; say so
            _logger.warning("DiffusionNAG: could not save the search state (%s); the search goes on", err)

    def fail(self, sample: Mapping[str, Any], reason: str = "trial failed") -> None:
        """Record that the trial of ``sample`` failed (once per architecture); the search goes on."""
        key = self.key_of(sample)
        with self._lock:
            added = self._add_failure(key, reason)
        if added:
            _logger.warning("DiffusionNAG: %s for %s; the search goes on", reason, dict(sample))
            self._persist()

    def _add_failure(self, key: Key, reason: str) -> bool:
        if key in self._done:  # failed or observed already: once per architecture
            return False
        self._failed.append((key, reason))
        self._done.add(key)
        return True

    def reject(self, sample: Mapping[str, Any], reason: str = "refused by the model space") -> None:
        """``sample`` was refused before it ran (a constraint of the model space): un-submit it and
        never propose it again."""
        key = self.key_of(sample)
        with self._lock:
            self._submitted.pop(key, None)
            self._rejected.add(key)
        _logger.warning("DiffusionNAG: generated architecture rejected by the model space (%s)", reason)
        self._persist()

    # --- inspection ----------------------------------------------------------------------------
    def history(self) -> List[Dict[str, Any]]:
        """Results so far: ``[{'sample': ..., 'metric': ...}]`` in arrival order."""
        with self._lock:
            return [{"sample": self.space.types_to_sample(k), "metric": v} for k, v in self._history]

    def failures(self) -> List[Dict[str, Any]]:
        """Failed trials: ``[{'sample': ..., 'reason': ...}]``."""
        with self._lock:
            return [{"sample": self.space.types_to_sample(k), "reason": why} for k, why in self._failed]

    @property
    def num_submitted(self) -> int:
        with self._lock:
            return len(self._submitted)

    def mark_submitted(self, sample: Mapping[str, Any]) -> bool:
        """Count ``sample`` as submitted although :meth:`propose` did not hand it out (a trial that
        the NNI manager runs again after a resume); returns False if it was already known."""
        key = self.key_of(sample)
        with self._lock:
            if key in self._submitted:
                return False
            self._submitted[key] = len(self._submitted)
            return True

    def is_submitted(self, sample: Mapping[str, Any]) -> bool:
        key = self.key_of(sample)
        with self._lock:
            return key in self._submitted

    # --- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        with self._lock:
            state: Dict[str, Any] = {
                "history": [(list(k), v) for k, v in self._history],
                "failed": [(list(k), why) for k, why in self._failed],
                "submitted": [list(k) for k in self._submitted],
                "rejected": [list(k) for k in self._rejected],
                "seed": self.seed,
                "generator_calls": self.generator._calls,
                "torch_rng": torch.get_rng_state(),
            }
            state["extras"] = [(list(k), dict(v)) for k, v in self._extras.items()]
        sur = self.generator.surrogate
        if sur is not None and not self._sources:  # weighted sources are refitted from the history instead
            state["surrogate"] = {k: v.detach().cpu() for k, v in sur.state_dict().items()}
            state["fitted_on"] = self._fitted_on
        if self.mo is not None:
            state["objective_surrogates"] = self.mo.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with self._lock:
            self._history = [(tuple(k), float(v)) for k, v in state["history"]]
            self._failed = [(tuple(k), why) for k, why in state.get("failed", [])]
            # architectures still running when the state was saved are lost: they may be proposed again
            done = {k for k, _ in self._history} | {k for k, _ in self._failed}
            self._done = set(done)
            self._submitted = {k: i for i, k in enumerate(tuple(k) for k in state["submitted"]) if k in done}
            self._rejected = {tuple(k) for k in state.get("rejected", [])}
            self._extras = {tuple(k): dict(v) for k, v in state.get("extras", [])}
            self._queue.clear()
            self.seed = state.get("seed", self.seed)
        torch.set_rng_state(state["torch_rng"])
        self._fitted_on = state.get("fitted_on", 0)
        self.generator._calls = state.get("generator_calls", 0)
        if state.get("surrogate") is not None:
            self._restore_surrogate(state["surrogate"])
        if self.mo is not None and state.get("objective_surrogates"):
            self.mo.load_state_dict(state["objective_surrogates"])
        _logger.warning("DiffusionNAG: search state restored: %d results, %d failed trials, %d refused architectures; "
                        "none of them will be trained again", len(self._history), len(self._failed),
                        len(self._rejected))

    def _restore_surrogate(self, weights: Mapping[str, torch.Tensor]) -> None:
        gen = self.generator
        gen.surrogate = gen.new_surrogate()
        gen.surrogate.load_state_dict(weights)
        gen.surrogate.eval()
        values = [v for _, v in self._history] or [0.0]
        if self.meta is not None:
            vals = (standardise(self._to_maximise(values), self.meta.info.get("labels", "zscore"))
                    if len(values) > 1 else [0.0])
            gen.best_value = float(np.max(vals))
            return
        if self.mo is None and self._fitted_on >= 2:  # EI compares with the best target of the last refit
            gen.best_value = float(self._labels_for(self._history[:self._fitted_on]).max())
            return
        gen.best_value = float(self._to_maximise(values).max())
