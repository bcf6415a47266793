"""nni-diffusionnag: DiffusionNAG (An et al., ICLR 2024) for Microsoft NNI 3.0.

Data flow, top-down: search space -> graph encoding (:mod:`.space`) -> score model and
surrogates (:mod:`.nn`) -> guided sampler (:mod:`.diffusion`, :mod:`.generator`) -> NNI strategy
(:mod:`.strategy`) or tuner. The NNI-facing classes are imported lazily, so the math can be used
without importing NNI.
"""

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DiffusionNAG": "nni_diffusionnag.integration.strategy",
    "DiffusionNAGExperiment": "nni_diffusionnag.integration.compat",
    "TabularEvaluator": "nni_diffusionnag.integration.evaluators",
    "train_digits": "nni_diffusionnag.integration.evaluators",
    "DiffusionPrior": "nni_diffusionnag.prior.model",
    "GuidedGenerator": "nni_diffusionnag.search.generator",
    "DiffusionNAGTuner": "nni_diffusionnag.integration.tuner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nni_diffusionnag' has no attribute {name!r}")
