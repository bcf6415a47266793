"""Import path kept for NNI: the code is in :mod:`nni_diffusionnag.integration.portal_fix`.

NNI stores dotted paths outside the code (``meta.yml`` and registered algorithms, the class
paths inside trial payloads and experiment checkpoints), so this module must keep resolving.
"""

from .integration.portal_fix import *  # noqa: F401,F403

if __name__ == "__main__":
    from .integration.portal_fix import main

    raise SystemExit(main())
