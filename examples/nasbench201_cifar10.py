"""DiffusionNAG on NAS-Bench-201 with trials that train on CIFAR-10: the GPU users' version of
``nasbench201_digits.py``.

CIFAR-10 is read from ``--data-dir`` (the official python archive, ``cifar-10-batches-py``);
torchvision downloads it there when it is installed and the folder is missing. Each trial trains
the full hub network (5 cells per stage) for ``--epochs`` epochs and reports the CIFAR-10 test
accuracy after every epoch.

    python examples/nasbench201_cifar10.py --trials 30 --epochs 12 --data-dir ~/data/cifar10

GPUs (NNI 3.0's local training service, see the README): with one GPU, leave
``trial_gpu_number`` unset and run one trial at a time (the default here), or pass
``--gpu-share 2`` to run two trials per GPU (a 0.5-GPU request, which NNI's scheduler accepts);
the generator itself uses ``--generator-device`` (CPU by default, so the GPU is the trials').
"""

from __future__ import annotations

import argparse
import logging

from nni_diffusionnag import DiffusionNAG, DiffusionNAGExperiment
from nni_diffusionnag.integration.compat import free_port
from nni_diffusionnag.integration.evaluators import train_cifar10

from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.experiment import NasExperimentConfig  # noqa: E402
from nni.nas.hub.pytorch import NasBench201  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--data-dir", default="~/.cache/nni-diffusionnag/cifar10")
    parser.add_argument("--gpu-share", type=int, default=0,
                        help="trials per GPU (0: trial_gpu_number unset, trials see all GPUs, concurrency 1)")
    parser.add_argument("--generator-device", default="cpu")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    evaluator = FunctionalEvaluator(train_cifar10, data_dir=args.data_dir, epochs=args.epochs)
    strategy = DiffusionNAG(device=args.generator_device, seed=args.seed)
    config = NasExperimentConfig("ts", "simplified", "local")
    config.max_trial_number = args.trials
    config.training_service.use_active_gpu = True
    if args.gpu_share:
        config.trial_gpu_number = 1
        config.training_service.max_trial_number_per_gpu = args.gpu_share
        config.trial_concurrency = args.gpu_share
    else:
        config.trial_concurrency = 1
    port = args.port or free_port()
    exp = DiffusionNAGExperiment(NasBench201(), evaluator, strategy, config)
    print(f"NNI web portal: http://localhost:{port}  (experiment {exp.id})", flush=True)
    try:
        exp.run(port=port)
    finally:
        exp.stop()
    for row in sorted(strategy.history(), key=lambda r: -r["metric"])[:5]:
        print(f"  {row['metric']:6.2f}  {strategy.space.sample_to_arch(row['sample'])}")


if __name__ == "__main__":
    main()
