"""The unconditional diffusion prior over the architectures of one space: score network + SDE.

``DiffusionPrior`` is what a checkpoint holds and what samplers draw from. Training lives in
:mod:`nni_diffusionnag.prior.training`, guidance in :mod:`nni_diffusionnag.diffusion.guidance`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from ..diffusion.config import SamplerConfig
from ..diffusion.decoding import repair_decode, strict_decode
from ..diffusion.sampling import ScoreFn, get_score_fn, pc_sample
from ..diffusion.sde import SDE, VESDE, get_sde
from ..nn.score_net import ScoreNetConfig, ScoreNetwork, known_illegal_score
from ..space import GraphSpace, get_space

__all__ = ["DiffusionPrior", "SamplerConfig", "GeneratedBatch", "resolve_device", "shipped_prior_path"]

_logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``'auto'`` -> CUDA when available, else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class GeneratedBatch:
    """Output of :meth:`DiffusionPrior.generate`.

    ``types`` ``[B, N]`` are repaired (always members of the space); ``valid`` ``[B]`` says which
    graphs were valid under the strict rule before repair; ``x`` ``[B, N, V]`` the raw features.
    """

    types: np.ndarray
    valid: np.ndarray
    x: torch.Tensor


@torch.no_grad()
def sample_features(space: GraphSpace, sde: SDE, score_fn: ScoreFn, n: int, config: SamplerConfig,
                    seed: int | None, device: torch.device, progress: bool = False,
                    start: Tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
    """``n`` raw reverse-SDE samples ``[n, N, V]`` of ``space`` in chunks of ``config.batch_size``,
    one generator seeded with ``seed`` (drawn from torch's RNG if None). Every prior samples this way.
    ``start = (x0 [n, N, V], t_start)``: variations of the graphs ``x0`` instead (``pc_sample``)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,))))
    chunks = []
    for lo in range(0, n, config.batch_size):
        b = min(config.batch_size, n - lo)
        shape = (b, space.num_nodes, space.num_types)
        x0, t_start = (None, 1.0) if start is None else (start[0][lo:lo + b], start[1])
        chunks.append(pc_sample(sde, score_fn, shape, config.num_steps, config.snr, config.corrector_steps,
                                config.eps, gen, device, progress=progress, x_start=x0, t_start=t_start))
    return torch.cat(chunks)


def decode_batch(space: GraphSpace, legal: torch.Tensor, x: torch.Tensor) -> GeneratedBatch:
    """Raw features ``[B, N, V]`` -> strict validity and repaired types (what every prior hands on)."""
    valid, strict = strict_decode(x, legal)
    # Strict validity also needs the space's rules between nodes; what is handed on is repaired.
    valid = valid.cpu().numpy() & space.is_legal(strict.cpu().numpy())
    types = space.repair(repair_decode(x, legal).cpu().numpy(), x)
    return GeneratedBatch(types, valid, x)


def shipped_prior_path(space_name: str) -> Path:
    """Path of the prior shipped in the package for ``space_name``."""
    return Path(__file__).resolve().parent.parent / "priors" / f"{space_name}.pt"


class DiffusionPrior:
    """Score network + SDE for one :class:`~nni_diffusionnag.space.GraphSpace`.

    Parameters
    ----------
    space
        The graph space.
    sde
        Forward SDE; default VE with the authors' sigmas (0.1, 5.0).
    net_config
        Score network size.
    device
        ``None``/``'auto'`` picks CUDA when available.
    """

    def __init__(self, space: GraphSpace, sde: SDE | None = None, net_config: ScoreNetConfig | None = None,
                 device: str | torch.device | None = None) -> None:
        self.space = space
        self.sde = sde or VESDE(0.1, 5.0)
        self.net_config = net_config or ScoreNetConfig(log_noise=self.sde.kind == "ve", mask_illegal=True)
        self.device = resolve_device(device)
        self.net = ScoreNetwork(space.num_types, space.adjacency, space.attention_mask(), self.net_config).to(self.device)
        self.legal = torch.as_tensor(space.legal, device=self.device)
        self.meta: Dict[str, Any] = {}

    def model(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The score model ``(x, noise_level, std) -> score`` that training and sampling use: the
        network, with the illegal entries in closed form if ``net_config.mask_illegal``."""
        if self.net_config.mask_illegal:
            return known_illegal_score(self.net, self.legal, vp=self.sde.kind == "vp")
        return self.net

    def score_fn(self) -> ScoreFn:
        """Score function of the network as it is (call :meth:`eval` first when sampling)."""
        return get_score_fn(self.sde, self.model())

    def eval(self) -> "DiffusionPrior":
        self.net.eval()
        return self

    @torch.no_grad()
    def sample_features(self, n: int, config: SamplerConfig = SamplerConfig(), seed: int | None = None,
                        score_fn: ScoreFn | None = None, progress: bool = False,
                        start: Tuple[torch.Tensor, float] | None = None) -> torch.Tensor:
        """Raw reverse-SDE samples ``[n, N, V]``. ``score_fn`` replaces the plain score (guidance);
        ``start = (x0, t_start)`` samples variations of the graphs ``x0`` (:func:`sample_features`)."""
        self.net.eval()
        return sample_features(self.space, self.sde, score_fn or self.score_fn(), n, config, seed, self.device, progress,
                               start)

    def generate(self, n: int, config: SamplerConfig = SamplerConfig(), seed: int | None = None,
                 score_fn: ScoreFn | None = None, progress: bool = False,
                 start: Tuple[torch.Tensor, float] | None = None) -> GeneratedBatch:
        """Sample ``n`` graphs and decode them (strict validity + repaired types)."""
        return decode_batch(self.space, self.legal, self.sample_features(n, config, seed, score_fn, progress, start))

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, training: Dict[str, Any] | None = None) -> None:
        payload: Dict[str, Any] = {
            "sde": self.sde.to_dict(),
            "score_net": self.net_config.to_dict(),
            "attention_mask": "reachability",  # used for training and sampling alike
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "meta": self.meta,
        }
        if training is not None:
            payload["training"] = training
        save_checkpoint(path, "prior", self.space.signature(), payload)

    @classmethod
    def load(cls, path: str | os.PathLike, space: GraphSpace | None = None,
             device: str | torch.device | None = None) -> "DiffusionPrior":
        """Load a prior; with ``space`` given, its signature must match the checkpoint's."""
        ckpt = load_checkpoint(path, "prior", expected=space.signature() if space is not None else None)
        if space is None:
            space = get_space(ckpt["signature"]["name"])
        sde_args = dict(ckpt["sde"])
        sde = get_sde(sde_args.pop("kind"), **sde_args)
        prior = cls(space, sde, ScoreNetConfig(**ckpt["score_net"]), device)
        prior.net.load_state_dict(ckpt["state_dict"], strict=True)
        prior.meta = dict(ckpt.get("meta", {}))
        return prior.eval()

    @classmethod
    def shipped(cls, space: GraphSpace, device: str | torch.device | None = None) -> "DiffusionPrior":
        """The prior shipped with the package for ``space`` (raises if there is none)."""
        path = shipped_prior_path(space.name)
        if not path.is_file():
            raise FileNotFoundError(
                f"no shipped prior for space '{space.name}'; train one with "
                f"`nni-diffusionnag train-prior --space {space.name} --output PATH`"
            )
        return cls.load(path, space, device)
