"""Dataset-aware meta-predictor ``f(x_t, t, D)`` (docs/design.md, 'The BO loop').

A task is described by its *dataset*: a few images per class are mapped to features by a
pluggable :class:`FeatureExtractor` (default: a small, seeded, frozen, randomly initialised CNN,
so nothing is downloaded), and a two-level Set-Transformer encoder (:class:`SetEncoder`: SAB + PMA
within each class over its images, then SAB + PMA across the classes) turns the features
``[C, k, d]`` into a task vector. :class:`TaskConditionedSurrogate` concatenates that vector with
the pooled representation of a noise-aware directed GNN over the architecture graph (the same
tower as :class:`~nni_diffusionnag.nn.surrogate.GraphSurrogate`) and regresses a standardised
quality with an MLP.

:func:`train_dataset_meta` meta-trains it on several tasks ``(types, values, dataset_features)``
(labels standardised per task; noisy inputs ``x_t = x0 + sigma(t) z`` of the space's SDE as in
:func:`~nni_diffusionnag.nn.surrogate.fit_surrogate`); :meth:`DatasetMetaPredictor.save` /
:func:`load_dataset_meta` write and read a ``dataset-meta`` checkpoint carrying the space
signature, so a checkpoint for another space is refused with
:class:`~nni_diffusionnag.exceptions.SpaceMismatchError`.

Not wired into :class:`~nni_diffusionnag.integration.strategy.DiffusionNAG` yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm.auto import tqdm
from torch import nn

from ..prior.checkpoint import load_checkpoint, save_checkpoint
from ..diffusion.decoding import to_features
from ..diffusion.sde import SDE, VESDE, get_sde
from ..nn.surrogate import GraphSurrogate
from ..space.base import GraphSpace

__all__ = [
    "DatasetMetaPredictor",
    "FeatureExtractor",
    "RandomConvExtractor",
    "SetEncoder",
    "TaskConditionedSurrogate",
    "encode_dataset",
    "load_dataset_meta",
    "train_dataset_meta",
]

_logger = logging.getLogger(__name__)

#: Anything mapping images ``[n, 3, H, W]`` to features ``[n, d]``.
FeatureFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------

class FeatureExtractor(nn.Module):
    """Images ``[n, C, H, W]`` -> features ``[n, d]``, with input validation.

    Wraps any callable (e.g. a pretrained torchvision backbone with its classifier removed);
    ``in_channels`` / ``image_size`` (``None``: any) are checked before the call, with a
    ``ValueError`` that says what was expected and what was found.
    """

    def __init__(self, fn: FeatureFn, out_dim: int, in_channels: Optional[int] = 3,
                 image_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        self.fn = fn
        self.out_dim = int(out_dim)
        self.in_channels = in_channels
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))

    def check(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a tensor [n, {self.in_channels or 'C'}, H, W], got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have rank 4 [n, {self.in_channels or 'C'}, H, W], got shape "
                             f"{tuple(images.shape)} (rank {images.dim()})")
        if self.in_channels is not None and images.shape[1] != self.in_channels:
            raise ValueError(f"images must have {self.in_channels} channels, got shape {tuple(images.shape)}")
        if self.image_size is not None and tuple(images.shape[2:]) != self.image_size:
            raise ValueError(f"images must be {self.image_size[0]}x{self.image_size[1]}, got "
                             f"{images.shape[2]}x{images.shape[3]} (shape {tuple(images.shape)})")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check(images)
        feats = self.fn(images.float())
        if feats.dim() != 2 or feats.shape != (images.shape[0], self.out_dim):
            raise ValueError(f"feature extractor returned shape {tuple(feats.shape)}, expected "
                             f"[{images.shape[0]}, {self.out_dim}]")
        return feats.float()

    def spec(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint needs to rebuild this extractor (``None``: not rebuildable)."""
        return None


