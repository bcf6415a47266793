"""nni-diffusionnag: DiffusionNAG (An et al., ICLR 2024) for Microsoft NNI 3.0.

Data flow, top-down: search space -> graph encoding (:mod:`.space`) -> score model and
surrogates (:mod:`.nn`) -> guided sampler (:mod:`.diffusion`) -> NNI strategy or tuner.
The NNI-facing classes are imported lazily so that the math can be used without importing NNI.
"""

__version__ = "0.1.0"
