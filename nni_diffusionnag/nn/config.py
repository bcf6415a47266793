"""Settings of the networks, importable without torch (NNI's dispatcher must connect within 10 s,
so the tuner validates its arguments before torch is imported)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

__all__ = ["SurrogateConfig", "SURROGATE_KINDS", "SURROGATE_LABELS"]

SURROGATE_KINDS = ("auto", "gnn", "gp")
SURROGATE_LABELS = ("rank", "zscore")  # nn/targets.py


@dataclass(frozen=True)
class SurrogateConfig:
    """Size and training of a :class:`SurrogateEnsemble`."""

    hidden: int = 32
    num_layers: int = 3
    ensemble: int = 5
    noise_aware: bool = True
    steps: int = 200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    bootstrap: bool = True  # each member sees a bootstrap resample: diversity for the uncertainty
    global_readout: bool = False  # also read all node states at once (interactions beyond num_layers hops)
    # 'gnn' (the ensemble above), 'gp' (a Gaussian process over decisions) or 'auto': a GP on a chain
    # of decisions (the generic encoding), the GNN on a cell (nni_diffusionnag/nn/factory.py)
    kind: str = "auto"
    # Adam steps of the GP's marginal-likelihood fit (the GNN trains for ``steps``); the default is
    # the one every GP figure in docs/benchmarks.md was measured with
    gp_steps: int = 150
    # How the search core turns results into targets before each refit (nn/targets.py): 'rank'
    # (normal scores of their ranks: only the order counts, so a tail of broken architectures does
    # not flatten the top) or 'zscore' (the metric's own scale); docs/benchmarks.md §3 measures it.
    # With several objectives it applies to the trial metric; costs keep their units (§11)
    labels: str = "rank"
    # Steps of a GNN refit that starts from the previous fit's weights (the first fit trains
    # ``steps`` from scratch); None: every refit from scratch for ``steps``. The GP ignores it.
    refit_steps: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("hidden", "num_layers", "ensemble", "steps", "batch_size", "gp_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"surrogate {name} must be an int, got {v!r}")
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                    name == "lr" and v == 0):
                raise ValueError(f"surrogate {name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, "
                                 f"got {v!r}")
        if self.batch_size < 1:
            raise ValueError(f"surrogate batch_size must be >= 1, got {self.batch_size!r}")
        if self.ensemble < 1 or self.steps < 0 or self.hidden < 1 or self.num_layers < 1 or self.gp_steps < 1:
            raise ValueError(f"invalid surrogate settings: {self}")
        if self.kind not in SURROGATE_KINDS:
            raise ValueError(f"surrogate kind {self.kind!r} is not one of {list(SURROGATE_KINDS)}")
        if self.refit_steps is not None and not (isinstance(self.refit_steps, int) and self.refit_steps >= 1):
            raise ValueError(f"surrogate refit_steps must be None or an int >= 1, got {self.refit_steps!r}")
        if self.labels not in SURROGATE_LABELS:
            raise ValueError(f"surrogate labels {self.labels!r} is not one of {list(SURROGATE_LABELS)}")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