class _RandomConvNet(nn.Module):
    def __init__(self, in_channels: int, width: int, out_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, out_dim, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)


class RandomConvExtractor(FeatureExtractor):
    """The default extractor: a small CNN with seeded random weights, frozen (no download).

    Output: mean- and max-pooled maps of the last conv layer, ``out_dim = 2 * channels``.
    """

    def __init__(self, channels: int = 32, width: int = 16, in_channels: int = 3,
                 image_size: Optional[Tuple[int, int]] = (32, 32), seed: int = 0) -> None:
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            net = _RandomConvNet(in_channels, width, channels)
        finally:
            torch.random.set_rng_state(gen_state)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        super().__init__(net, 2 * channels, in_channels, image_size)
        self._spec = {"kind": "random-conv", "channels": channels, "width": width, "in_channels": in_channels,
                      "image_size": None if image_size is None else list(image_size), "seed": seed}

    def spec(self) -> Optional[Dict[str, Any]]:
        return dict(self._spec)


def extractor_from_spec(spec: Optional[Dict[str, Any]]) -> Optional[FeatureExtractor]:
    if not spec:
        return None
    spec = dict(spec)
    if spec.pop("kind") != "random-conv":
        return None
    size = spec.pop("image_size")
    return RandomConvExtractor(image_size=None if size is None else tuple(size), **spec)


def _as_extractor(extractor: Union[FeatureExtractor, FeatureFn, None]) -> FeatureExtractor:
    if extractor is None:
        return RandomConvExtractor()
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if callable(extractor):  # out_dim unknown: probe lazily
        return _LazyExtractor(extractor)
    raise ValueError(f"extractor must be a FeatureExtractor or a callable images -> features, got {type(extractor).__name__}")


class _LazyExtractor(FeatureExtractor):
    def __init__(self, fn: FeatureFn) -> None:
        super().__init__(fn, out_dim=-1, in_channels=None, image_size=None)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check(images)
        feats = self.fn(images.float())
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] != images.shape[0]:
            raise ValueError(f"feature extractor must return [n, d] for n={images.shape[0]} images, got "
                             f"{tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__}")
        return feats.float()


# --------------------------------------------------------------------------------------------
# Picking images per class
# --------------------------------------------------------------------------------------------

def _collect(data: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """All ``(images, labels)`` of a pair of tensors, a Dataset or a DataLoader."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        x, y = torch.as_tensor(data[0]), torch.as_tensor(data[1])
        return x, y
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys = [], []
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("the DataLoader must yield (images, labels) batches")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]).reshape(-1))
        if not xs:
            raise ValueError("the DataLoader yielded no batches")
        return torch.cat(xs), torch.cat(ys)
    if isinstance(data, torch.utils.data.Dataset) or hasattr(data, "__getitem__"):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the dataset is empty")
        items = [data[i] for i in range(n)]
        if not all(isinstance(it, (tuple, list)) and len(it) >= 2 for it in items[:1]):
            raise ValueError("the dataset must yield (image, label) pairs")
        return torch.stack([torch.as_tensor(it[0]) for it in items]), torch.as_tensor([int(it[1]) for it in items])
    raise ValueError(f"expected a Dataset, a DataLoader or a pair of tensors (x, y), got {type(data).__name__}")


def encode_dataset(data: Any, extractor: Union[FeatureExtractor, FeatureFn, None] = None, images_per_class: int = 10,
                   seed: int = 0, classes: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Features ``[C, k, d]`` of ``k = images_per_class`` images drawn (seeded) from each class.

    ``data``: a ``torch.utils.data.Dataset`` or ``DataLoader`` yielding ``(image, label)``, or a
    pair of tensors ``(x [n, 3, H, W], y [n])``. ``classes``: which labels to use, in that order
    (default: all labels present, sorted). Raises ``ValueError`` for images of the wrong shape,
    fewer than 2 classes, or a class with fewer than ``k`` images.
    """
    if images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1, got {images_per_class}")
    ext = _as_extractor(extractor)
    x, y = _collect(data)
    y = y.reshape(-1).long()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"got {x.shape[0]} images but {y.shape[0]} labels")
    ext.check(x)  # shape errors before any work
    present = sorted(int(c) for c in torch.unique(y).tolist())
    wanted = present if classes is None else [int(c) for c in classes]
    if len(wanted) < 2:
        raise ValueError(f"a dataset encoding needs at least 2 classes, found {len(wanted)} ({wanted})")
    rng = np.random.default_rng(seed)
    picks: List[np.ndarray] = []
    for c in wanted:
        idx = np.flatnonzero(y.numpy() == c)
        if len(idx) == 0:
            raise ValueError(f"class {c} has no images (classes present: {present})")
        if len(idx) < images_per_class:
            raise ValueError(f"class {c} has {len(idx)} image(s), need images_per_class={images_per_class}")
        picks.append(rng.choice(idx, images_per_class, replace=False))
    sel = torch.as_tensor(np.concatenate(picks))
    feats = ext(x[sel])
    return feats.reshape(len(wanted), images_per_class, feats.shape[-1])


