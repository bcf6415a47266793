"""``nni-diffusionnag bench hpo``: NNI tuners on a synthetic, mixed-type hyper-parameter objective.

Every tuner is driven through NNI's tuner API alone (no NNI manager, no trial processes), one
trial at a time: ``update_search_space(HPO_SPACE)``, then per trial ``generate_parameters(i)``,
``objective(params)``, ``receive_trial_result(i, params, value)`` and ``trial_end(i, True)``.
A tuner that raises :class:`nni.NoMoreTrialError` ends its run early; its best-so-far curve is
padded with its last value and the run records where it stopped.

The objective (:func:`objective`) is a deterministic response surface standing in for the
validation accuracy of a small digits network, over :data:`HPO_SPACE`, a legacy NNI
``search_space.json`` that uses every family of parameter types (choice, randint, uniform,
quniform, loguniform, qloguniform, normal). It checks every value it gets against the space, so
a run also checks that each tuner only sends legal values.

Tuners (:data:`TUNERS`, each built per seed):

- ``TPE``: ``nni.algorithms.hpo.tpe_tuner.TpeTuner(optimize_mode='maximize', seed=s)``.
- ``Anneal``: ``nni.algorithms.hpo.hyperopt_tuner.HyperoptTuner('anneal', optimize_mode='maximize')``,
  needs the ``hyperopt`` package. Two NNI 3.0 issues are handled here. First, it has no seed
  argument, and seeding NumPy globally does not help: ``update_search_space`` builds its
  random state as an unseeded ``np.random.RandomState()``. So the harness replaces that state
  with ``RandomState(s)`` right after ``update_search_space``. Second, with NumPy >= 2, it
  breaks in ``receive_trial_result`` on any ``quniform``/``qloguniform`` parameter: it
  clips them with ``np.clip``, which returns NumPy scalars, and then compares them with ``== []``,
  which raises. The harness turns the suggestions into plain Python numbers first, so the
  trial also gets plain floats.
- ``Random``: ``nni.algorithms.hpo.random_tuner.RandomTuner(seed=s)``.
- ``DiffusionNAG``: ``nni_diffusionnag.integration.tuner.DiffusionNAGTuner(optimize_mode='maximize', seed=s)``.

Every tuner named is built once and given the space before any run. A tuner that refuses the
space (for example ``UnsupportedSpaceError``) stops the benchmark before any trial.

Reported (``hpo.json``, ``hpo.png``): the best-so-far curve of each run, the tuner's own wall
time per trial (generate + receive + trial_end; the objective costs microseconds and is not
counted), and per tuner the mean and median best at 10, 30 and 60 trials and at the budget.
"""

from __future__ import annotations

import logging
import math
import numbers
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from tqdm.auto import tqdm

from .common import machine_info, peak_rss_mb, write_json

__all__ = ["HPO_SPACE", "TUNERS", "CHECKPOINTS", "objective", "validate_params", "reference_best",
           "run_one", "run_hpo_bench", "summarize", "parse_seeds"]

_logger = logging.getLogger(__name__)

#: Hyper-parameters of a small MLP on scikit-learn's digits, as an NNI legacy search space.
#: ``randint`` [low, high) excludes ``high`` (depth 1..5); ``q*`` values are multiples of q in [low, high].
HPO_SPACE: Dict[str, Dict[str, Any]] = {
    "lr": {"_type": "loguniform", "_value": [1e-4, 1.0]},
    "momentum": {"_type": "uniform", "_value": [0.0, 0.99]},
    "width": {"_type": "quniform", "_value": [16, 256, 16]},
    "depth": {"_type": "randint", "_value": [1, 6]},
    "dropout": {"_type": "uniform", "_value": [0.0, 0.6]},
    "activation": {"_type": "choice", "_value": ["relu", "tanh", "gelu", "sigmoid"]},
    "batch_size": {"_type": "choice", "_value": [16, 32, 64, 128, 256]},
    "weight_decay": {"_type": "qloguniform", "_value": [1e-6, 1e-2, 1e-6]},
    # log2 of a multiplier on the default (He/Xavier) initialisation gain: 0 is the default.
    "init_gain_log2": {"_type": "normal", "_value": [0.0, 1.0]},
}

CHECKPOINTS = (10, 30, 60)

