"""Meta-surrogate for transferable NAS (docs/design.md, 'The BO loop'): knowledge from earlier tasks.

A *meta-surrogate* is a noise-aware :class:`~nni_diffusionnag.nn.surrogate.SurrogateEnsemble`
trained on the (architecture, metric) tables of earlier tasks. Each task's labels are
standardised on their own (z-scores), so tasks with different scales (CIFAR-10 accuracy ~94,
CIFAR-100 ~73) mix; the meta-surrogate thus predicts a *task-agnostic standardised quality*.
It is not conditioned on the task yet: with several tasks it learns their average, which is what
transfers to a new task when nothing is known about it. The dataset-conditioned variant
(``f(x_t, t, D)`` with a set encoder over image features) is :mod:`.dataset_encoding`.

Few-shot adaptation (:meth:`MetaSurrogate.adapt`): a copy of the meta-surrogate is fine-tuned
from its weights (warm start, few steps) on the observed results of the target task.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..prior.checkpoint import load_checkpoint, save_checkpoint
from ..diffusion.decoding import to_features
from ..diffusion.sde import SDE, VESDE, get_sde
from ..nn.surrogate import SurrogateConfig, SurrogateEnsemble, fit_surrogate
from ..nn.targets import standardise
from ..space.base import GraphSpace

if TYPE_CHECKING:
    from .sources import SourceTasks

__all__ = ["MetaSurrogate", "train_meta", "load_meta", "read_task_csv", "DEFAULT_META_CONFIG"]

_logger = logging.getLogger(__name__)

#: Meta-training settings: same network as the online surrogate (so it can warm-start it), many
#: more steps and larger batches since task tables are large.
DEFAULT_META_CONFIG = SurrogateConfig(hidden=32, num_layers=3, ensemble=5, steps=1500, batch_size=256, lr=3e-3)


class MetaSurrogate:
    """A trained meta-surrogate: the ensemble (standardised units), its SDE and task names."""

    def __init__(self, space: GraphSpace, surrogate: SurrogateEnsemble, sde: SDE, tasks: Sequence[str],
                 info: Optional[Dict[str, Any]] = None) -> None:
        self.space, self.surrogate, self.sde, self.tasks = space, surrogate.eval(), sde, list(tasks)
        self.info = dict(info or {})

    @property
    def config(self) -> SurrogateConfig:
        return self.surrogate.config

    def features(self, types: np.ndarray) -> torch.Tensor:
        dev = self.surrogate.y_mean.device
        return to_features(torch.as_tensor(np.asarray(types), dtype=torch.long, device=dev), self.space.num_types)

    @torch.no_grad()
    def predict(self, types: np.ndarray, eps: float = 1e-5) -> Tuple[np.ndarray, np.ndarray]:
        """Standardised quality (mean, std) of clean graphs ``[B, N]``: higher is better."""
        x = self.features(types)
        level = self.sde.noise_level(torch.full((len(x),), eps, device=x.device))
        mean, std = self.surrogate(x, level)
        return mean.cpu().numpy(), std.cpu().numpy()

    def copy_surrogate(self, config: Optional[SurrogateConfig] = None) -> SurrogateEnsemble:
        """A deep copy of the ensemble (optionally with other *training* settings, same shape)."""
        sur = copy.deepcopy(self.surrogate)
        if config is not None:
            if (config.hidden, config.num_layers, config.ensemble) != (sur.config.hidden, sur.config.num_layers,
                                                                       sur.config.ensemble):
                raise ValueError("adaptation settings must keep the meta-surrogate's hidden/num_layers/ensemble")
            sur.config = config
        return sur

    def adapt(self, types: np.ndarray, values: np.ndarray, steps: int = 60, lr: Optional[float] = None,
              seed: int = 0) -> SurrogateEnsemble:
        """Few-shot adaptation: a copy fine-tuned from the meta weights on ``(types [M, N], values [M])``
        of the target task (``M >= 2``; values to maximise). Returns the adapted ensemble, in the
        target's units."""
        cfg = dataclasses.replace(self.config, steps=steps, lr=lr or self.config.lr / 3, bootstrap=True)
        sur = self.copy_surrogate(cfg)
        fit_surrogate(sur, self.features(types), torch.as_tensor(np.asarray(values, dtype=np.float64)),
                      self.sde, seed=seed, warm_start=True)
        return sur

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, "meta", self.space.signature(), {
            **checkpoint_header(self.tasks, self.config, self.sde, self.info),
            "state": cpu_state(self.surrogate),
        })


