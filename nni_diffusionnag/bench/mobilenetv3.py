"""``nni-diffusionnag bench mobilenetv3``: guided generation vs sample-and-filter on OFA MobileNetV3.

The question (the paper's argument for guidance; docs/benchmarks.md §5.4): in a space of ~2e19 networks, how
many predictor calls and how much wall time does it take to find a network whose *predicted*
accuracy reaches a target while its exact FLOPs stay within a budget?

Protocol, per seed:

1. **Predictor.** An accuracy surrogate (the strategy's noise-aware GNN ensemble) is fitted on
   ``num_labels`` random OFA networks (10 outputs) each trained for 2 epochs on scikit-learn's
   digits at 32x32 (:func:`~nni_diffusionnag.integration.evaluators.label_on_digits`; measured once and cached
   in ``mbv3_labels.json``). It is a real, small proxy task, not ImageNet: the benchmark measures
   the cost of *searching* a given predictor, which is what guidance changes.
2. **Targets.** ``reference`` random networks (NNI's sampling: uniform depth, uniform ops) give the
   distribution of predicted scores among networks within the budget; the targets are its top
   1%, 0.1% and 0.01% quantiles and its maximum ("best of the reference").
3. **Sample-and-filter.** Fresh random networks in chunks; the exact FLOPs (free, no predictor)
   drop those over budget and the predictor scores the rest. Predictor calls = networks scored
   (over-budget ones are not charged: the most favourable accounting for filtering). Stops when
   every target is reached or after ``filter_cap`` calls.
4. **Guided.** Batches of ``batch`` networks from the shipped prior guided by the surrogate mean
   and the FLOPs budget (:func:`~nni_diffusionnag.properties.mobilenetv3.budget_constraint`);
   every graph passed through the surrogate counts as one call, so each batch costs
   ``batch x (2 x steps)`` guidance calls (corrector + predictor step, forward + backward) plus
   ``batch`` to score the result. A target is reached when a generated network within budget
   has a predicted score at or above it.

Calls are counted by a forward hook on the surrogate, so nothing is estimated.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..search.generator import GuidedGenerator
from ..nn.surrogate import SurrogateConfig
from ..prior.model import DiffusionPrior, SamplerConfig
from ..properties import mobilenetv3 as mbv3
from ..space.mobilenetv3 import MobileNetV3OFASpace, ofa_mobilenetv3
from .common import machine_info, peak_rss_mb, write_json

__all__ = ["run_mbv3_bench", "summarize"]

_logger = logging.getLogger(__name__)

QUANTILES = (1e-2, 1e-3, 1e-4)


class _Counter:
    """Counts graphs passed through a module's forward (one call per graph per pass)."""

    def __init__(self, module: Any) -> None:
        self.calls = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        self.calls += int(inputs[0].shape[0])

    def remove(self) -> None:
        self._handle.remove()


def _labels(path: Path, space: MobileNetV3OFASpace, n: int, epochs: int) -> Dict[str, Any]:
    """Digits accuracies of ``n`` random OFA networks, cached at ``path``."""
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("n") == n and cached.get("epochs") == epochs:
            return cached
    from ..integration.evaluators import label_on_digits

    types = space.random_types(n, np.random.default_rng(12345))
    model_space = ofa_mobilenetv3(num_labels=10)
    t0 = time.time()
    acc = label_on_digits(model_space, [space.types_to_sample(t) for t in types], epochs=epochs, num_threads=1)
    result = {"n": n, "epochs": epochs, "types": types.tolist(), "accuracy": acc.tolist(),
              "seconds": round(time.time() - t0, 1),
              "task": "scikit-learn digits at 32x32, 512 training images, Adam, validation accuracy (%)"}
    write_json(path, result)
    return result


def _first_hits(scores: np.ndarray, targets: Sequence[float], done: Dict[int, Any], calls_before: int,
                t_elapsed: float) -> None:
    """Record, for each target not yet reached, the call count at its first hit in ``scores``."""
    for i, target in enumerate(targets):
        if i in done:
            continue
        hit = np.flatnonzero(scores >= target)
        if len(hit):
            done[i] = {"calls": calls_before + int(hit[0]) + 1, "seconds": round(t_elapsed, 3)}


