"""A prior for any space: a closed-form one, the shipped one, or a learned one.

:func:`prior_for_space` (``kind='auto'``) looks, in this order, for

1. for a space of independent choices (:func:`is_product_space`: a generic encoding without
   dependencies, or a hand-made one that declares ``independent_nodes``, as NB201), the exact
   prior of those choices, even where a network was shipped for the space (it approximates the
   same uniform draws, at a network pass per sampler step; on NB201 the search with the exact
   prior needed fewer trained architectures, docs/benchmarks.md §3);
2. the prior shipped in the package for ``space.name`` (:func:`~nni_diffusionnag.prior.model.shipped_prior_path`),
   used only if its signature matches the space;
3. for the generic encoding of a user's space with dependencies, a closed-form
   :class:`~nni_diffusionnag.prior.exact.ProductPrior` of the per-decision frequencies of valid
   random architectures, the dependencies enforced after sampling (k-of-n repair in the
   space, constraint rejection in the generator). Nothing is trained;
4. otherwise (or with ``kind='learned'``) a prior cached at
   ``<cache_dir>/<space.name>-<signature digest>.pt``; ``cache_dir`` defaults to
   ``$NNI_DIFFUSIONNAG_CACHE`` or ``~/.cache/nni-diffusionnag/priors``; failing that it trains one
   on random architectures of the space (``space.random_types``; all of them if the space is small
   enough to enumerate; with a ``model_space`` that has constraints, only those that
   ``model_space.contains``) within a wall-clock budget, with a progress bar, and saves it in the
   cache. The next call with the same space loads it.

The time bound is kept by training in chunks with :func:`~nni_diffusionnag.prior.training.train_prior`
(resumable: each chunk continues from the checkpoint the previous one wrote, with the optimiser,
EMA and RNG state) and stopping when the budget is spent; the chunk length is sized from the
measured step time so the overshoot is at most about one step. A prior stopped by the budget is
cached like a finished one (its ``meta`` records ``budget_hit`` and the steps done); pass
``retrain=True`` (e.g. with a larger budget) to replace it. A file lock lets concurrent processes
wait for one training instead of each training their own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..exceptions import CheckpointError, DiffusionNAGError, SpaceMismatchError
from ..nn.score_net import ScoreNetConfig
from .model import DiffusionPrior, shipped_prior_path
from ..space.base import GraphSpace
from .training import TrainConfig, train_prior

__all__ = ["prior_for_space", "cache_path", "default_cache_dir", "CACHE_ENV"]

_logger = logging.getLogger(__name__)

CACHE_ENV = "NNI_DIFFUSIONNAG_CACHE"


def default_cache_dir() -> Path:
    """``$NNI_DIFFUSIONNAG_CACHE`` if set, else ``~/.cache/nni-diffusionnag/priors``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nni-diffusionnag" / "priors"


