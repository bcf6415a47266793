"""Settings of the predictor-corrector sampler, importable without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SamplerConfig"]


@dataclass(frozen=True)
class SamplerConfig:
    """Settings of the predictor-corrector sampler (see docs/benchmarks.md for the trade-off)."""

    num_steps: int = 100
    snr: float = 0.16
    corrector_steps: int = 1
    eps: float = 1e-5
    batch_size: int = 1000  # graphs per reverse-SDE run; bounds memory

    def __post_init__(self) -> None:
        for name in ("num_steps", "corrector_steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"sampler {name} must be an int, got {v!r}")
        for name in ("snr", "eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"sampler {name} must be a finite number > 0, got {v!r}")
        if self.num_steps < 1 or self.batch_size < 1 or self.corrector_steps < 0:
            raise ValueError(f"invalid sampler settings: {self}")