def _filter_run(gen: GuidedGenerator, counter: _Counter, space: MobileNetV3OFASpace, budget: float,
                targets: Sequence[float], cap: int, rng: np.random.Generator, trace_calls: int,
                chunk: int = 5_000) -> Dict[str, Any]:
    """Until every target is reached (or ``cap`` calls), and at least ``trace_calls`` for the trace."""
    done: Dict[int, Any] = {}
    start_calls, t0, drawn, best = counter.calls, time.time(), 0, -np.inf
    trace: List[List[float]] = []
    while (len(done) < len(targets) or counter.calls - start_calls < trace_calls) and counter.calls - start_calls < cap:
        types = space.random_types(chunk, rng)
        drawn += chunk
        ok = types[mbv3.count(types, "flops", unit="M") <= budget]
        ok = ok[: cap - (counter.calls - start_calls)]
        before = counter.calls - start_calls
        mean, _ = gen.predict(ok)
        _first_hits(mean, targets, done, before, time.time() - t0)
        best = max(best, float(mean.max())) if len(mean) else best
        trace.append([counter.calls - start_calls, best])
    return {"hits": {str(i): done.get(i) for i in range(len(targets))}, "calls": counter.calls - start_calls,
            "drawn": drawn, "seconds": round(time.time() - t0, 2), "trace": trace}


def _guided_run(gen: GuidedGenerator, counter: _Counter, budget: float, targets: Sequence[float], batch: int,
                max_batches: int, min_batches: int, scale: float, seed: int) -> Dict[str, Any]:
    """Until every target is reached (or ``max_batches``), and at least ``min_batches`` for the trace."""
    done: Dict[int, Any] = {}
    start_calls, t0, best = counter.calls, time.time(), -np.inf
    within: List[float] = []
    trace: List[List[float]] = []
    for b in range(max_batches):
        out = gen.generate(batch, scale=scale, acquisition="mean", seed=seed * 1000 + b)
        flops = mbv3.count(out.types, "flops", unit="M")
        within.append(float((flops <= budget).mean()))
        ok = out.types[flops <= budget]
        before = counter.calls - start_calls  # guidance calls of this batch included
        if len(ok):
            mean, _ = gen.predict(ok)
            _first_hits(mean, targets, done, before, time.time() - t0)
            best = max(best, float(mean.max()))
        trace.append([counter.calls - start_calls, best])
        if len(done) == len(targets) and b + 1 >= min_batches:
            break
    return {"hits": {str(i): done.get(i) for i in range(len(targets))}, "calls": counter.calls - start_calls,
            "batches": len(within), "within_budget": float(np.mean(within)), "seconds": round(time.time() - t0, 2),
            "trace": trace}


