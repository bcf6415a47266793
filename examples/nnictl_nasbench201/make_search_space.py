"""Write the NNI search space of NAS-Bench-201 cells as ``search_space.json`` for nnictl.

The file is derived from NNI's own model space, so it matches what the trial rebuilds::

    python make_search_space.py                 # writes search_space.json next to this script
    python make_search_space.py other/path.json

Each of the 6 cell edges ``cell/0_1`` ... ``cell/2_3`` becomes a ``choice`` over NNI's 5 ops
(``{k: v.as_legacy_dict() for k, v in NasBench201().simplify().items()}``).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path


def search_space() -> dict:
    # NNI warns for every new non-module class in torch.nn when nni.nas.nn.pytorch is imported.
    warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module", category=RuntimeWarning)
    from nni.nas.hub.pytorch import NasBench201

    return {label: mutable.as_legacy_dict() for label, mutable in NasBench201().simplify().items()}


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv else Path(__file__).resolve().with_name("search_space.json")
    out.write_text(json.dumps(search_space(), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
