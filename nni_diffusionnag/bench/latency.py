"""Latency benchmark: how well does an additive model predict measured latency on this device?

Protocol, per space: ``n`` distinct random networks are frozen from NNI's model space, each is
profiled with :func:`~nni_diffusionnag.properties.latency.profile_latency` (median of
``repeats`` forwards after ``warmup``, batch 1, ``threads`` CPU threads, each forward alternating
with one of a fixed reference network, median over ``rounds`` passes), and
:func:`~nni_diffusionnag.properties.latency.fit_additive_latency` is fitted on a random
``1 - holdout`` of them and scored on the rest. Writes ``latency.json`` (the reports, the machine,
every measurement) and ``latency.png`` (predicted vs measured on the held-out networks), and one
``latency-<space>.json`` model per space that can be loaded with
:meth:`~nni_diffusionnag.properties.latency.AdditiveLatencyModel.load`.

With an NB201 ``table``, the fitted NB201 model then bounds a search (:func:`constrained_search`):
``latency<=B`` with ``B`` the median measured latency, every proposal profiled afterwards by the
same protocol, and the share within ``B`` by that exact profile reported, with the 95%-confidence
margin of named latency budgets and without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..properties.latency import device_description, fit_additive_latency, profile_latency
from .common import machine_info, write_json

__all__ = ["SPACES", "run_latency_bench"]

_logger = logging.getLogger(__name__)

SPACES: Tuple[str, ...] = ("nasbench201", "mobilenetv3")


def _space(name: str, resolution: int) -> Tuple[Any, Any, Tuple[int, ...]]:
    """``(graph space, NNI model space, input shape)`` for a benchmark space name."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
    if name == "nasbench201":
        from nni.nas.hub.pytorch import NasBench201

        from ..space import NasBench201Space

        return NasBench201Space(), NasBench201(), (1, 3, 32, 32)
    if name == "mobilenetv3":
        from ..space import MobileNetV3OFASpace
        from ..space.mobilenetv3 import ofa_mobilenetv3

        return MobileNetV3OFASpace(), ofa_mobilenetv3(), (1, 3, resolution, resolution)
    raise ValueError(f"unknown latency benchmark space {name!r}; expected one of {list(SPACES)}")