def run_mbv3_bench(output: str | Path, seeds: int = 5, budget_mflops: float = 220.0, num_labels: int = 24,
                   label_epochs: int = 2, reference: int = 1_000_000, batch: int = 20, max_batches: int = 50,
                   min_batches: int = 10, trace_calls: int = 100_000,
                   filter_cap: int = 400_000, scale: float = 1.0, sampler: SamplerConfig = SamplerConfig(num_steps=30),
                   surrogate: SurrogateConfig = SurrogateConfig(), prior_path: str | None = None,
                   device: str = "cpu", sweep_budgets: Sequence[float] = (200.0, 220.0, 250.0),
                   sweep_scales: Sequence[float] = (1.0, 2.0, 3.0, 5.0), sweep_seeds: int = 3) -> Dict[str, Any]:
    """Run the benchmark; write ``mobilenetv3.json`` and ``mobilenetv3.png`` under ``output``."""
    out = Path(output)
    space = MobileNetV3OFASpace()
    prior = DiffusionPrior.load(prior_path, space, device) if prior_path else DiffusionPrior.shipped(space, device)
    labels = _labels(out / "mbv3_labels.json", space, num_labels, label_epochs)
    label_types, acc = np.asarray(labels["types"]), np.asarray(labels["accuracy"])
    constraint = mbv3.budget_constraint("flops", budget_mflops)
    result: Dict[str, Any] = {
        "machine": machine_info(), "budget_mflops": budget_mflops, "seeds": seeds, "reference": reference,
        "batch": batch, "scale": scale, "sampler": vars(sampler), "surrogate": surrogate.to_dict(),
        "filter_cap": filter_cap, "labels": {k: labels[k] for k in ("n", "epochs", "seconds", "task")},
        "label_accuracy": {"min": float(acc.min()), "mean": float(acc.mean()), "max": float(acc.max())},
        "quantiles": list(QUANTILES), "runs": [],
    }
    for seed in tqdm(range(seeds), desc="bench mobilenetv3"):
        gen = GuidedGenerator(prior, surrogate, sampler, constraints=[constraint], seed=seed)
        gen.fit(label_types, acc)
        counter = _Counter(gen.surrogate)
        rng = np.random.default_rng(10_000 + seed)
        ref = space.random_types(reference, rng)
        ref_within = ref[mbv3.count(ref, "flops", unit="M") <= budget_mflops]
        ref_scores, _ = gen.predict(ref_within)
        targets = [float(np.quantile(ref_scores, 1 - q)) for q in QUANTILES] + [float(ref_scores.max())]
        row: Dict[str, Any] = {"seed": seed, "targets": targets, "reference_within": len(ref_within),
                               "fraction_within_budget": len(ref_within) / reference}
        row["filter"] = _filter_run(gen, counter, space, budget_mflops, targets, filter_cap,
                                    np.random.default_rng(20_000 + seed), trace_calls)
        row["guided"] = _guided_run(gen, counter, budget_mflops, targets, batch, max_batches, min_batches, scale, seed)
        counter.remove()
        result["runs"].append(row)
        _logger.info("seed %d: filter %s / guided %s", seed, row["filter"]["hits"], row["guided"]["hits"])
    result["budget_sweep"] = _budget_sweep(prior, sampler, surrogate, label_types, acc, sweep_budgets,
                                           sweep_scales, sweep_seeds)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["summary"] = _summary(result)
    write_json(out / "mobilenetv3.json", result)
    _plot(result, out / "mobilenetv3.png")
    return result


def _budget_sweep(prior: DiffusionPrior, sampler: SamplerConfig, surrogate: SurrogateConfig, label_types: np.ndarray,
                  acc: np.ndarray, budgets: Sequence[float], scales: Sequence[float], seeds: int,
                  n: int = 100) -> List[Dict[str, Any]]:
    """Fraction of generated networks within budget against the budget term's scale, with the
    budget alone and with accuracy guidance (scale 1) on top."""
    rows = []
    for budget in tqdm(budgets, desc="budget sweep"):
        for scale in scales:
            constraint = mbv3.budget_constraint("flops", budget, scale=scale)
            for acc_scale in (0.0, 1.0):
                within = []
                for seed in range(seeds):
                    gen = GuidedGenerator(prior, surrogate, sampler, constraints=[constraint], seed=seed)
                    if acc_scale:
                        gen.fit(label_types, acc)
                    out = gen.generate(n, scale=acc_scale, acquisition="mean", seed=seed)
                    within.append(float((mbv3.count(out.types, "flops", unit="M") <= budget).mean()))
                rows.append({"budget": budget, "budget_scale": scale, "accuracy_scale": acc_scale,
                             "within": float(np.mean(within)), "per_seed": within})
    return rows


def _target_names() -> List[str]:
    return [f"top {q:.2%}".replace(".00%", "%") for q in QUANTILES] + ["best of reference"]


