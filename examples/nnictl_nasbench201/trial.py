"""One nnictl trial: rebuild the NAS-Bench-201 network that DiffusionNAG chose, train it on digits.

The tuner sends an NNI sample such as ``{'cell/0_1': 'conv_3x3', 'cell/0_2': 'none', ...}``.
``model_context(params)`` makes ``NasBench201(...)`` build exactly that fixed network (a plain
``nn.Module``). ``train_digits`` trains it on scikit-learn's bundled digits images (no download),
on the GPU when the trial sees one, else on the CPU. It reports the validation accuracy (%) after
every epoch (``nni.report_intermediate_result``) and at the end (``nni.report_final_result``).

Run outside nnictl (``python trial.py``), it trains one fixed cell as a smoke test.
"""

from __future__ import annotations

import argparse
import logging

import nni
import torch

# Importing the package first quiets NNI's "is found to be not a nn.Module" import warnings.
from nni_diffusionnag.integration.evaluators import train_digits

from nni.nas.hub.pytorch import NasBench201  # noqa: E402
from nni.nas.nn.pytorch import model_context  # noqa: E402

# Used when the script runs outside an experiment (nni.get_next_parameter() gives nothing).
DEFAULT_CELL = {"cell/0_1": "conv_3x3", "cell/0_2": "skip_connect", "cell/1_2": "conv_3x3",
                "cell/0_3": "skip_connect", "cell/1_3": "conv_1x1", "cell/2_3": "conv_3x3"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=2, help="NB201 cells per stage (the benchmark uses 5)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=256, help="digits images used for training")
    parser.add_argument("--image-size", type=int, default=32, help="multiple of 4; 16 is ~6x faster on CPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a shared CPU)")
    args = parser.parse_args()
    # Per-epoch loss/accuracy lines of train_digits (NNI prints its own report lines itself).
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("nni_diffusionnag").addHandler(handler)
    logging.getLogger("nni_diffusionnag").setLevel(logging.INFO)

    params = nni.get_next_parameter() or DEFAULT_CELL
    print(f"architecture: {params}", flush=True)
    with model_context(params):
        model = NasBench201(num_modules_per_stack=args.cells, num_labels=10)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    accuracy = train_digits(model, epochs=args.epochs, max_train_samples=args.train_samples,
                            image_size=args.image_size, device=device, num_threads=args.threads)
    print(f"final validation accuracy: {accuracy:.2f}%", flush=True)


if __name__ == "__main__":
    main()
