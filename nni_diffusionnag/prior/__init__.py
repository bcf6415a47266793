"""The unconditional prior over a space's architectures: the model, its training, its cache.

- :mod:`.model`: :class:`DiffusionPrior` (score network + SDE + space signature) and sampling;
- :mod:`.training`: denoising score matching with EMA, resumable;
- :mod:`.cache`: the prior for a space: shipped, closed-form, cached, or trained on the fly;
- :mod:`.checkpoint`: signature-checked checkpoint files;
- :mod:`.quality`: validity, uniqueness and distribution match of generated graphs.
"""

from .model import DiffusionPrior, GeneratedBatch, SamplerConfig, resolve_device, shipped_prior_path

__all__ = ["DiffusionPrior", "GeneratedBatch", "SamplerConfig", "resolve_device", "shipped_prior_path"]