# --------------------------------------------------------------------------------------------
# Set encoder
# --------------------------------------------------------------------------------------------

class _MAB(nn.Module):
    """Multihead attention block: ``H = LN(Q + MHA(Q, K, K))``, ``out = LN(H + FF(H))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = self.ln1(q + self.att(q, k, k, need_weights=False)[0])
        return self.ln2(h + self.ff(h))


class _SAB(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.mab = _MAB(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab(x, x)


class _PMA(nn.Module):
    """Pooling by attention with one learned seed: ``[B, n, dim] -> [B, dim]``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.randn(1, 1, dim) / dim ** 0.5)
        self.mab = _MAB(dim, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mab(self.seed.expand(x.shape[0], -1, -1), x).squeeze(1)


class SetEncoder(nn.Module):
    """Two-level set encoder: features grouped per class ``[C, k, d]`` -> task vector ``[out_dim]``.

    Level 1 (within a class, over its ``k`` images): SAB + PMA -> one vector per class.
    Level 2 (across the ``C`` classes): SAB + PMA -> one vector, then a linear map. Invariant to
    the order of the images and of the classes. Also accepts a batch ``[T, C, k, d]`` -> ``[T, out]``.
    """

    def __init__(self, feature_dim: int, out_dim: int = 32, hidden: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.feature_dim, self.out_dim = int(feature_dim), int(out_dim)
        # input standardisation, fitted on the meta-training features (saved with the weights)
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))
        self.inp = nn.Linear(feature_dim, hidden)
        self.sab1, self.pma1 = _SAB(hidden, heads), _PMA(hidden, heads)
        self.sab2, self.pma2 = _SAB(hidden, heads), _PMA(hidden, heads)
        self.out = nn.Linear(hidden, out_dim)

    def check(self, feats: torch.Tensor) -> None:
        if not isinstance(feats, torch.Tensor):
            raise ValueError(f"dataset features must be a tensor [C, k, {self.feature_dim}], got {type(feats).__name__}")
        if feats.dim() not in (3, 4):
            raise ValueError(f"dataset features must be [C classes, k images, {self.feature_dim}] (or a batch "
                             f"[T, C, k, {self.feature_dim}]), got shape {tuple(feats.shape)} (rank {feats.dim()})")
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"dataset features must have dimension {self.feature_dim} (the extractor's), got "
                             f"{feats.shape[-1]} (shape {tuple(feats.shape)})")
        if feats.shape[-3] < 2:
            raise ValueError(f"a dataset encoding needs at least 2 classes, got {feats.shape[-3]} (shape {tuple(feats.shape)})")
        if feats.shape[-2] < 1:
            raise ValueError(f"every class needs at least 1 image, got k=0 (shape {tuple(feats.shape)})")
        if not torch.isfinite(feats).all():
            raise ValueError("dataset features contain NaN or inf")

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        self.check(feats)
        single = feats.dim() == 3
        if single:
            feats = feats[None]
        t, c, k, _ = feats.shape
        h = self.inp((feats.reshape(t * c, k, -1) - self.feat_mean) / self.feat_std)
        per_class = self.pma1(self.sab1(h)).reshape(t, c, -1)  # [T, C, hidden]
        task = self.out(self.pma2(self.sab2(per_class)))  # [T, out]
        return task[0] if single else task