# Accuracy penalty of each activation (relu/gelu best; sigmoid clearly worse, and more so when deep).
_ACTIVATION_PENALTY = {"relu": 0.010, "tanh": 0.030, "gelu": 0.0, "sigmoid": 0.120}


# --- the objective ------------------------------------------------------------------------------
def validate_params(params: Mapping[str, Any], space: Mapping[str, Mapping[str, Any]] = HPO_SPACE) -> None:
    """Raise ``ValueError`` unless ``params`` has exactly the keys of ``space``, each value legal.

    Legal means: a ``choice`` value is one of the options; a ``randint`` value is an integer in
    [low, high); a ``uniform``/``loguniform`` value is a real number in [low, high]; a
    ``quniform``/``qloguniform`` value is also a multiple of q; a ``normal`` value is a finite real
    number. Bools never count as numbers. The bounds allow 1e-9 relative slack (``exp(log(x))``).
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"parameters must be a dict, got {type(params).__name__}: {params!r}")
    missing, extra = set(space) - set(params), set(params) - set(space)
    if missing or extra:
        raise ValueError(f"parameters {dict(params)!r}: missing {sorted(missing)}, unexpected {sorted(extra)}")
    for name, spec in space.items():
        kind, args, value = spec["_type"], spec["_value"], params[name]
        where = f"parameter {name!r} ({kind} {args})"
        if kind == "choice":
            if not any(_same_option(value, option) for option in args):
                raise ValueError(f"{where}: {value!r} is not one of the options")
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError(f"{where}: {value!r} is not a finite real number")
        if kind == "randint":
            if not isinstance(value, numbers.Integral) or not args[0] <= value < args[1]:
                raise ValueError(f"{where}: {value!r} is not an integer in [{args[0]}, {args[1]})")
            continue
        if kind in ("normal", "qnormal", "lognormal", "qlognormal"):
            if kind.startswith("q") and abs(value / args[2] - round(value / args[2])) > 1e-6:
                raise ValueError(f"{where}: {value!r} is not a multiple of {args[2]}")
            if "log" in kind and value <= 0:
                raise ValueError(f"{where}: {value!r} is not positive")
            continue
        low, high = args[0], args[1]
        slack = 1e-9 * max(abs(low), abs(high))
        if not low - slack <= value <= high + slack:
            raise ValueError(f"{where}: {value!r} is outside [{low}, {high}]")
        if kind.startswith("q") and abs(value / args[2] - round(value / args[2])) > 1e-6:
            raise ValueError(f"{where}: {value!r} is not a multiple of {args[2]}")


def _same_option(value: Any, option: Any) -> bool:
    """``value`` is ``option``: equal, a string for a string, an integer for an integer, never a bool."""
    if isinstance(value, bool) or isinstance(value, str) != isinstance(option, str):
        return False
    if isinstance(option, numbers.Integral) and not isinstance(value, numbers.Integral):
        return False
    return value == option


def _softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def objective(params: Mapping[str, Any]) -> float:
    """Synthetic validation accuracy (%) of a digits MLP, deterministic, in [0, 100].

    Checks ``params`` with :func:`validate_params` first (``ValueError`` on an illegal value).
    Then, with ``log = log10``::

        eff_lr  = lr / (1 - momentum)                          # momentum x lr interaction
        d_lr    = log(eff_lr) - log(0.1 * batch_size / 64)     # linear scaling rule: the best
                                                               # effective lr grows with batch size
        P_lr    = 0.15 * d_lr**2 + 2 * 0.2 * softplus((d_lr - 1) / 0.2)     # + divergence when too big
        P_mom   = 0.04 * ((momentum - 0.85) / 0.85)**2
        C       = (width / 16) * sqrt(depth)                   # capacity, 1 .. ~36
        P_cap   = 0.35 * exp(-C / 6)                           # diminishing returns
        d*      = 0.1 + 0.3 * (width - 16) / 240               # best dropout grows with width
        P_drop  = 1.0 * (dropout - d*)**2
        P_act   = {relu: .01, tanh: .03, gelu: 0, sigmoid: .12}[activation]
                  + (0.04 * (depth - 1) if activation == sigmoid else 0)      # vanishing gradients
        P_wd    = 0.02 * (log(weight_decay) + 4)**2            # best weight decay 1e-4
        P_init  = 0.02 * depth * (init_gain_log2 - 0.25)**2     # deeper nets are more sensitive
        P_bs    = 0.01 * log2(batch_size / 32)**2              # large batches generalise a bit worse
        ripple  = 0.3 * sin(7.1 * log(lr) + 0.05 * width) * cos(3.3 * dropout + 1.7 * momentum)
        accuracy = clip(10 + 88.5 * exp(-(sum of P)) + ripple, 0, 100)

    10 is chance level on 10 classes; the maximum is about 98.5. Near the optimum, a wrong
    decade of effective lr costs about 13 points, sigmoid about 10, and the smallest network about 23.
    """
    validate_params(params)
    return _accuracy(params)


def _accuracy(params: Mapping[str, Any]) -> float:
    """:func:`objective` without the checks."""
    lr, momentum = float(params["lr"]), float(params["momentum"])
    width, depth = float(params["width"]), int(params["depth"])
    dropout, activation = float(params["dropout"]), params["activation"]
    batch_size, weight_decay = int(params["batch_size"]), float(params["weight_decay"])
    gain = float(params["init_gain_log2"])

    d_lr = math.log10(lr / (1.0 - momentum)) - math.log10(0.1 * batch_size / 64)
    penalty = 0.15 * d_lr ** 2 + 2.0 * 0.2 * _softplus((d_lr - 1.0) / 0.2)
    penalty += 0.04 * ((momentum - 0.85) / 0.85) ** 2
    penalty += 0.35 * math.exp(-(width / 16) * math.sqrt(depth) / 6)
    penalty += 1.0 * (dropout - (0.1 + 0.3 * (width - 16) / 240)) ** 2
    penalty += _ACTIVATION_PENALTY[activation] + (0.04 * (depth - 1) if activation == "sigmoid" else 0.0)
    penalty += 0.02 * (math.log10(weight_decay) + 4) ** 2
    penalty += 0.02 * depth * (gain - 0.25) ** 2
    penalty += 0.01 * math.log2(batch_size / 32) ** 2
    ripple = 0.3 * math.sin(7.1 * math.log10(lr) + 0.05 * width) * math.cos(3.3 * dropout + 1.7 * momentum)
    return float(min(100.0, max(0.0, 10.0 + 88.5 * math.exp(-penalty) + ripple)))


def reference_best() -> float:
    """Best value at the designed optimum of each discrete combination (momentum 0.85).

    That is a lower bound on the maximum of :func:`objective`; the ripple adds at most 0.3 above it.
    """
    best = 0.0
    for width in range(16, 257, 16):
        for depth in range(1, 6):
            for activation in HPO_SPACE["activation"]["_value"]:
                for batch_size in HPO_SPACE["batch_size"]["_value"]:
                    params = {"lr": 0.1 * batch_size / 64 * 0.15, "momentum": 0.85, "width": float(width),
                              "depth": depth, "dropout": 0.1 + 0.3 * (width - 16) / 240, "activation": activation,
                              "batch_size": batch_size, "weight_decay": 1e-4, "init_gain_log2": 0.25}
                    best = max(best, _accuracy(params))
    return best


# --- the tuners ----------------------------------------------------------------------------------
def _plain(x: Any) -> Any:
    """NumPy scalars -> Python numbers, in nested dicts and lists."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def _tpe(seed: int, device: str):
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    return TpeTuner(optimize_mode="maximize", seed=seed)


