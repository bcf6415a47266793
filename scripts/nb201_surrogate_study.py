"""Where do a search's trained architectures go, and can any surrogate rank the end game better?

docs/benchmarks.md §3 'What limits the last stretch'. Runs DiffusionNAG with its defaults on one
NB201 column (test accuracy: the table has no validation split) until the table optimum, then
refits surrogates on each run's own first ``t`` results and asks two questions:

- *end game*: among the untested one-operation neighbours of the best result so far, how many
  would each model's ranking try before the first one that improves on it (1 = its first pick)?
- *global*: where does each model put the table optimum among all cells, and how well does it
  order the table's 300 best (Spearman)?
- *calibration*: is the GNN ensemble's spread the size of its errors? Each untested cell's label
  is the normal score its value would get among the fitted results (the rank labels the search
  fits), ``z = (label - mean) / std``; a calibrated model has ``z`` of standard deviation 1, 68% of
  ``|z| < 1`` and 95% of ``|z| < 2``. Asked of every untested cell, of the untested among the
  table's 300 best, and of the next 10 architectures the search trained (the ones its upper
  confidence bound picked).

Models: the search's own GNN ensemble (its defaults, rank labels), ridge regression on the one-hot
operations (additive), the same with pairwise products, and a random order. Single-threaded; about
ten minutes on a 2-core CPU::

    python scripts/nb201_surrogate_study.py --table ../shared/data/nb201/nb201_test_acc.csv \\
        --column cifar10_test_acc --seeds 10 --output bench-out/surrogate-study

``--histories`` takes an earlier output file and studies its runs instead of searching again (the
searches are deterministic, so this only saves their time).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

Key = Tuple[int, ...]


def run_search(table: str, column: str, seed: int, optimum: float, budget: int = 300) -> List[Key]:
    """One default search as ``bench search`` runs it, stopped at the optimum; its graphs in order."""
    from nni_diffusionnag.bench.search import run_strategy

    strategy, _, _ = run_strategy("DiffusionNAG", table, column, seed, budget, stop_at=optimum)
    space = strategy.core.space
    return [space.key(space.sample_to_types(h["sample"])) for h in strategy.core.history()]


def label_of(values: np.ndarray, fitted: np.ndarray) -> np.ndarray:
    """The rank label (nn/targets.py ``standardise(..., 'rank')``) each of ``values`` would get if
    it joined the ``fitted`` results: the normal score of its rank among ``len(fitted) + 1``."""
    from scipy.stats import norm

    fitted = np.sort(fitted)
    below = np.searchsorted(fitted, values, side="left")
    ties = np.searchsorted(fitted, values, side="right") - below
    rank = below + (ties + 2) / 2  # ties share their mean rank, as scipy's rankdata does
    return norm.ppf((rank - 0.5) / (len(fitted) + 1))


def calibration(z: np.ndarray, std: np.ndarray) -> Dict[str, float]:
    """How ``z = (label - mean) / std`` of one group of cells compares with a standard normal."""
    return {"n": int(len(z)), "mean_z": round(float(np.mean(z)), 3), "sd_z": round(float(np.std(z)), 3),
            "within_1sd": round(float(np.mean(np.abs(z) < 1)), 3), "within_2sd": round(float(np.mean(np.abs(z) < 2)), 3),
            # does a larger spread mark a larger error? (Spearman of std and |label - mean|)
            "spearman_std_abs_error": round(float(spearmanr(std, np.abs(z) * std).correlation), 3)}


def ridge(x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    a = x_train.T @ x_train + alpha * np.eye(x_train.shape[1])
    return x @ np.linalg.solve(a, x_train.T @ (y_train - y_train.mean()))


def main() -> None:
    from nni_diffusionnag.nn.targets import standardise
    from nni_diffusionnag.search.config import SearchConfig
    from nni_diffusionnag.search.core import SearchCore
    from nni_diffusionnag.space import NasBench201Space

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--column", default="cifar10_test_acc")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--output", default="bench-out/surrogate-study")
    parser.add_argument("--histories", help="an earlier output JSON whose runs to study instead of searching again")
    args = parser.parse_args()
    torch.set_num_threads(1)

    space = NasBench201Space()
    cells = space.enumerate_types()
    keys = [space.key(t) for t in cells]
    index = {k: i for i, k in enumerate(keys)}
    frame = pd.read_csv(args.table)
    acc = dict(zip([space.key(space.arch_to_types(a)) for a in frame["arch"]], frame[args.column]))
    y = np.array([acc[k] for k in keys])
    edges = [j for j in range(cells.shape[1]) if len(set(cells[:, j])) > 1]
    ops = np.unique(cells[:, edges])
    onehot = np.concatenate([(cells[:, edges] == v).astype(float) for v in ops], axis=1)
    iu = np.triu_indices(onehot.shape[1], 1)
    pairwise = np.concatenate([onehot, (onehot[:, :, None] * onehot[:, None, :])[:, iu[0], iu[1]]], axis=1)
    optima = np.flatnonzero(y >= y.max() - 1e-9)  # the optimum has isomorphic twins in the table
    top = np.argsort(-y)[:300]
    rng = np.random.default_rng(0)

    runs: Dict[int, List[Key]] = {}
    cases: List[Tuple[int, int, int, int]] = []
    end_game: Dict[str, List[Tuple[int, int]]] = {m: [] for m in ("gnn", "ridge", "ridge_pairwise", "random")}  # (t, position)
    glob_rank: Dict[str, List[int]] = {m: [] for m in ("gnn", "ridge", "ridge_pairwise")}
    glob_rho: Dict[str, List[float]] = {m: [] for m in glob_rank}
    groups = ("untested", "untested_top300", "next_10_trained")
    zs: Dict[str, List[np.ndarray]] = {g: [] for g in groups}
    sds: Dict[str, List[np.ndarray]] = {g: [] for g in groups}
    earlier = json.loads(Path(args.histories).read_text())["histories"] if args.histories else None
    for seed in range(args.seeds):
        if earlier is not None:
            history = [tuple(k) for k in earlier[str(seed)]]
        else:
            history = run_search(args.table, args.column, seed, float(y.max()))
        runs[seed] = history
        for t in (10, 15, 20, 25, 30, 40, 50):
            if t >= len(history):
                break
            seen = [index[k] for k in history[:t]]
            labels = standardise(y[seen], "rank")
            core = SearchCore(space, SearchConfig.from_kwargs(seed=seed, device="cpu"))
            core.generator.fit(cells[seen], labels)
            gnn, spread = core.generator.predict(cells)
            z_all = (label_of(y, y[seen]) - gnn) / spread
            untested_mask = ~np.isin(np.arange(len(y)), seen)
            following = [index[k] for k in history[t:t + 10]]
            for group, rows in zip(groups, (np.flatnonzero(untested_mask), top[untested_mask[top]], following)):
                zs[group].append(z_all[rows])
                sds[group].append(spread[rows])
            preds = {"gnn": np.asarray(gnn), "ridge": ridge(onehot[seen], labels, onehot, 1.0),
                     "ridge_pairwise": ridge(pairwise[seen], labels, pairwise, 3.0)}
            if t <= 20:
                for name, p in preds.items():
                    position = np.empty(len(p), int)
                    position[np.argsort(-p)] = np.arange(len(p))
                    glob_rank[name].append(int(position[optima].min()) + 1)
                    glob_rho[name].append(float(spearmanr(p[top], y[top]).correlation))
            best = max(seen, key=lambda i: y[i])
            distance = (cells[:, edges] != cells[best, edges]).sum(1)
            untested = np.flatnonzero((distance == 1) & untested_mask)
            better = y[untested] > y[best]
            if not better.any():
                continue
            cases.append((seed, t, len(untested), int(better.sum())))
            preds["random"] = rng.random(len(y))
            for name, p in preds.items():
                order = np.argsort(-p[untested], kind="stable")
                end_game[name].append((t, int(np.argmax(better[order])) + 1))
        print(f"seed {seed}: optimum at {len(history)}", flush=True)

    summary = {
        "column": args.column, "seeds": args.seeds,
        "queries_to_optimum": {s: len(h) for s, h in runs.items()},
        "end_game_cases": len(end_game["gnn"]),
        "end_game_mean_position": {m: round(float(np.mean([p for _, p in v])), 2) for m, v in end_game.items()},
        "end_game_mean_position_t_le_15": {m: round(float(np.mean([p for t, p in v if t <= 15])), 2)
                                           for m, v in end_game.items()},
        "end_game_mean_position_t_ge_20": {m: round(float(np.mean([p for t, p in v if t >= 20])), 2)
                                           for m, v in end_game.items()},
        # a random order's expected position of the first improvement: (n + 1) / (k + 1)
        "end_game_random_expectation": round(float(np.mean([(n + 1) / (k + 1) for _, _, n, k in cases])), 2),
        "end_game_cases_seed_t_untested_improving": cases,
        "global_median_rank_of_optimum": {m: float(np.median(v)) for m, v in glob_rank.items()},
        "global_mean_spearman_top300": {m: round(float(np.mean(v)), 3) for m, v in glob_rho.items()},
        "calibration_gnn": {g: calibration(np.concatenate(zs[g]), np.concatenate(sds[g])) for g in groups},
        "end_game_positions": end_game,
        "histories": {s: [list(map(int, k)) for k in h] for s, h in runs.items()},
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"surrogate-study-{args.column}.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("end_game_positions", "histories")}, indent=1))


if __name__ == "__main__":
    main()