# --------------------------------------------------------------------------------------------
# Task-conditioned surrogate
# --------------------------------------------------------------------------------------------

class GraphTower(GraphSurrogate):
    """:class:`GraphSurrogate`'s noise-aware directed GNN, returning its pooled representation
    ``[B, 2 * hidden]`` (graph mean + output node) instead of a scalar."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head = nn.Identity()  # the pooled representation is the output

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = self.inp(x) + self.node_emb[None] + self.noise_emb(noise_level)[:, None, :]
        for fwd, bwd, norm in zip(self.fwd, self.bwd, self.norms):
            h = h + torch.nn.functional.silu(0.5 * (fwd(norm(h), self.adj) + bwd(norm(h), self.adj_t)))
        return torch.cat([h.mean(1), h[:, -1]], dim=-1)


class TaskConditionedSurrogate(nn.Module):
    """``f(x_t, t, D)``: graph tower ``[B, 2h]`` ++ task vector ``[E]`` -> MLP -> ``[B]``.

    ``forward(x [B, N, V], noise_level [B], task)`` where ``task`` is a task vector ``[E]`` /
    ``[B, E]`` (from :meth:`encode_task`) or dataset features ``[C, k, d]``.
    """

    def __init__(self, num_types: int, adjacency: np.ndarray, feature_dim: int, hidden: int = 32, num_layers: int = 3,
                 task_dim: int = 32, set_hidden: int = 64, mlp_hidden: int = 64, log_noise: bool = True) -> None:
        super().__init__()
        self.config = {"hidden": hidden, "num_layers": num_layers, "task_dim": task_dim, "set_hidden": set_hidden,
                       "mlp_hidden": mlp_hidden, "feature_dim": int(feature_dim), "log_noise": bool(log_noise)}
        self.graph = GraphTower(num_types, adjacency, hidden, num_layers, log_noise)
        self.set_encoder = SetEncoder(feature_dim, task_dim, set_hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden + task_dim, mlp_hidden), nn.SiLU(),
                                  nn.Linear(mlp_hidden, mlp_hidden), nn.SiLU(), nn.Linear(mlp_hidden, 1))

    def encode_task(self, feats: torch.Tensor) -> torch.Tensor:
        return self.set_encoder(feats)

    def forward_mean(self, x: torch.Tensor, noise_level: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """Prediction averaged over several task vectors ``[S, E]`` (encodings of several random
        draws of the target's images, as the authors average over 10 draws): with few training
        tasks one draw can land on the wrong side of what the set encoder learnt. -> ``[B]``."""
        g = self.graph(x, noise_level)  # [B, 2h], computed once for all draws
        b, s = g.shape[0], tasks.shape[0]
        h = torch.cat([g[None].expand(s, -1, -1), tasks[:, None, :].expand(-1, b, -1)], dim=-1)
        return self.head(h).squeeze(-1).mean(0)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        g = self.graph(x, noise_level)
        if task.dim() == 3:  # dataset features
            task = self.encode_task(task)
        if task.dim() == 1:
            task = task.expand(g.shape[0], -1)
        if task.shape != (g.shape[0], self.config["task_dim"]):
            raise ValueError(f"task must be a vector [{self.config['task_dim']}], [B, {self.config['task_dim']}] or "
                             f"dataset features [C, k, {self.config['feature_dim']}], got {tuple(task.shape)}")
        return self.head(torch.cat([g, task], dim=-1)).squeeze(-1)


class DatasetMetaPredictor:
    """A trained dataset-aware meta-predictor: model, SDE, space and (if rebuildable) extractor."""

    def __init__(self, space: GraphSpace, model: TaskConditionedSurrogate, sde: SDE,
                 extractor: Optional[FeatureExtractor] = None, info: Optional[Dict[str, Any]] = None) -> None:
        self.space, self.model, self.sde, self.extractor = space, model.eval(), sde, extractor
        self.info = dict(info or {})

    def features(self, types: np.ndarray) -> torch.Tensor:
        return to_features(torch.as_tensor(np.asarray(types), dtype=torch.long), self.space.num_types)

    @torch.no_grad()
    def task_vector(self, dataset_features: torch.Tensor) -> torch.Tensor:
        return self.model.encode_task(torch.as_tensor(dataset_features, dtype=torch.float32))

    def encode(self, data: Any, images_per_class: int = 10, seed: int = 0,
               classes: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Task vector of a user dataset (with the extractor the predictor was trained with)."""
        if self.extractor is None:
            raise ValueError("this meta-predictor was trained with a custom feature extractor: pass features "
                             "from the same extractor to task_vector() instead")
        return self.task_vector(encode_dataset(data, self.extractor, images_per_class, seed, classes))

    @torch.no_grad()
    def predict(self, types: np.ndarray, task: torch.Tensor, eps: float = 1e-5) -> np.ndarray:
        """Standardised quality of clean graphs ``[B, N]`` for a task (vector ``[E]`` or
        dataset features ``[C, k, d]``): higher is better."""
        x = self.features(types)
        level = self.sde.noise_level(torch.full((len(x),), eps))
        return self.model(x, level, torch.as_tensor(task, dtype=torch.float32)).numpy()

    def save(self, path: Union[str, Path]) -> None:
        save_checkpoint(path, "dataset-meta", self.space.signature(), {
            "model_config": dict(self.model.config),
            "sde": self.sde.to_dict(),
            "extractor": self.extractor.spec() if self.extractor is not None else None,
            "state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "info": self.info,
        })


def load_dataset_meta(path: Union[str, Path], space: GraphSpace) -> DatasetMetaPredictor:
    """Load a dataset-aware meta-predictor; raises
    :class:`~nni_diffusionnag.exceptions.SpaceMismatchError` if it was trained for another space."""
    ckpt = load_checkpoint(path, "dataset-meta", space.signature())
    cfg = dict(ckpt["model_config"])
    model = TaskConditionedSurrogate(space.num_types, space.adjacency, **cfg)
    model.load_state_dict(ckpt["state"])
    d = dict(ckpt["sde"])
    sde = get_sde(d.pop("kind"), **d)
    return DatasetMetaPredictor(space, model, sde, extractor_from_spec(ckpt.get("extractor")), ckpt.get("info"))


def _zscore(v: np.ndarray) -> np.ndarray:
    return (v - v.mean()) / max(float(v.std()), 1e-9)


def train_dataset_meta(space: GraphSpace, tasks: Sequence[Tuple[np.ndarray, np.ndarray, torch.Tensor]],
                       steps: int = 400, seed: int = 0, sde: Optional[SDE] = None, batch_per_task: int = 64,
                       lr: float = 2e-3, images_per_step: Optional[int] = None, hidden: int = 32,
                       num_layers: int = 3, task_dim: int = 32, extractor: Optional[FeatureExtractor] = None,
                       output: Optional[Union[str, Path]] = None, eps: float = 1e-5,
                       progress: bool = False) -> DatasetMetaPredictor:
    """Meta-train :class:`TaskConditionedSurrogate` on ``tasks``: a list of
    ``(types [M, N], values [M], dataset_features [C, k, d])`` (values to maximise, z-scored per
    task). Each step draws ``batch_per_task`` graphs of every task, perturbs them with the SDE at
    ``t ~ U(eps, 1)`` and, as augmentation, encodes each dataset from a random subset of
    ``images_per_step`` images per class (default: about half, at least 2). ``extractor`` is only
    recorded (so that :meth:`DatasetMetaPredictor.encode` works after loading).
    """
    if not tasks:
        raise ValueError("train_dataset_meta needs at least one task")
    xs, ys, fs = [], [], []
    feature_dim = None
    for i, task in enumerate(tasks):
        if len(task) != 3:
            raise ValueError(f"task {i}: expected (types, values, dataset_features), got {len(task)} item(s)")
        types, values, feats = np.asarray(task[0]), np.asarray(task[1], dtype=np.float64), torch.as_tensor(task[2]).float()
        if types.ndim != 2 or types.shape[1] != space.num_nodes or len(types) != len(values):
            raise ValueError(f"task {i}: need types [M, {space.num_nodes}] and values [M], got {types.shape} and {values.shape}")
        if feats.dim() != 3:
            raise ValueError(f"task {i}: dataset features must be [C, k, d], got shape {tuple(feats.shape)}")
        if feature_dim is None:
            feature_dim = feats.shape[-1]
        elif feats.shape[-1] != feature_dim:
            raise ValueError(f"task {i}: feature dimension {feats.shape[-1]} differs from task 0's {feature_dim}")
        ok = np.isfinite(values)
        if ok.sum() < 2:
            raise ValueError(f"task {i} has fewer than 2 finite values")
        xs.append(to_features(torch.as_tensor(types[ok], dtype=torch.long), space.num_types))
        ys.append(torch.as_tensor(_zscore(values[ok]), dtype=torch.float32))
        fs.append(feats)
    sde = sde or VESDE(0.1, 5.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
        torch.manual_seed(seed)
        model = TaskConditionedSurrogate(space.num_types, space.adjacency, feature_dim, hidden, num_layers, task_dim,
                                         log_noise=sde.kind == "ve")
    for f in fs:
        model.set_encoder.check(f)
    allf = torch.cat([f.reshape(-1, feature_dim) for f in fs])
    model.set_encoder.feat_mean.copy_(allf.mean(0))
    model.set_encoder.feat_std.copy_(allf.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    t0, loss_v = time.time(), float("nan")
    for _ in tqdm(range(steps), desc="meta-training (dataset-aware)", disable=not progress):
        vecs, xb, yb = [], [], []
        for x0, y, f in zip(xs, ys, fs):
            k = f.shape[1]
            kk = min(k, images_per_step or max(2, k // 2))
            sub = torch.argsort(torch.rand(f.shape[0], k, generator=gen), dim=1)[:, :kk]
            vecs.append(model.encode_task(torch.gather(f, 1, sub[..., None].expand(-1, -1, f.shape[-1]))))
            idx = torch.randint(0, len(x0), (batch_per_task,), generator=gen)
            xb.append(x0[idx])
            yb.append(y[idx])
        x = torch.cat(xb)
        task = torch.repeat_interleave(torch.stack(vecs), batch_per_task, dim=0)
        t = torch.rand(len(x), generator=gen) * (1 - eps) + eps
        mean, std = sde.marginal_prob(x, t)
        xt = mean + std[:, None, None] * torch.randn(mean.shape, generator=gen)
        pred = model(xt, sde.noise_level(t), task)
        loss = ((pred - torch.cat(yb)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = loss.item()
    model.eval()
    meta = DatasetMetaPredictor(space, model, sde, extractor,
                                {"tasks": len(tasks), "steps": steps, "train_mse": loss_v, "seed": seed,
                                 "seconds": round(time.time() - t0, 1)})
    if output is not None:
        meta.save(output)
    return meta
