"""Import path kept for NNI: the code is in :mod:`nni_diffusionnag.integration.compat`.

NNI stores dotted paths outside the code (``meta.yml`` and registered algorithms, the class
paths inside trial payloads and experiment checkpoints), so this module must keep resolving.
"""

from .integration.compat import *  # noqa: F401,F403
