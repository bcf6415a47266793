"""Training the diffusion prior by denoising score matching, with EMA, on CPU or CUDA.

The authors train NB201 for 250k steps at lr 2e-5 on a GPU. On a 2-core CPU we use a much higher
learning rate and a few thousand steps; docs/benchmarks.md records the sample quality this
reaches. Training is resumable: the checkpoint written every ``checkpoint_every`` steps holds the
raw weights, the optimiser, the EMA weights, the step and the RNG states.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint
from ..diffusion.decoding import to_features
from ..diffusion.losses import dsm_loss
from .model import DiffusionPrior

__all__ = ["TrainConfig", "train_prior"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of :func:`train_prior`."""

    steps: int = 6000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.ema_decay < 1:
            raise ValueError(f"invalid training settings: {self}")


class _EMA:
    """Exponential moving average of weights with the warm-up ``min(decay, (1+n)/(10+n))``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)


def train_prior(prior: DiffusionPrior, data: np.ndarray, config: TrainConfig = TrainConfig(),
                checkpoint: str | os.PathLike | None = None, resume: bool = True,
                progress: bool = True) -> List[float]:
    """Train ``prior`` on graphs ``data`` (``[M, N]`` node-type indices) and return the loss curve.

    At the end ``prior.net`` holds the EMA weights (the ones to sample with). With ``checkpoint``,
    a resumable checkpoint is written every ``config.checkpoint_every`` steps and at the end; if
    ``resume`` and the file exists, training continues from it (also past a finished run, when
    ``config.steps`` is larger). ``prior.meta`` is saved with it.
    """
    device = prior.device
    data_t = torch.as_tensor(np.asarray(data), dtype=torch.long, device=device)
    if data_t.ndim != 2 or data_t.shape[1] != prior.space.num_nodes:
        raise ValueError(f"data must be [M, {prior.space.num_nodes}] node types, got {tuple(data_t.shape)}")
    if not prior.space.is_legal(data_t.cpu().numpy()).all():
        raise ValueError("training data holds graphs that are not legal in the space")
    x_all = to_features(data_t, prior.space.num_types)

    torch.manual_seed(config.seed)
    gen = torch.Generator(device=device)
    gen.manual_seed(config.seed)
    net = prior.net.train()
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    ema = _EMA(net, config.ema_decay)
    step, losses = 0, []

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path, "prior", expected=prior.space.signature(), map_location=device)
        state = ckpt.get("training")
        if state is None:
            raise ValueError(f"'{ckpt_path}' holds a prior without training state (saved with --strip); "
                             "pass another --output or --no-resume")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.model.load_state_dict(ckpt["state_dict"])
        ema.num_updates, step, losses = state["ema_updates"], state["step"], list(state["losses"])
        gen.set_state(state["rng"].to(gen.get_state().device) if device.type == "cpu" else state["rng"])
        _logger.info("resuming prior training from step %d of %d (%s)", step, config.steps, ckpt_path)

    def save() -> None:
        if ckpt_path is None:
            return
        raw = copy.deepcopy(net.state_dict())
        prior.net.load_state_dict(ema.model.state_dict())
        prior.meta.update(train=asdict(config), train_steps=step, final_loss=float(np.mean(losses[-100:])))
        prior.save(ckpt_path, training={
            "model": {k: v.cpu() for k, v in raw.items()}, "optimizer": opt.state_dict(), "step": step,
            "ema_updates": ema.num_updates, "losses": losses, "rng": gen.get_state().cpu(),
        })
        net.load_state_dict(raw)

    t0 = time.time()
    bar = tqdm(total=config.steps, initial=step, desc="training prior", disable=not progress)
    model = prior.model()  # the network, or the network with closed-form illegal entries
    while step < config.steps:
        idx = torch.randint(0, len(x_all), (config.batch_size,), device=device, generator=gen)
        loss = dsm_loss(model, prior.sde, x_all[idx], generator=gen)
        for group in opt.param_groups:  # linear warm-up
            group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        opt.step()
        ema.update(net)
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % config.checkpoint_every == 0 and step < config.steps:
            save()
    bar.close()
    _logger.info("trained prior for %d steps in %.1f s, final loss %.4f", step, time.time() - t0,
                 float(np.mean(losses[-100:])) if losses else float("nan"))
    save()
    prior.net.load_state_dict(ema.model.state_dict())
    prior.meta.update(train=asdict(config), train_steps=step, final_loss=float(np.mean(losses[-100:])))
    prior.net.eval()
    return losses
