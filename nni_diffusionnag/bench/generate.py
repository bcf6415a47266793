"""``nni-diffusionnag bench generate``: sample quality and cost of the prior against PC steps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Sequence

from ..prior.model import DiffusionPrior, SamplerConfig
from ..prior.quality import quality_report
from ..space import get_space
from .common import machine_info, peak_rss_mb, write_json

__all__ = ["run_generate_bench"]


def run_generate_bench(output: str | Path, space_name: str = "nasbench201", n: int = 1000,
                       steps: Sequence[int] = (10, 25, 50, 100, 200), seeds: int = 3, prior_path: str | None = None,
                       device: str = "auto") -> Dict[str, Any]:
    """Generate ``n`` graphs per (steps, seed); write ``generate.json`` and ``generate.png``."""
    space = get_space(space_name)
    prior = DiffusionPrior.load(prior_path, space, device) if prior_path else DiffusionPrior.shipped(space, device)
    train = prior.meta.get("train_types")
    train_types = space.enumerate_types() if train == "all" else None
    rows = []
    for s in steps:
        for seed in range(seeds):
            t0 = time.time()
            batch = prior.generate(n, SamplerConfig(num_steps=s), seed=seed)
            seconds = time.time() - t0
            rep = quality_report(space, batch.types, batch.valid, train_types)
            rows.append({"steps": s, "seed": seed, "seconds": round(seconds, 2), "validity": rep["validity"],
                         "uniqueness": rep["uniqueness"], "max_tv": rep["max_tv"], "peak_rss_mb": round(peak_rss_mb(), 1)})
    result = {"machine": machine_info(), "device": str(prior.device), "space": space.name, "n": n, "rows": rows,
              "prior_meta": {k: v for k, v in prior.meta.items() if k != "train_types"}}
    out = Path(output)
    write_json(out / "generate.json", result)
    _plot(result, out / "generate.png")
    return result


def summarize(result: Dict[str, Any]) -> str:
    import numpy as np

    lines = ["| PC steps | seconds / 1,000 | validity | uniqueness | max TV | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
    for s in sorted({r["steps"] for r in result["rows"]}):
        rs = [r for r in result["rows"] if r["steps"] == s]
        f = lambda key: np.mean([r[key] for r in rs])  # noqa: E731
        lines.append(f"| {s} | {f('seconds') * 1000 / result['n']:.1f} | {f('validity'):.1%} | {f('uniqueness'):.1%} | "
                     f"{f('max_tv'):.3f} | {max(r['peak_rss_mb'] for r in rs):.0f} |")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = sorted({r["steps"] for r in result["rows"]})
    agg = lambda key: [np.mean([r[key] for r in result["rows"] if r["steps"] == s]) for s in steps]  # noqa: E731
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("validity", "uniqueness"):
        ax[0].plot(steps, agg(key), marker="o", label=key)
    ax[0].plot(steps, agg("max_tv"), marker="s", label="max TV to the space")
    ax[0].set(xscale="log", xlabel="PC steps", title=f"{result['space']}: quality of {result['n']} samples")
    ax[0].legend()
    ax[1].plot(steps, agg("seconds"), marker="o")
    ax[1].set(xscale="log", xlabel="PC steps", ylabel="seconds", title=f"time per {result['n']} ({result['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