def checkpoint_header(tasks: Sequence[str], config: SurrogateConfig, sde: SDE, info: Mapping[str, Any]
                      ) -> Dict[str, Any]:
    """What every ``meta`` checkpoint holds besides its weights (read back by :func:`ensemble_reader`)."""
    return {"tasks": list(tasks), "surrogate_config": config.to_dict(), "sde": sde.to_dict(),
            "log_noise": bool(sde.kind == "ve"), "info": dict(info)}


def cpu_state(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def ensemble_reader(ckpt: Mapping[str, Any], space: GraphSpace, device: str = "cpu"
                    ) -> Tuple[SDE, Callable[[Mapping[str, torch.Tensor]], SurrogateEnsemble]]:
    """The SDE of a ``meta`` checkpoint and a function that builds one of its ensembles from weights."""
    config = SurrogateConfig(**ckpt["surrogate_config"])
    d = dict(ckpt["sde"])
    sde = get_sde(d.pop("kind"), **d)

    def build(state: Mapping[str, torch.Tensor]) -> SurrogateEnsemble:
        sur = SurrogateEnsemble(space.num_types, space.adjacency, config, log_noise=bool(ckpt["log_noise"])).to(device)
        sur.load_state_dict(state)
        return sur

    return sde, build


def _default_sde(space: GraphSpace) -> SDE:
    """The SDE of the space's shipped prior (the meta-surrogate must be noise-aware in the same
    SDE as the prior it guides), else the package default."""
    try:
        from ..prior.model import shipped_prior_path

        path = shipped_prior_path(space.name)
        if path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            d = dict(ckpt["sde"])
            return get_sde(d.pop("kind"), **d)
    except Exception as err:  # noqa: BLE001 - fall back to the default SDE
        _logger.debug("no shipped prior SDE for %s (%s); using the default", space.name, err)
    return VESDE(0.1, 5.0)


def train_meta(space: GraphSpace, tasks: Mapping[str, Tuple[np.ndarray, np.ndarray]],
               config: SurrogateConfig = DEFAULT_META_CONFIG, sde: Optional[SDE] = None, seed: int = 0,
               output: Optional[str | Path] = None, progress: bool = True, device: str = "cpu",
               chunk: int = 100, labels: str = "rank") -> MetaSurrogate:
    """Train a noise-aware meta-surrogate on task tables ``{name: (types [M, N], values [M])}``
    (values to maximise; each task standardised on its own) and save it to ``output`` if given.

    ``labels``: ``'rank'`` (default) maps each task's values to normal scores of their ranks, so
    the few top architectures that a search is after are spread apart instead of squeezed by a
    long tail of broken cells (NB201: accuracies down to 10 %); ``'zscore'`` standardises them.
    """
    if labels not in ("rank", "zscore"):
        raise ValueError(f"labels must be 'rank' or 'zscore', got {labels!r}")
    from tqdm.auto import tqdm

    if not tasks:
        raise ValueError("train_meta needs at least one task")
    xs, ys = [], []
    for name, (types, values) in tasks.items():
        types, values = np.asarray(types), np.asarray(values, dtype=np.float64)
        if types.ndim != 2 or types.shape[1] != space.num_nodes or len(types) != len(values):
            raise ValueError(f"task {name!r}: need types [M, {space.num_nodes}] and values [M], got "
                             f"{types.shape} and {values.shape}")
        ok = np.isfinite(values)
        if ok.sum() < 2:
            raise ValueError(f"task {name!r} has fewer than 2 finite values")
        xs.append(types[ok])
        ys.append(standardise(values[ok], labels))
    types_all, y = np.concatenate(xs), np.concatenate(ys)
    sde = sde or _default_sde(space)
    sur = SurrogateEnsemble(space.num_types, space.adjacency, config, log_noise=sde.kind == "ve").to(device)
    x0 = to_features(torch.as_tensor(types_all, dtype=torch.long, device=device), space.num_types)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)
    # fit_surrogate in chunks (warm start after the first) so that a progress bar can follow it
    n_chunks = max(1, math.ceil(config.steps / chunk))
    t0, loss = time.time(), float("nan")
    bar = tqdm(range(n_chunks), desc=f"meta-training on {len(tasks)} task(s), {len(y)} rows", disable=not progress)
    for c in bar:
        steps = min(chunk, config.steps - c * chunk) if config.steps else 0
        sur.config = dataclasses.replace(config, steps=steps)
        loss = fit_surrogate(sur, x0, yt, sde, seed=seed * 7919 + c, warm_start=c > 0)
        bar.set_postfix(mse=f"{loss:.3f}")
    sur.config = config
    meta = MetaSurrogate(space, sur.eval(), sde, list(tasks),
                         {"rows": int(len(y)), "train_mse": float(loss), "seconds": round(time.time() - t0, 1),
                          "seed": seed, "labels": labels})
    if output is not None:
        meta.save(output)
    return meta


