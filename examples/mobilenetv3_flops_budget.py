"""Generate MobileNetV3 networks under a FLOPs budget, guided by an accuracy surrogate.

The space is NNI's own ``MobileNetV3Space`` with Once-for-All's arguments (5 stages of 2-4
inverted-residual layers, kernel 3/5/7, expand ratio 3/4/6: about 2e19 networks), encoded as the
paper's 20-node graph. The steps:

1. measure a few random networks (here: 2 epochs on scikit-learn's digits at 32x32, a stand-in
   for the results of your past trials);
2. fit the accuracy surrogate (noise-aware GNN ensemble) on them;
3. generate networks with the shipped diffusion prior, guided by the surrogate and by the exact
   FLOPs budget (FLOPs at 224x224, counted from the layer structure);
4. check the budget on the generated networks, count the FLOPs of the best one again on the
   frozen PyTorch model, and train it like the measured ones.

    python examples/mobilenetv3_flops_budget.py --budget 220 --measured 12

The same budget in an NNI experiment: ``DiffusionNAG(constraints=[mobilenetv3_budget('flops', 220)])``.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch

from nni_diffusionnag import GuidedGenerator
from nni_diffusionnag.integration.evaluators import label_on_digits
from nni_diffusionnag.prior.cache import prior_for_space
from nni_diffusionnag.properties import mobilenetv3 as mbv3
from nni_diffusionnag.integration.mutables import space_for_model
from nni_diffusionnag.space.mobilenetv3 import ofa_mobilenetv3


def count_frozen_flops(model: torch.nn.Module, resolution: int = 224) -> int:
    """FLOPs (conv + linear multiply-accumulates) counted by running the frozen model once."""
    total = [0]

    def hook(module, inputs, output):
        weights = module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
        total[0] += weights * (output.shape[2] * output.shape[3] if output.dim() == 4 else 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return total[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=220.0, help="MFLOPs at 224x224 (random networks: 135-450)")
    parser.add_argument("--measured", type=int, default=12, help="random networks trained to fit the surrogate")
    parser.add_argument("-n", type=int, default=100, help="networks to generate")
    parser.add_argument("--scale", type=float, default=1.0, help="accuracy guidance strength (0: budget only)")
    parser.add_argument("--epochs", type=int, default=2, help="digits epochs per measured network")
    parser.add_argument("--train-samples", type=int, default=512, help="digits images per measured network")
    parser.add_argument("--device", default="auto", help="generator device: auto, cpu, cuda")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # small models on a small CPU: more threads only contend

    model_space = ofa_mobilenetv3(num_labels=10)
    space = space_for_model(model_space)  # the 20-node OFA encoding
    prior = prior_for_space(space, model_space, device=args.device)  # the shipped prior
    print(f"space: {space.name}, {space.num_architectures():.2e} networks; prior: {prior.meta.get('train_steps')} steps")

    rng = np.random.default_rng(args.seed)
    measured = space.random_types(args.measured, rng)
    train = dict(epochs=args.epochs, max_train_samples=args.train_samples, num_threads=1)
    accuracy = label_on_digits(model_space, [space.types_to_sample(t) for t in measured], **train)
    print(f"measured {len(measured)} random networks: accuracy {accuracy.min():.1f} .. {accuracy.max():.1f} %")

    macro = mbv3.MobileNetV3Macro.from_model(model_space)  # 10 labels, 224x224 input
    budget = mbv3.budget_constraint("flops", args.budget, macro=macro)
    generator = GuidedGenerator(prior, constraints=[budget], seed=args.seed)
    generator.fit(measured, accuracy)
    batch = generator.generate(args.n, scale=args.scale, acquisition="mean", seed=args.seed)

    flops = mbv3.count(batch.types, "flops", macro, unit="M")
    ok = flops <= args.budget
    random_types = space.random_types(20_000, rng)
    random_flops = mbv3.count(random_types, "flops", macro, unit="M")
    random_ok = random_types[random_flops <= args.budget]
    predicted, _ = generator.predict(batch.types[ok]) if ok.any() else (np.zeros(0), None)
    random_pred, _ = generator.predict(random_ok[:2000])
    print(f"\ngenerated {len(flops)} networks: {ok.mean():.1%} within {args.budget:g} MFLOPs "
          f"(random networks: {(random_flops <= args.budget).mean():.1%}); FLOPs {flops.min():.0f} .. {flops.max():.0f} M")
    if not ok.any():
        raise SystemExit("no generated network fits the budget; raise --budget")
    print(f"predicted accuracy within budget: generated {predicted.mean():.2f} (max {predicted.max():.2f}) vs "
          f"random {random_pred.mean():.2f} (max of {len(random_pred)} {random_pred.max():.2f})")

    best = batch.types[ok][int(np.argmax(predicted))]
    sample = space.types_to_sample(best)
    frozen = model_space.freeze(sample)
    print(f"\nbest predicted network: stage depths {space.depths(best).tolist()}, "
          f"ops {[space.node_types[t] for t in best if t != space.num_types - 1]}")
    print(f"FLOPs: exact model {mbv3.count(best, 'flops', macro, unit='M'):.2f} M, counted on the frozen model "
          f"{count_frozen_flops(frozen) / 1e6:.2f} M; params {sum(p.numel() for p in frozen.parameters()) / 1e6:.2f} M")
    trained = label_on_digits(model_space, [sample], progress=False, **train)[0]
    print(f"trained like the measured ones: {trained:.1f} % (surrogate said {predicted.max():.1f} %)")


if __name__ == "__main__":
    main()
