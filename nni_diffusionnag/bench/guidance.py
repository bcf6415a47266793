"""``nni-diffusionnag bench guidance``: does predictor guidance generate better NB201 cells?

Protocol (per table column, per training-set size N, per seed): fit the surrogate on N random
cells with their table values, then generate k cells guided by the surrogate mean and k cells
unguided, and report the *true* table values of the k cells (mean, max), their uniqueness and the
wall time. Also: a guidance-scale sweep, noise-aware vs clean surrogates, and a params-constrained
run against random cells within the same budget. The table holds test accuracy only, so every
accuracy here is a test accuracy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..search.generator import DEFAULT_SCALE, GuidedGenerator
from ..nn.surrogate import SurrogateConfig
from ..prior.model import DiffusionPrior, SamplerConfig
from ..properties import budget_constraint, count
from ..space import NasBench201Space
from .common import machine_info, nb201_truth, peak_rss_mb, type_index, write_json

__all__ = ["run_guidance_bench"]

_logger = logging.getLogger(__name__)


def _figures(types: np.ndarray, truth: np.ndarray, seconds: float) -> Dict[str, float]:
    vals = truth[type_index(types)]
    return {"mean": float(vals.mean()), "max": float(vals.max()),
            "unique": len({tuple(t) for t in types}) / len(types), "seconds": round(seconds, 2)}


def run_guidance_bench(table: str | Path, output: str | Path, columns: Sequence[str] = ("cifar10_test_acc", "cifar100_test_acc"),
                       ns: Sequence[int] = (50, 100, 200), k: int = 100, seeds: int = 5,
                       scales: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0), params_budget_m: float = 0.6,
                       sampler: SamplerConfig = SamplerConfig(num_steps=50), surrogate: SurrogateConfig = SurrogateConfig(),
                       prior_path: str | None = None, device: str = "cpu") -> Dict[str, Any]:
    """Run the benchmark, write ``guidance.json`` and ``guidance.png`` under ``output``."""
    space = NasBench201Space()
    prior = DiffusionPrior.load(prior_path, space, device) if prior_path else DiffusionPrior.shipped(space, device)
    all_types = space.enumerate_types()
    out = Path(output)
    result: Dict[str, Any] = {"machine": machine_info(), "k": k, "seeds": seeds, "scale": DEFAULT_SCALE,
                              "sampler": vars(sampler) if hasattr(sampler, "__dict__") else str(sampler),
                              "surrogate": surrogate.to_dict(), "note": "all accuracies are NB201 *test* accuracies",
                              "columns": {}}
    total = len(columns) * seeds * (len(ns) + 1 + 1) + seeds
    bar = tqdm(total=total, desc="bench guidance")
    for column in columns:
        truth = nb201_truth(table, column)
        col: Dict[str, Any] = {"table_optimum": float(truth.max()), "space_mean": float(truth.mean()),
                               "by_n": {}, "scale_sweep": {}, "clean_vs_noise_aware": {}}
        for n in ns:
            rows: List[Dict[str, Any]] = []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                train = all_types[rng.choice(len(all_types), n, replace=False)]
                gen = GuidedGenerator(prior, surrogate, sampler, seed=seed)
                t0 = time.time()
                gen.fit(train, truth[type_index(train)])
                fit_s = time.time() - t0
                t0 = time.time()
                guided = gen.generate(k, scale=DEFAULT_SCALE, seed=seed)
                g_fig = _figures(guided.types, truth, time.time() - t0)
                t0 = time.time()
                plain = gen.generate(k, scale=0.0, seed=seed)
                rows.append({"seed": seed, "fit_seconds": round(fit_s, 2), "guided": g_fig,
                             "unguided": _figures(plain.types, truth, time.time() - t0),
                             "train_best": float(truth[type_index(train)].max())})
                bar.update(1)
            col["by_n"][str(n)] = rows
        # scale sweep and clean vs noise-aware at the middle N
        n_mid = sorted(ns)[len(ns) // 2]
        sweep = {str(s): [] for s in scales}
        cvn: Dict[str, List[Dict[str, float]]] = {"noise_aware": [], "clean": []}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            train = all_types[rng.choice(len(all_types), n_mid, replace=False)]
            for variant, noise_aware in (("noise_aware", True), ("clean", False)):
                gen = GuidedGenerator(prior, replace(surrogate, noise_aware=noise_aware), sampler, seed=seed)
                gen.fit(train, truth[type_index(train)])
                t0 = time.time()
                cvn[variant].append(_figures(gen.generate(k, scale=DEFAULT_SCALE, seed=seed).types, truth, time.time() - t0))
                if noise_aware:
                    for s in scales:
                        t0 = time.time()
                        sweep[str(s)].append(_figures(gen.generate(k, scale=s, seed=seed).types, truth, time.time() - t0))
                bar.update(1)
        col["scale_sweep"], col["clean_vs_noise_aware"], col["sweep_n"] = sweep, cvn, n_mid
        result["columns"][column] = col
    # params-constrained generation on the first column
    truth = nb201_truth(table, columns[0])
    params_m = count(all_types, "params", unit="M")
    within = params_m <= params_budget_m
    cons = budget_constraint("params", params_budget_m)
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        train = all_types[rng.choice(len(all_types), sorted(ns)[len(ns) // 2], replace=False)]
        gen = GuidedGenerator(prior, surrogate, sampler, constraints=[cons], seed=seed)
        gen.fit(train, truth[type_index(train)])
        t0 = time.time()
        b = gen.generate(k, scale=DEFAULT_SCALE, seed=seed)
        fig = _figures(b.types, truth, time.time() - t0)
        fig["within_budget"] = float((count(b.types, "params", unit="M") <= params_budget_m).mean())
        ok = b.types[count(b.types, "params", unit="M") <= params_budget_m]
        fig["mean_within_budget"] = float(truth[type_index(ok)].mean()) if len(ok) else float("nan")
        rows.append(fig)
        bar.update(1)
    bar.close()
    result["params_constrained"] = {
        "column": columns[0], "budget_M": params_budget_m, "runs": rows,
        "random_within_budget_mean": float(truth[within].mean()), "fraction_of_space_within": float(within.mean()),
    }
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(out / "guidance.json", result)
    _plot(result, out / "guidance.png")
    return result


def summarize(result: Dict[str, Any]) -> str:
    """Markdown tables of a result."""
    lines = ["| column | N | unguided mean | guided mean | unguided max | guided max | guided unique | guided s |",
             "|---|---|---|---|---|---|---|---|"]
    for column, col in result["columns"].items():
        for n, rows in col["by_n"].items():
            g = lambda key, what: np.mean([r[what][key] for r in rows])  # noqa: E731
            lines.append(f"| {column} | {n} | {g('mean', 'unguided'):.2f} | {g('mean', 'guided'):.2f} | "
                         f"{g('max', 'unguided'):.2f} | {g('max', 'guided'):.2f} | {g('unique', 'guided'):.0%} | "
                         f"{g('seconds', 'guided'):.1f} |")
    lines += ["", "| column | scale | mean | max | unique |", "|---|---|---|---|---|"]
    for column, col in result["columns"].items():
        for s, rows in col["scale_sweep"].items():
            lines.append(f"| {column} | {s} | {np.mean([r['mean'] for r in rows]):.2f} | "
                         f"{np.mean([r['max'] for r in rows]):.2f} | {np.mean([r['unique'] for r in rows]):.0%} |")
    lines += ["", "| column | surrogate | mean | max | unique |", "|---|---|---|---|---|"]
    for column, col in result["columns"].items():
        for v, rows in col["clean_vs_noise_aware"].items():
            lines.append(f"| {column} | {v} | {np.mean([r['mean'] for r in rows]):.2f} | "
                         f"{np.mean([r['max'] for r in rows]):.2f} | {np.mean([r['unique'] for r in rows]):.0%} |")
    pc = result["params_constrained"]
    lines += ["", f"params <= {pc['budget_M']} M ({pc['fraction_of_space_within']:.0%} of the space): "
              f"within budget {np.mean([r['within_budget'] for r in pc['runs']]):.1%}, true mean accuracy of the "
              f"cells within budget {np.nanmean([r['mean_within_budget'] for r in pc['runs']]):.2f} vs "
              f"{pc['random_within_budget_mean']:.2f} for random cells within the budget"]
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(result["columns"])
    fig, axes = plt.subplots(2, len(cols), figsize=(5 * len(cols), 7), squeeze=False)
    for j, column in enumerate(cols):
        col = result["columns"][column]
        ns = list(col["by_n"])
        for what, color in (("unguided", "tab:gray"), ("guided", "tab:blue")):
            m = [np.mean([r[what]["mean"] for r in col["by_n"][n]]) for n in ns]
            e = [np.std([r[what]["mean"] for r in col["by_n"][n]]) for n in ns]
            axes[0, j].errorbar([int(n) for n in ns], m, yerr=e, marker="o", label=what, color=color, capsize=3)
        axes[0, j].axhline(col["table_optimum"], ls="--", color="k", lw=0.8, label="table optimum")
        axes[0, j].set(title=f"{column}: true mean of {result['k']} generated", xlabel="N training cells",
                       ylabel="test accuracy (%)")
        axes[0, j].legend()
        scales = list(col["scale_sweep"])
        axes[1, j].plot([float(s) for s in scales], [np.mean([r["mean"] for r in col["scale_sweep"][s]]) for s in scales],
                        marker="o", label="true mean")
        ax2 = axes[1, j].twinx()
        ax2.plot([float(s) for s in scales], [np.mean([r["unique"] for r in col["scale_sweep"][s]]) for s in scales],
                 marker="s", color="tab:orange", label="unique fraction")
        axes[1, j].set(title=f"guidance-scale sweep (N={col['sweep_n']})", xlabel="scale", ylabel="test accuracy (%)")
        ax2.set_ylabel("unique fraction")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