def _anneal(seed: int, device: str):
    try:
        import hyperopt  # noqa: F401  (NNI imports it inside hyperopt_tuner; say what is missing)
    except ImportError as err:
        raise ValueError("tuner 'Anneal' needs the hyperopt package: pip install hyperopt") from err
    from nni.algorithms.hpo.hyperopt_tuner import HyperoptTuner

    class SeededAnneal(HyperoptTuner):
        """NNI's Anneal tuner, seeded, and giving plain Python numbers (see the module docstring)."""

        def update_search_space(self, search_space):
            super().update_search_space(search_space)
            self.rval.rstate = np.random.RandomState(seed)  # NNI builds an unseeded RandomState()

        def _get_suggestion(self, random_search=False):
            return _plain(super()._get_suggestion(random_search=random_search))

    return SeededAnneal("anneal", optimize_mode="maximize")


def _random(seed: int, device: str):
    from nni.algorithms.hpo.random_tuner import RandomTuner

    return RandomTuner(seed=seed)


def _diffusionnag(seed: int, device: str):
    from ..integration.tuner import DiffusionNAGTuner

    return DiffusionNAGTuner(optimize_mode="maximize", seed=seed, device=device)


#: name -> factory(seed, device) -> a fresh NNI tuner.
TUNERS: Dict[str, Callable[[int, str], Any]] = {
    "TPE": _tpe,
    "Anneal": _anneal,
    "Random": _random,
    "DiffusionNAG": _diffusionnag,
}


