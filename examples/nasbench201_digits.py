"""A real NNI NAS experiment: DiffusionNAG explores NAS-Bench-201, every trial trains its network.

Trials train on scikit-learn's bundled digits images (no download), upsampled to 32x32, on the
GPU when the trial sees one, else on the CPU. The experiment runs NNI's manager and web portal;
open the printed URL while it runs. It ends by itself after ``--trials`` trials and prints the
best architectures.

    python examples/nasbench201_digits.py --trials 8
"""

from __future__ import annotations

import argparse
import logging

from nni_diffusionnag import DiffusionNAG, DiffusionNAGExperiment, train_digits
from nni_diffusionnag.integration.compat import free_port

from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402  (after our package: it quiets NNI's warnings)
from nni.nas.experiment import NasExperimentConfig  # noqa: E402
from nni.nas.hub.pytorch import NasBench201  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="architectures to train")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="trials at once (> 1 can show swapped parameters in NNI 3.0's portal, nni#5726)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-samples", type=int, default=512, help="digits images used for training per trial")
    parser.add_argument("--cells", type=int, default=2, help="NB201 cells per stage (hub default 5)")
    parser.add_argument("--port", type=int, default=0, help="web portal port (0: a free one)")
    parser.add_argument("--generator-device", default="auto", help="where DiffusionNAG samples: auto, cpu, cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # The cell search space is NB201's; fewer cells per stage make CPU trials quick.
    model_space = NasBench201(num_modules_per_stack=args.cells, num_labels=10)
    evaluator = FunctionalEvaluator(train_digits, epochs=args.epochs, max_train_samples=args.train_samples,
                                    num_threads=1)
    strategy = DiffusionNAG(warmup=min(4, args.trials), batch_size=2, device=args.generator_device, seed=args.seed)

    config = NasExperimentConfig("ts", "simplified", "local")
    config.max_trial_number = args.trials
    config.trial_concurrency = args.concurrency
    # Trials see every GPU of the machine (trial_gpu_number unset): the GPU settings that schedule
    # on NNI 3.0 are explained in the README ("GPUs").
    config.training_service.use_active_gpu = True
    port = args.port or free_port()
    exp = DiffusionNAGExperiment(model_space, evaluator, strategy, config)
    print(f"NNI web portal: http://localhost:{port}  (experiment {exp.id})", flush=True)
    try:
        exp.run(port=port)
        top = exp.export_top_models(top_k=3, formatter="dict")
    finally:
        exp.stop()
    print("\nbest architectures (digits validation accuracy, %):")
    results = sorted(strategy.history(), key=lambda r: -r["metric"])
    for row in results[:3]:
        print(f"  {row['metric']:6.2f}  {strategy.space.sample_to_arch(row['sample'])}")
    print(f"top models exported by NNI: {top}")


if __name__ == "__main__":
    main()