def _distinct_random(space: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random graphs of ``space`` that decode to different networks."""
    out: Dict[Tuple[int, ...], np.ndarray] = {}
    for _ in range(100):
        for t in space.random_types(2 * n, rng):
            out.setdefault(space.key(t), t)
        if len(out) >= n:
            break
    return np.stack(list(out.values())[:n])


def constrained_search(model: Any, table: str | Path, column: str, budget_ms: float, profile: Callable[[np.ndarray], np.ndarray],
                       anchors: Tuple[np.ndarray, np.ndarray], seeds: Sequence[int] = (0, 1, 2),
                       queries: int = 50) -> Dict[str, Any]:
    """NB201 searches under ``latency <= budget_ms`` (the model decides), then every distinct
    proposal timed by ``profile`` (types ``[B, 8]`` -> ms): the share truly within the bound.

    ``anchors = (types, ms)``: networks measured when the model was fitted, timed again in the same
    call as the proposals; the machine's speed drifts between calls, so the new times are rescaled
    by the median ratio of the anchors' two measurements. ``value`` is the table's ``column`` (NB201
    here: test accuracy only). Two settings: the named budget (``'latency<=Bms'``, admitted with 95%
    confidence under the model's held-out RMSE) and the model's prediction trusted as it is.
    """
    from ..properties.latency import latency_constraint
    from ..search.config import SearchConfig
    from ..search.core import SearchCore
    from ..space import NasBench201Space
    from .common import nb201_truth, search_nb201_table

    space = NasBench201Space()
    acc = nb201_truth(table, column)
    settings = {"named budget (95% confidence)": lambda: [f"latency<={budget_ms:g}ms"],
                "prediction trusted": lambda: [latency_constraint(model, budget_ms)]}
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for label, constraints in settings.items():
        for seed in seeds:
            config = SearchConfig.from_kwargs(seed=seed, device="cpu", constraints=constraints(), latency_model=model)
            rows = search_nb201_table(SearchCore(space, config), lambda i: float(acc[i]), queries)
            runs.setdefault(label, []).append({"seed": seed, "rows": rows})
            _logger.info("latency-constrained search (%s), seed %d: %d proposals", label, seed, len(rows))
    every = space.enumerate_types()
    distinct = sorted({i for rs in runs.values() for r in rs for i in r["rows"]})
    anchor_types, anchor_ms = anchors
    timed = profile(np.concatenate([anchor_types, every[distinct]]))
    drift = float(np.median(anchor_ms / timed[: len(anchor_ms)]))
    measured = dict(zip(distinct, (timed[len(anchor_ms):] * drift).tolist()))
    out: Dict[str, Any] = {"budget_ms": budget_ms, "queries": queries, "seeds": list(seeds), "column": column,
                           "drift_rescale": drift, "settings": {}}
    for label, rs in runs.items():
        rows = [i for r in rs for i in r["rows"]]
        ms = np.array([measured[i] for i in rows])
        pred = model.predict(every[rows])
        out["settings"][label] = {
            "proposals": len(rows), "within_by_profile": float((ms <= budget_ms).mean()),
            "within_by_model": float((pred <= budget_ms).mean()),
            "best_value_per_seed": [float(acc[r["rows"]].max()) for r in rs],
            "runs": [{"seed": r["seed"], "rows": r["rows"], "measured_ms": [measured[i] for i in r["rows"]]} for r in rs]}
        _logger.info("%s: %.1f%% of %d proposals within %.3g ms by the profile", label,
                     100 * out["settings"][label]["within_by_profile"], len(rows), budget_ms)
    # the best the table offers within the bound, by the model (the profile of all 15,625 is too long)
    inside = model.predict(every) <= budget_ms
    out["best_value_within_by_model"] = float(acc[inside].max())
    return out


def run_latency_bench(output: str | Path, spaces: Sequence[str] = ("nasbench201",), n: int = 250, *,
                      holdout: float = 0.25, threads: int = 1, warmup: int = 3, repeats: int = 5, rounds: int = 3,
                      time_budget_s: float = 900.0, mobilenetv3_resolution: int = 128, seed: int = 0,
                      table: Optional[str | Path] = None, column: str = "cifar10_test_acc", search_seeds: Sequence[int] = (0, 1, 2),
                      search_queries: int = 50) -> Dict[str, Any]:
    """Profile ``n`` random networks per space on this machine's CPU and score the additive fit.

    ``time_budget_s`` bounds the profiling of each space (fewer networks are then fitted, and the
    JSON says how many). With ``table`` (NB201's CSV) and ``nasbench201`` among the spaces, also
    runs :func:`constrained_search` (``search_seeds`` x ``search_queries``). Returns the JSON payload.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output)
    payload: Dict[str, Any] = {"machine": machine_info(), "device": device_description("cpu", threads),
                               "settings": {"n": n, "holdout": holdout, "threads": threads, "warmup": warmup,
                                            "repeats": repeats, "rounds": rounds, "time_budget_s": time_budget_s,
                                            "mobilenetv3_resolution": mobilenetv3_resolution, "seed": seed},
                               "spaces": {}}
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.5 * len(spaces), 4.2), squeeze=False)
    for ax, name in zip(axes[0], spaces):
        space, model_space, shape = _space(name, mobilenetv3_resolution)
        types = _distinct_random(space, n + 1, np.random.default_rng(seed))
        # One extra random network is the reference timed alongside each one (cancels speed drift).
        reference, types = model_space.freeze(space.types_to_sample(types[-1])), types[:-1]
        ms = profile_latency(model_space.freeze, [space.types_to_sample(t) for t in types], shape,
                             threads=threads, warmup=warmup, repeats=repeats, rounds=rounds,
                             time_budget_s=time_budget_s, reference=reference)
        types = types[: len(ms)]
        model = fit_additive_latency(types, ms, space=space, holdout=holdout, seed=seed, device=payload["device"],
                                     input_shape=shape)
        model.save(output / f"latency-{name}.json")
        # The held-out predictions of the report's split (same permutation as the fit).
        n_test = int(model.report["n_test"])
        perm = np.random.default_rng(seed).permutation(len(ms))
        split = fit_additive_latency(types[perm[n_test:]], ms[perm[n_test:]], space=space, holdout=0.0)
        pred = split.predict(types[perm[:n_test]])
        payload["spaces"][name] = {"input_shape": list(shape), "report": model.report, "cache_key": model.cache_key,
                                   "types": types.tolist(), "latency_ms": ms.tolist(),
                                   "test_index": perm[:n_test].tolist(), "test_pred_ms": pred.tolist()}
        _logger.info("%s: %s", name, model.report)
        y = ms[perm[:n_test]]
        ax.scatter(y, pred, s=10, alpha=0.7)
        lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("measured latency (ms)")
        ax.set_ylabel("additive model (ms)")
        ax.set_title(f"{name} {'x'.join(map(str, shape[1:]))}: held-out R$^2$={model.report['r2']:.3f}\n"
                     f"MAE {model.report['mae_ms']:.2f} ms, rel. {100 * model.report['rel_err']:.1f}%, "
                     f"{n_test}/{len(ms)} nets", fontsize=9)
        if name == "nasbench201" and table is not None:
            def profile(t: np.ndarray) -> np.ndarray:
                return profile_latency(model_space.freeze, [space.types_to_sample(x) for x in t], shape,
                                       threads=threads, warmup=warmup, repeats=repeats, rounds=rounds,
                                       time_budget_s=10 * time_budget_s, reference=reference)

            k = min(30, len(ms))
            payload["constrained_search"] = constrained_search(
                model, table, column, float(np.median(ms)), profile, (types[:k], ms[:k]), search_seeds, search_queries)
    fig.suptitle(payload["device"], fontsize=8)
    fig.tight_layout()
    output.mkdir(parents=True, exist_ok=True)
    fig.savefig(output / "latency.png", dpi=120)
    plt.close(fig)
    write_json(output / "latency.json", payload)
    return payload


if __name__ == "__main__":  # python -m nni_diffusionnag.bench.latency OUT [SPACE ...]
    import sys

    logging.basicConfig(level=logging.INFO)
    run_latency_bench(sys.argv[1], sys.argv[2:] or ("nasbench201",))