def _check_tuners(tuners: Sequence[str], device: str) -> None:
    """Unknown names, then tuners that cannot be built or refuse HPO_SPACE: ValueError, before any run."""
    unknown = [name for name in tuners if name not in TUNERS]
    if unknown:
        raise ValueError(f"unknown tuner(s) {unknown}; choose from {list(TUNERS)}")
    if not tuners:
        raise ValueError(f"no tuner given; choose from {list(TUNERS)}")
    for name in tuners:
        try:
            TUNERS[name](0, device).update_search_space(HPO_SPACE)
        except Exception as err:
            raise ValueError(f"tuner {name!r} cannot run this benchmark ({type(err).__name__}: {err}); "
                             f"leave it out of --tuners") from err


def parse_seeds(spec: Union[int, str, Sequence[int]]) -> List[int]:
    """``5`` -> 0..4; ``'0-9'`` -> 0..9; ``'1,4,7'`` -> those; a list stays as it is."""
    if isinstance(spec, numbers.Integral):
        return list(range(int(spec)))
    if isinstance(spec, str):
        seeds: List[int] = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if m:
                seeds.extend(range(int(m[1]), int(m[2]) + 1))
            elif part.isdigit():
                seeds.append(int(part))
            else:
                raise ValueError(f"seeds {spec!r}: expected N, A-B or a comma list of those, got {part!r}")
        if not seeds:
            raise ValueError(f"no seed in {spec!r}")
        return seeds
    return [int(s) for s in spec]


# --- running -------------------------------------------------------------------------------------
def run_one(name: str, seed: int, budget: int, device: str = "cpu", progress: Optional[Any] = None) -> Dict[str, Any]:
    """One run of ``budget`` sequential trials; returns values, best-so-far, params and timings."""
    import nni

    random.seed(seed)
    np.random.seed(seed)  # for any tuner that draws from the global generators
    tuner = TUNERS[name](seed, device)
    t0 = time.perf_counter()
    tuner.update_search_space(HPO_SPACE)
    setup = time.perf_counter() - t0
    values: List[float] = []
    params_sent: List[Dict[str, Any]] = []
    per_trial: List[float] = []
    stopped = None
    for i in range(budget):
        t0 = time.perf_counter()
        try:
            params = tuner.generate_parameters(i)
        except nni.NoMoreTrialError:
            stopped = i
            _logger.info("%s seed %d: NoMoreTrialError after %d trials", name, seed, i)
            break
        spent = time.perf_counter() - t0
        value = objective(params)  # ValueError if the tuner sent an illegal value
        t0 = time.perf_counter()
        tuner.receive_trial_result(i, params, value)
        tuner.trial_end(i, True)
        per_trial.append(spent + time.perf_counter() - t0)
        values.append(value)
        params_sent.append(_plain(dict(params)))
        if progress is not None:
            progress.update(1)
    if progress is not None and stopped is not None:
        progress.update(budget - stopped)
    best = np.maximum.accumulate(values).tolist() if values else [float("nan")]
    best_so_far = best + [best[-1]] * (budget - len(best))  # a run that stopped early keeps its last best
    k = int(np.argmax(values)) if values else None
    return {"tuner": name, "seed": seed, "trials": len(values), "stopped_early_at": stopped,
            "values": values, "best_so_far": best_so_far, "seconds_per_trial": per_trial,
            "setup_seconds": setup, "seconds": setup + sum(per_trial),
            "best_params": params_sent[k] if k is not None else None, "params": params_sent}


def _stats(curve: np.ndarray, budget: int) -> Dict[str, Dict[str, float]]:
    out = {}
    for q in [q for q in CHECKPOINTS if q < budget] + [budget]:
        column = curve[:, q - 1]
        out[f"best@{q}"] = {"mean": float(column.mean()), "median": float(np.median(column))}
    return out


