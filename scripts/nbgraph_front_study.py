"""Where the hypervolume that NAS-Bench-Graph searches miss lies, read from ``bench multiobjective`` results.

docs/benchmarks.md §11 'What 95% of the front takes'. For each validation x latency column of the
given result files, and each method in them:

- the true front's entries in the validation top 1% (their ranks of 26,206) and the share of the
  front's hypervolume that only they hold;
- the runs' final hypervolume fraction, and what it would be had each run also found those top
  entries;
- how many distinct top-1% entries the runs visited;
- the draws a sampler needs that is given the rest of the front and draws the top 1% uniformly
  (it reaches the top but cannot rank inside it), median and quartiles over 1,000 orders.

Reads the tables through the bench extra; seconds on a CPU::

    python scripts/nbgraph_front_study.py bench-out/mo-nbg/multiobjective-nbgraph.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any, Dict

import numpy as np


def study(result: Dict[str, Any], top_fraction: float = 0.01) -> Dict[str, Any]:
    from nni_diffusionnag.bench.nbgraph_mo import front_split, hv_with_top, nbgraph_table, uniform_top_draws

    out: Dict[str, Any] = {}
    for key, col in result["columns"].items():
        t = nbgraph_table(key.split()[0])
        split = front_split(t["y"], t["ref"], top_fraction)
        top = split["top"]
        threshold = t["y"][top[-1], 0] - 1e-6
        draws = uniform_top_draws(t["y"], t["ref"], split, repeats=1000)
        methods: Dict[str, Dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for run in col["runs"]:
            p = np.asarray(run["points"], dtype=np.float64).reshape(-1, 2)
            m = methods[run["method"]]
            m["hv"].append(run["hv_fraction"][-1])
            m["hv_with_top"].append(hv_with_top(p, split, t["ref"]))
            m["top_visited"].append(len({tuple(q) for q in p[p[:, 0] >= threshold].round(9).tolist()}))
        out[key] = {"top_size": len(top), "front_size": split["front_size"], "top_ranks": split["top_ranks"],
                    "top_share": round(split["top_share"], 3), "queries": len(col["runs"][0]["points"]),
                    "uniform_top_draws": {"median": float(np.median(draws)), "q25": float(np.percentile(draws, 25)),
                                          "q75": float(np.percentile(draws, 75))},
                    "methods": {name: {"runs": len(v["hv"]), "hv": round(float(np.mean(v["hv"])), 3),
                                       "hv_with_top": round(float(np.mean(v["hv_with_top"])), 3),
                                       "hv_with_top_min": round(float(np.min(v["hv_with_top"])), 3),
                                       "top_visited": round(float(np.mean(v["top_visited"])), 1)}
                                for name, v in methods.items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="multiobjective-nbgraph.json files of bench multiobjective")
    parser.add_argument("--top", type=float, default=0.01, help="top fraction by validation (default 0.01)")
    args = parser.parse_args()
    for path in args.results:
        for key, s in study(json.loads(open(path).read()), args.top).items():
            d = s["uniform_top_draws"]
            print(f"{path} | {key}: validation top {s['top_size']} entries; front {s['front_size']}, in that top: ranks {s['top_ranks']}, "
                  f"hypervolume only they hold {s['top_share']:.3f}; uniform draws from the top to 95%: "
                  f"median {d['median']:g} (quartiles {d['q25']:g}-{d['q75']:g})")
            for name, m in s["methods"].items():
                print(f"    {name:16s} {m['runs']} runs, HV@{s['queries']} {m['hv']:.3f}, with the top entries "
                      f"{m['hv_with_top']:.3f} (min {m['hv_with_top_min']:.3f}), distinct top entries visited "
                      f"{m['top_visited']:.1f}")


if __name__ == "__main__":
    main()
