"""Settings of the predictor-corrector sampler, importable without torch."""

from __future__ import annotations

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
        if self.num_steps < 1 or self.batch_size < 1 or self.corrector_steps < 0:
            raise ValueError(f"invalid sampler settings: {self}")