def run_hpo_bench(tuners: Sequence[str], seeds: Union[int, str, Sequence[int]], budget: int,
                  out_dir: Union[str, Path], device: str = "cpu") -> Dict[str, Any]:
    """Every tuner x seed, ``budget`` trials each; writes ``hpo.json`` and ``hpo.png`` under ``out_dir``.

    ``seeds``: a count (0..n-1), a string like ``'0-9'`` or ``'1,3'``, or a list of ints. Unknown tuner
    names, and tuners that refuse :data:`HPO_SPACE`, raise ``ValueError`` before any run.
    """
    tuners = list(tuners)
    seeds = parse_seeds(seeds)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    _check_tuners(tuners, device)
    runs: List[Dict[str, Any]] = []
    with tqdm(total=len(tuners) * len(seeds) * budget, desc="bench hpo", unit="trial") as bar:
        for name in tuners:
            for seed in seeds:
                bar.set_postfix_str(f"{name} seed {seed}")
                run = run_one(name, seed, budget, device, progress=bar)
                runs.append(run)
                _logger.info("%s seed %d: best %.2f after %d trials, %.4f s/trial", name, seed,
                             run["best_so_far"][-1], run["trials"], np.mean(run["seconds_per_trial"] or [0.0]))
    summary = {}
    for name in tuners:
        mine = [r for r in runs if r["tuner"] == name]
        curve = np.array([r["best_so_far"] for r in mine], dtype=float)
        seconds = [s for r in mine for s in r["seconds_per_trial"]] or [0.0]
        summary[name] = {**_stats(curve, budget), "seconds_per_trial": float(np.mean(seconds)),
                         "setup_seconds": float(np.mean([r["setup_seconds"] for r in mine])),
                         "stopped_early": sum(r["stopped_early_at"] is not None for r in mine)}
    result = {"machine": machine_info(), "budget": budget, "seeds": seeds, "tuners": tuners,
              "objective": "synthetic digits-MLP validation accuracy, nni_diffusionnag.bench.hpo.objective",
              "search_space": HPO_SPACE, "reference_best": reference_best(),
              "note": "sequential trials (concurrency 1) through the tuner API; seconds are tuner time only",
              "summary": summary, "runs": runs, "peak_rss_mb": round(peak_rss_mb(), 1)}
    out = Path(out_dir)
    write_json(out / "hpo.json", result)
    _plot(result, out / "hpo.png")
    return result


def summarize(result: Dict[str, Any]) -> str:
    """Markdown table: tuner x mean (median) best @10, @30, @60 (and @budget), tuner milliseconds per trial."""
    budget = result["budget"]
    cols = list(CHECKPOINTS) + ([budget] if budget not in CHECKPOINTS else [])
    lines = [f"synthetic HPO objective (reference best {result['reference_best']:.2f}), budget {budget}, "
             f"{len(result['seeds'])} seeds; mean best-so-far (median in brackets)", "",
             "| tuner | " + " | ".join(f"best@{q}" for q in cols) + " | ms / trial | stopped early |",
             "|---|" + "---|" * (len(cols) + 2)]
    for name, s in result["summary"].items():
        cells = []
        for q in cols:
            key = f"best@{q}" if q < budget else f"best@{budget}"
            cells.append("–" if q > budget else f"{s[key]['mean']:.2f} ({s[key]['median']:.2f})")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {1000 * s['seconds_per_trial']:.2f} | "
                     f"{s['stopped_early']}/{len(result['seeds'])} |")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = result["budget"]
    x = np.arange(1, budget + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in result["tuners"]:
        curve = np.array([r["best_so_far"] for r in result["runs"] if r["tuner"] == name], dtype=float)
        line, = ax.plot(x, curve.mean(0), label=name)
        ax.fill_between(x, np.percentile(curve, 25, 0), np.percentile(curve, 75, 0), alpha=0.15,
                        color=line.get_color())
    ax.axhline(result["reference_best"], ls="--", color="k", lw=0.8, label="reference best")
    first = np.median([r["best_so_far"][0] for r in result["runs"]])
    ax.set(xlabel="trials", ylabel="best validation accuracy so far (%)",
           title=f"synthetic HPO: mean best-so-far, IQR band ({len(result['seeds'])} seeds)",
           ylim=(min(first, result["reference_best"] - 15), result["reference_best"] + 1))
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