def _summary(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for i, name in enumerate(_target_names()):
        row: Dict[str, Any] = {"target": name}
        for method in ("filter", "guided"):
            hits = [r[method]["hits"][str(i)] for r in result["runs"]]
            reached = [h for h in hits if h]
            # an unreached run counts at its cap (a lower bound), so the median is honest
            calls = [h["calls"] if h else r[method]["calls"] for h, r in zip(hits, result["runs"])]
            row[method] = {"reached": len(reached), "median_calls": float(np.median(calls)),
                           "median_seconds": float(np.median([h["seconds"] for h in reached])) if reached else None,
                           "lower_bound": len(reached) < len(hits)}
        row["ratio"] = row["filter"]["median_calls"] / max(row["guided"]["median_calls"], 1)
        rows.append(row)
    return rows


def summarize(result: Dict[str, Any]) -> str:
    """A markdown table of a result."""
    lines = ["| target (predicted score, within budget) | sample-and-filter: calls (reached) | s | guided: calls "
             "(reached) | s | ratio |", "|---|---|---|---|---|---|"]
    for row in result["summary"]:
        f, g = row["filter"], row["guided"]
        lines.append(
            f"| {row['target']} | {'>' if f['lower_bound'] else ''}{f['median_calls']:,.0f} ({f['reached']}/{result['seeds']})"
            f" | {f['median_seconds'] if f['median_seconds'] is not None else '-'} | "
            f"{'>' if g['lower_bound'] else ''}{g['median_calls']:,.0f} ({g['reached']}/{result['seeds']}) | "
            f"{g['median_seconds'] if g['median_seconds'] is not None else '-'} | {row['ratio']:.1f}x |")
    within = np.mean([r["guided"]["within_budget"] for r in result["runs"]])
    frac = np.mean([r["fraction_within_budget"] for r in result["runs"]])
    lines.append("")
    lines.append(f"Budget {result['budget_mflops']:g} MFLOPs: {frac:.1%} of random networks fit; {within:.1%} of the guided "
                 f"networks did. Medians over {result['seeds']} seeds; '>' = some runs hit the cap.")
    if all("trace" in r["guided"] for r in result["runs"]):
        lines += ["", "| seed | best of reference | filter: best (calls) | guided: best after 1 batch (calls) | "
                      "guided: best (calls) |", "|---|---|---|---|---|"]
        for r in result["runs"]:
            f, g = r["filter"]["trace"], r["guided"]["trace"]
            lines.append(f"| {r['seed']} | {r['targets'][-1]:.2f} | {f[-1][1]:.2f} ({f[-1][0]:,.0f}) | "
                         f"{g[0][1]:.2f} ({g[0][0]:,.0f}) | {g[-1][1]:.2f} ({g[-1][0]:,.0f}) |")
    sweep = result.get("budget_sweep", [])
    if sweep:
        scales = sorted({r["budget_scale"] for r in sweep})
        lines += ["", "| budget (MFLOPs) | accuracy guidance | " + " | ".join(f"budget scale {s:g}" for s in scales) + " |",
                  "|---|---|" + "---|" * len(scales)]
        for budget in sorted({r["budget"] for r in sweep}):
            for acc_scale in (0.0, 1.0):
                cells = [next(r for r in sweep if r["budget"] == budget and r["budget_scale"] == s
                              and r["accuracy_scale"] == acc_scale)["within"] for s in scales]
                lines.append(f"| {budget:g} | {'scale 1' if acc_scale else 'off'} | " + " | ".join(f"{c:.1%}" for c in cells) + " |")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _target_names()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    xs = np.arange(len(names))
    styles = (("filter", "tab:gray", "sample-and-filter"), ("guided", "tab:blue", "guided"))
    for k, (method, color, label) in enumerate(styles):
        for i in range(len(names)):
            calls = [r[method]["hits"][str(i)]["calls"] if r[method]["hits"][str(i)] else r[method]["calls"]
                     for r in result["runs"]]
            ax.scatter(np.full(len(calls), xs[i] + (k - 0.5) * 0.25), calls, color=color, s=18,
                       label=label if i == 0 else None)
        for j, r in enumerate(result["runs"]):
            trace = np.asarray(r[method].get("trace", []))
            if len(trace):  # relative to the seed's best of the reference, so seeds share one axis
                ax2.plot(trace[:, 0], trace[:, 1] - r["targets"][-1], color=color, lw=1, alpha=0.7,
                         label=label if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(xs, names)
    ax.set(ylabel="predictor calls to reach the target",
           title=f"OFA MobileNetV3, FLOPs <= {result['budget_mflops']:g} M ({len(result['runs'])} seeds)")
    ax.legend()
    ax2.axhline(0.0, ls=":", color="k", lw=0.8)
    ax2.set_xscale("log")
    ax2.set(xlabel="predictor calls", ylabel="best predicted accuracy - best of reference (points)",
            title=f"best within budget so far (0 = best of {result['reference']:,} random networks)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