def cache_path(space: GraphSpace, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the prior for ``space`` is cached: ``<cache_dir>/<space.name>-<signature digest>.pt``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", space.name).strip("._") or "space"
    return root / f"{safe}-{space.signature().digest}.pt"


def prior_for_space(space: GraphSpace, model_space: Any = None, cache_dir: str | os.PathLike | None = None,
                    time_budget_s: float = 120.0, steps: int = 3000, device: str | torch.device | None = None, *,
                    net_config: ScoreNetConfig | None = None, train_config: TrainConfig | None = None,
                    num_samples: int = 4096, seed: int = 0, progress: bool = True,
                    retrain: bool = False, kind: str = "auto") -> Any:
    """The diffusion prior for ``space``: shipped, exact, cached, or trained now and cached.

    ``kind='auto'``: for a generic space of independent choices (:func:`is_product_space`), the
    exact prior of those choices (:class:`~nni_diffusionnag.prior.exact.ProductPrior`: nothing to
    train); else the prior shipped for the space if there is one; else, for a generic space, the
    per-decision frequencies with the dependencies enforced after sampling; else a learned one
    (cached, or trained now). ``kind='exact'`` and ``kind='learned'`` force one or the other.

    Parameters
    ----------
    space
        The graph space (e.g. :class:`~nni_diffusionnag.space.generic.GenericSpace`).
    model_space
        The NNI model space; if it has constraints (``MutableAnnotation``s), training samples are
        kept only if ``model_space.contains`` them.
    cache_dir
        Cache folder (default: :func:`default_cache_dir`).
    time_budget_s
        Wall-clock bound of the whole training (data included); training stops early when it
        is spent. At least one short chunk of steps is always run.
    steps
        Training steps if the budget allows (``train_config.steps`` wins when given).
    device
        ``None``/``'auto'`` picks CUDA when available.
    net_config, train_config
        Score network and optimisation settings of a newly trained prior.
    num_samples
        Training architectures: all of the space when it has at most this many, else this many
        random ones.
    retrain
        Ignore (and replace) a cached prior.
    kind
        ``'auto'``, ``'exact'`` or ``'learned'`` (see above).
    """
    if kind not in ("auto", "exact", "learned"):
        raise ValueError(f"prior kind must be 'auto', 'exact' or 'learned', got {kind!r}")
    if kind == "exact":
        return _exact_prior(space, device, model_space, num_samples, seed)
    shipped = shipped_prior_path(space.name)
    if kind == "auto" and is_product_space(space):
        # A space of independent choices: a network shipped for it could only approximate this
        # closed form (it was trained on the same uniform draws), at a network pass per sampler
        # step: 18.7 s against 5.5-6.4 s per proposal round on NNI's MobileNetV3Space, and more
        # trained architectures to the NB201 optimum (docs/benchmarks.md §3, §9).
        # kind='learned' still loads the shipped network.
        if shipped.is_file():
            _logger.info("'%s' is a product of independent choices: using its exact prior, not the network "
                         "shipped for it (prior_kind='learned' loads that one)", space.name)
        return _exact_prior(space, device, model_space, num_samples, seed)
    if shipped.is_file() and not retrain:
        try:
            prior = DiffusionPrior.load(shipped, space, device)
            _logger.info("using the prior shipped for '%s' (%s)", space.name, shipped)
            return prior
        except SpaceMismatchError:
            _logger.info("the prior shipped as '%s' was made for another encoding of the space; not using it",
                         shipped.name)

    if kind == "auto" and is_generic(space):
        # Choices that are not independent (constraints, k-of-n subsets; independent ones returned
        # above): the closed form with the valid architectures' per-node frequencies, and the
        # dependencies enforced after sampling (repair of subsets, rejection by constraints): no
        # training before the first trial, every emitted architecture valid. A learned prior of the
        # joint distribution stays available as kind='learned' (docs/design.md).
        return _exact_prior(space, device, model_space, num_samples, seed)

    path = cache_path(space, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".lock")):
        if path.is_file() and not retrain:
            try:
                prior = DiffusionPrior.load(path, space, device)
                _logger.info("loaded cached prior for '%s' from %s (%s steps)", space.name, path,
                             prior.meta.get("train_steps", "?"))
                return prior
            except (CheckpointError, SpaceMismatchError, RuntimeError) as err:
                _logger.warning("cached prior %s is unusable (%s); training a new one", path, err)

        sig = space.signature()
        config = train_config or TrainConfig(steps=steps, batch_size=128, lr=1e-3, warmup=max(1, min(200, steps // 10)),
                                             seed=seed)
        _logger.info("no shipped or cached prior for '%s' (signature %s): training one for up to %d steps or "
                     "%.0f s on random architectures", space.name, sig.digest, config.steps, time_budget_s)
        t0 = time.monotonic()
        data = _training_data(space, model_space, num_samples, np.random.default_rng(seed))
        prior = DiffusionPrior(space, net_config=net_config, device=device)
        partial = path.with_name(path.stem + ".partial.pt")
        partial.unlink(missing_ok=True)  # left by a run that was killed: start clean
        try:
            done, budget_hit = _train_within(prior, data, config, partial, t0, time_budget_s, progress)
        finally:
            partial.unlink(missing_ok=True)
        wall = time.monotonic() - t0
        prior.meta.update(source="trained on the fly by prior_for_space", steps_requested=int(config.steps),
                          time_budget_s=float(time_budget_s),
                          budget_hit=budget_hit, wall_s=round(wall, 2), num_train_graphs=int(len(data)),
                          space=space.name)
        prior.save(path)
        if budget_hit:
            _logger.warning("prior for '%s' stopped by the time budget after %d of %d steps (%.0f s); saved to %s. "
                            "Pass a larger time_budget_s with retrain=True for a better prior.", space.name, done,
                            config.steps, wall, path)
        else:
            _logger.info("trained prior for '%s' (%d steps, %.0f s); saved to %s", space.name, done, wall, path)
        return prior.eval()


def _train_within(prior: DiffusionPrior, data: np.ndarray, config: TrainConfig, checkpoint: Path, t0: float,
                  budget_s: float, progress: bool) -> tuple[int, bool]:
    """Train in resumable chunks until ``config.steps`` or the budget; return (steps, budget_hit)."""
    done, per_step = 0, None
    bar = tqdm(total=config.steps, desc=f"training prior for {prior.space.name}", disable=not progress)
    train_logger = logging.getLogger(train_prior.__module__)  # one "resuming"/"trained" line per chunk is noise
    level = train_logger.level
    train_logger.setLevel(max(level, logging.WARNING))
    try:
        while done < config.steps:
            left = budget_s - (time.monotonic() - t0)
            if done > 0 and left <= 0:
                return done, True
            if per_step is None:
                chunk = min(10, config.steps)  # measures the step time
            else:  # ~1/10 of the budget per chunk, never past what is left
                chunk = int(min(left, max(budget_s / 10, 1.0)) / per_step)
                if chunk < 1:
                    return done, True
            target = min(config.steps, done + chunk)
            t = time.monotonic()
            losses = train_prior(prior, data, replace(config, steps=target, checkpoint_every=target),
                                 checkpoint=checkpoint, resume=True, progress=False)
            per_step = (time.monotonic() - t) / max(1, len(losses) - done)
            bar.update(len(losses) - done)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            done = len(losses)
        return done, False
    finally:
        train_logger.setLevel(level)
        bar.close()


def _training_data(space: GraphSpace, model_space: Any, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """All graphs of a small space, else ``num_samples`` random ones; constraints respected."""
    from ..space.generic import GenericSpace

    check = _validator(space, model_space)
    small = not isinstance(space, GenericSpace) or space.num_architectures() <= num_samples
    every = space.enumerate_types() if small else None  # None where the space cannot enumerate
    if every is not None and len(every) <= num_samples:
        data = every[check(every)] if check else every
    elif check is None:
        data = space.random_types(num_samples, rng)
    else:  # what 8 x num_samples draws find (a check can be NNI's Python contains(), about a
        # millisecond each): tight constraints admit fewer, which still make a per-node prior
        kept, drawn = [], 0
        while sum(map(len, kept)) < num_samples and drawn < 8 * num_samples:
            batch = space.random_types(num_samples, rng)
            drawn += len(batch)
            kept.append(batch[check(batch)])
        data = np.concatenate(kept)[:num_samples]
    if len(data) == 0:
        raise DiffusionNAGError(f"no architecture of '{space.name}' satisfies the constraints of the model space; "
                                "cannot train a prior")
    return data


def is_product_space(space: GraphSpace) -> bool:
    """Whether every architecture of ``space`` is an independent choice per node: the generic
    encoding without constraints or fixed-size subsets split over several nodes (their cardinality
    ties nodes together), or a hand-made encoding that declares ``independent_nodes`` (NB201's six
    edges; not OFA's MobileNetV3, whose skipped layers tie nodes together)."""
    return bool(space.independent_nodes)


def is_generic(space: GraphSpace) -> bool:
    """Whether ``space`` is the generic encoding of an NNI space (not a hand-made one)."""
    from ..space.generic import GenericSpace

    return isinstance(space, GenericSpace)


def _exact_prior(space: GraphSpace, device: Any, model_space: Any = None, num_samples: int = 4096,
                 seed: int = 0) -> Any:
    """Uniform per-node choices for a product space (a generic one, or a hand-made encoding that
    declares ``independent_nodes``, as NB201); otherwise the per-node frequencies of ``num_samples``
    valid random architectures (1 pseudo-count each), dependencies left to the repair and
    rejection steps after sampling."""
    from .exact import ProductPrior

    if space.independent_nodes:
        prior = ProductPrior(space, device=device)
        _logger.info("using the exact prior of independent choices for '%s' (%d decisions, no training)", space.name,
                     space.num_nodes)
        return prior
    t0 = time.monotonic()
    data = _training_data(space, model_space, num_samples, np.random.default_rng(seed))
    prior = ProductPrior.from_samples(space, data, smoothing=1.0, device=device)
    rules = "constraints" if getattr(space, "has_constraints", False) else "fixed-size subsets"
    _logger.info("using the per-node prior of '%s' (%d decisions, frequencies of %d valid architectures, %.2f s, "
                 "no training); its %s are enforced after sampling: subsets repaired, architectures that break a "
                 "constraint rejected", space.name, space.num_nodes, len(data), time.monotonic() - t0, rules)
    return prior


def _validator(space: GraphSpace, model_space: Any):
    """None if nothing can reject a legal graph, else ``types [B, N] -> [B] bool``.

    Only the generic encoding carries constraints (NNI's ``MutableAnnotation``s, captured as
    conditions); the hand-made encodings match constraint-free spaces only.
    """
    from ..space.generic import GenericSpace

    if not (isinstance(space, GenericSpace) and space.has_constraints):
        return None
    if model_space is not None:
        return lambda types: np.array([bool(model_space.contains(space.types_to_sample(t))) for t in types],
                                      dtype=bool)
    return space.valid_mask


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        from filelock import FileLock
    except ImportError:  # pragma: no cover - filelock comes with nni
        yield
        return
    with FileLock(str(path)):
        yield