def load_meta(path: str | Path, space: GraphSpace, device: str = "cpu") -> "MetaSurrogate | SourceTasks":
    """Load a meta-surrogate, or the per-task sources of ``train-meta --per-task``
    (:class:`~.sources.SourceTasks`); raises :class:`~nni_diffusionnag.exceptions.SpaceMismatchError`
    if it was trained for another space."""
    ckpt = load_checkpoint(path, "meta", space.signature(), map_location=device)
    if "sources" in ckpt:
        from .sources import load_sources

        return load_sources(ckpt, space, device)
    sde, build = ensemble_reader(ckpt, space, device)
    return MetaSurrogate(space, build(ckpt["state"]), sde, ckpt["tasks"], ckpt.get("info"))


def read_task_csv(space: GraphSpace, path: str | Path, column: Optional[str] = None,
                  arch_column: str = "arch") -> Tuple[np.ndarray, np.ndarray]:
    """``(types [M, N], values [M])`` from a CSV with an architecture column and a metric column
    (default: the only numeric column besides ``index``). Clear errors for a missing column or
    architecture strings the space does not know."""
    import pandas as pd

    df = pd.read_csv(path)
    if arch_column not in df.columns:
        raise ValueError(f"{path}: no '{arch_column}' column (columns: {list(df.columns)})")
    if column is None:
        numeric = [c for c in df.columns if c not in (arch_column, "index") and pd.api.types.is_numeric_dtype(df[c])]
        if len(numeric) != 1:
            raise ValueError(f"{path}: name the metric column with NAME=CSV:COLUMN (numeric columns: {numeric})")
        column = numeric[0]
    if column not in df.columns:
        raise ValueError(f"{path}: no column '{column}' (columns: {list(df.columns)})")
    if not hasattr(space, "arch_to_types"):
        raise ValueError(f"space '{space.name}' has no architecture-string format for task tables")
    types, bad = [], []
    for i, arch in enumerate(df[arch_column].astype(str)):
        try:
            types.append(space.arch_to_types(arch))
        except Exception as err:  # noqa: BLE001 - collected and reported together
            bad.append((i, arch, err))
    if bad:
        i, arch, err = bad[0]
        raise ValueError(f"{path}: {len(bad)} unknown architecture string(s) for space '{space.name}', "
                         f"first at row {i}: {arch!r} ({err})")
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad_rows = np.nonzero(~np.isfinite(values))[0]
    if len(bad_rows) == len(values):
        raise ValueError(f"{path}: no row of column '{column}' holds a finite number")
    if len(bad_rows):  # NaN, inf, empty or text: dropped, and said so
        raw = df[column].astype(str).to_numpy()
        _logger.warning("%s: dropped %d of %d rows whose '%s' is not a finite number (rows %s, e.g. %r)", path,
                        len(bad_rows), len(values), column, bad_rows[:10].tolist(), raw[bad_rows[0]])
    keep = np.isfinite(values)
    return np.stack(types).astype(np.int64)[keep], values[keep]
