"""``nni-diffusionnag bench nbgraph``: NNI strategies on NAS-Bench-Graph, a peer's GNN benchmark.

NAS-Bench-Graph (Qin et al., NeurIPS 2022 Datasets and Benchmarks; pip ``nas-bench-graph``, the
``bench`` extra of this package) has look-up tables of 26,206 graph neural architectures on nine
graph datasets, each with validation and test performance. A cell has 4 computing nodes; node
``i`` reads one earlier node (0 is the cell input) and applies one of 9 operations.

The space is written here the way an NNI user writes a space of their own (:class:`GraphCellSpace`):
an ``InputChoice(i + 1, n_chosen=1)`` per node after the first and a ``LayerChoice`` of real
torch-geometric layers per node, no constraint. Nothing in the package knows this space: DiffusionNAG
reads it through the generic encoding like any user space.

Every strategy runs through NNI's ``SequentialExecutionEngine`` with the same budget, and the
evaluator (:class:`NasBenchGraphEvaluator`) reports the table's **validation** performance (in %)
as the trial metric, so strategies select on validation. Reported per dataset and strategy:

- validation regret: best validation in the table minus the best validation found so far (points);
- test regret of the pick: best test in the table minus the test performance of the
  best-by-validation architecture found so far (points) — what a user who picks by validation gets;
- queries to the best-validation architecture of the table (``None`` when not found);
- repeats: queries whose table entry an earlier query of the run already had, i.e. a network
  trained again under another sample (the table files isomorphic cells under one entry).

Architectures that the table files under one entry (isomorphic cells) count as separate
queries: a user would train each.
``DiffusionNAG:dedup_key=nni_diffusionnag.bench.nbgraph.isomorphism_key`` runs DiffusionNAG with
:func:`isomorphism_key`, the key a user who knows the cell's symmetries would give it, so that it
trains one cell of each class. The one cell the table does not hold (all four operations
``skip``: no GNN layer) scores 0, as in the benchmark's own NNI example.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..integration import compat

# The warnings filter must be in place before nni.nas.nn.pytorch is imported (below).
compat.install()

import nni  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as tnn  # noqa: E402
import torch_geometric.nn as gnn  # noqa: E402
from nni.nas.evaluator import Evaluator  # noqa: E402
from nni.mutable import ensure_frozen  # noqa: E402
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, model_context  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from .common import machine_info, peak_rss_mb, write_json  # noqa: E402
from .hpo import parse_seeds  # noqa: E402

__all__ = ["DATASETS", "ALL_DATASETS", "STRATEGIES", "CHECKPOINTS", "GraphCellSpace", "NasBenchGraphEvaluator", "load_table", "isomorphism_key",
           "run_one", "run_nbgraph_bench", "merge_results", "summarize", "repeats", "check_installed", "regret_cells", "plot_panels"]

_logger = logging.getLogger(__name__)

#: The datasets the benchmark is developed and reported on.
DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo")
#: Every dataset the package's tables hold.
ALL_DATASETS = DATASETS + ("computers", "arxiv", "proteins")
STRATEGIES = ("DiffusionNAG", "Random", "RegularizedEvolution", "TPE")
CHECKPOINTS = (10, 20, 50, 100, 200)
NODES = 4


def check_installed() -> None:
    """``ValueError`` naming the fix unless the ``nas-bench-graph`` package can be imported."""
    try:
        import nas_bench_graph  # noqa: F401
    except ImportError as err:
        raise ValueError("bench nbgraph needs the NAS-Bench-Graph tables: pip install 'nni-diffusionnag[bench]' "
                         "(or pip install nas-bench-graph)") from err


def load_table(dataset: str) -> Dict[int, Dict[str, float]]:
    """``{architecture hash: {'valid_perf', 'perf', ...}}`` of one dataset (values in [0, 1])."""
    check_installed()
    from nas_bench_graph import light_read

    if dataset not in ALL_DATASETS:
        raise ValueError(f"unknown NAS-Bench-Graph dataset {dataset!r}; choose from {list(ALL_DATASETS)}")
    return light_read(dataset)


def _ops() -> List[str]:
    check_installed()
    from nas_bench_graph.architecture import gnn_list

    return list(gnn_list)


def architecture_key(sample: Mapping[str, Any]) -> Tuple[List[int], List[str]]:
    """(links, ops) of a :class:`GraphCellSpace` sample, in NAS-Bench-Graph's terms."""
    links = [0]
    for i in range(1, NODES):
        chosen = sample[f"input{i}"]
        links.append(int(chosen[0] if isinstance(chosen, (list, tuple)) else chosen))
    return links, [str(sample[f"op{i}"]) for i in range(NODES)]


def table_hash(sample: Mapping[str, Any]) -> int:
    """The table entry of a sample (NAS-Bench-Graph maps isomorphic cells to one entry)."""
    from nas_bench_graph.architecture import Arch

    links, ops = architecture_key(sample)
    return Arch(links, ops).valid_hash()


def isomorphism_key(sample: Mapping[str, Any]) -> int:
    """The ``dedup_key`` a user of this space would write: NAS-Bench-Graph's canonical form of the
    cell (``Arch.valid_hash``: parallel branches in any order, and the moves of ``skip`` that leave
    the network unchanged, give one value). It reads no performance, only the cell."""
    return table_hash(sample)


# --- the space, as a user writes it ---------------------------------------------------------------
class GraphOp(tnn.Module):
    """One operation of a computing node: a message-passing layer, a linear map (``fc``) or ``skip``."""

    def __init__(self, op: str, dim: int) -> None:
        super().__init__()
        self.op = op
        self.layer = {
            "gat": lambda: gnn.GATConv(dim, dim, heads=2, concat=False),
            "gcn": lambda: gnn.GCNConv(dim, dim),
            "gin": lambda: gnn.GINConv(tnn.Sequential(tnn.Linear(dim, dim), tnn.ReLU(), tnn.Linear(dim, dim))),
            "cheb": lambda: gnn.ChebConv(dim, dim, K=2),
            "sage": lambda: gnn.SAGEConv(dim, dim),
            "arma": lambda: gnn.ARMAConv(dim, dim),
            "graph": lambda: gnn.GraphConv(dim, dim),
            "fc": lambda: tnn.Linear(dim, dim),
            "skip": lambda: None,
        }[op]()

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        if self.layer is None:
            return x
        return self.layer(x) if self.op == "fc" else self.layer(x, edge_index)


class GraphCellSpace(ModelSpace):
    """NAS-Bench-Graph's cell as an NNI model space of plain choices.

    Node ``i`` (0..3) applies ``op{i}`` (a ``LayerChoice`` over the 9 operations) to the output of
    the node that ``input{i}`` picks (an ``nni.choice`` over the cell input 0 and nodes ``1..i``
    before it; node 0 reads the input). The cell's output is the sum of the nodes that no other
    node reads, followed by a linear classifier.

    The inputs are ``nni.choice`` (registered with ``add_mutable``, read with ``ensure_frozen``, as
    NNI 3.0 documents) rather than ``InputChoice``: NNI's TPE strategy cannot read an
    ``InputChoice`` (``as_legacy_dict`` is not implemented for ``CategoricalMultiple``).
    """

    def __init__(self, in_features: int = 16, classes: int = 2, dim: int = 16) -> None:
        super().__init__()
        self._args = (in_features, classes, dim)
        self.pre = tnn.Linear(in_features, dim)
        self.ops = tnn.ModuleList([LayerChoice({op: GraphOp(op, dim) for op in _ops()}, label=f"op{i}")
                                   for i in range(NODES)])
        self.sources = [0] + [ensure_frozen(self.add_mutable(nni.choice(f"input{i}", list(range(i + 1)))))
                              for i in range(1, NODES)]
        self.head = tnn.Linear(dim, classes)

    def freeze(self, sample: Mapping[str, Any]) -> "GraphCellSpace":
        # NNI 3.0 asks a space that calls add_mutable to rebuild itself under the sample.
        self.validate(sample)
        with model_context(sample):
            return GraphCellSpace(*self._args)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        outputs = [self.pre(x)]
        for op, src in zip(self.ops, self.sources):
            outputs.append(torch.relu(op(outputs[src], edge_index)))
        leaves = [outputs[j] for j in range(1, NODES + 1) if j not in self.sources]
        return self.head(torch.stack(leaves).sum(0))


@nni.trace
class NasBenchGraphEvaluator(Evaluator):
    """Report a :class:`GraphCellSpace` model's NAS-Bench-Graph validation performance (%).

    Reads ``model.sample`` instead of training (as NNI's ``BenchmarkEvaluator`` does); the table's
    test performance is looked up by the benchmark, never reported to the strategy.
    """

    def __init__(self, dataset: str) -> None:
        super().__init__()
        self.dataset = dataset
        self.table = load_table(dataset)

    def evaluate(self, sample: Mapping[str, Any]) -> float:
        entry = self.table.get(table_hash(sample))
        value = 0.0 if entry is None else 100.0 * float(entry["valid_perf"])
        nni.report_final_result(value)
        return value

    def _execute(self, model: Any) -> float:
        return self.evaluate(model.sample)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, NasBenchGraphEvaluator) and other.dataset == self.dataset


# --- running -------------------------------------------------------------------------------------
def _make(name: str, seed: int, device: str, **diffusionnag: Any):
    from nni.nas.strategy import TPE, Random, RegularizedEvolution

    from ..integration.strategy import DiffusionNAG

    if name == "DiffusionNAG":
        return DiffusionNAG(seed=seed, device=device, **diffusionnag)
    if name == "Random":
        return Random(seed=seed, dedup=True)
    if name == "RegularizedEvolution":
        return RegularizedEvolution(population_size=20, sample_size=5, mutation_prob=0.2, seed=seed, dedup=True)
    if name == "TPE":
        return TPE(optimize_mode="maximize", seed=seed)
    raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")


def run_one(name: str, dataset: str, seed: int, budget: int, device: str = "cpu",
            table: Optional[Dict[int, Dict[str, float]]] = None, **diffusionnag: Any) -> Dict[str, Any]:
    """One search of ``budget`` trained architectures; the (hash, valid, test) of each in arrival order.
    ``diffusionnag``: further arguments of the DiffusionNAG strategy (e.g. ``meta_predictor``)."""
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.execution.event import ModelEventType
    from nni.nas.space import SimplifiedModelSpace

    from .search import _no_tpe_sleep

    table = table if table is not None else load_table(dataset)
    space = SimplifiedModelSpace.from_model(GraphCellSpace(), NasBenchGraphEvaluator(dataset))
    hashes: List[int] = []
    valid: List[float] = []
    test: List[float] = []

    def on_metric(event) -> None:
        h = table_hash(event.model.sample)
        entry = table.get(h)
        hashes.append(int(h))
        valid.append(float(event.metric))
        test.append(0.0 if entry is None else 100.0 * float(entry["perf"]))

    engine = SequentialExecutionEngine(max_model_count=budget, continue_on_failure=True)
    engine.register_model_event_callback(ModelEventType.FinalMetric, on_metric)
    strategy = _make(name, seed, device, **diffusionnag)
    t0 = time.time()
    with _no_tpe_sleep():
        strategy(space, engine)
    seconds = time.time() - t0
    nni.trial._params = None  # the sequential engine leaves trial params set (NNI 3.0 bug)
    run = {"strategy": name, "dataset": dataset, "seed": seed, "hashes": hashes, "valid": valid, "test": test,
           "seconds": round(seconds, 2), "seconds_per_query": seconds / max(1, len(valid))}
    weights = getattr(getattr(strategy, "core", None), "source_weights", None)
    if weights is not None:  # transfer from several sources: what the target's results made of them
        run["source_weights"] = weights
    return run


def table_summary(table: Mapping[int, Mapping[str, float]]) -> Dict[str, Any]:
    """Best validation and test (%) of a table and the hash(es) of its best-validation architecture."""
    valid = {h: 100.0 * float(e["valid_perf"]) for h, e in table.items()}
    best_valid = max(valid.values())
    return {"best_valid": best_valid, "best_test": max(100.0 * float(e["perf"]) for e in table.values()),
            "best_valid_hashes": sorted(int(h) for h, v in valid.items() if v >= best_valid - 1e-9),
            "entries": len(table)}


def regrets(run: Mapping[str, Any], ref: Mapping[str, Any], budget: int) -> Dict[str, Any]:
    """Validation-regret and pick-test-regret curves over ``budget`` queries, queries to the best and
    repeats (:func:`repeats`)."""
    valid, test = np.asarray(run["valid"], dtype=float), np.asarray(run["test"], dtype=float)
    if not len(valid):
        return {"valid_regret": [float("nan")] * budget, "test_regret": [float("nan")] * budget,
                "queries_to_best": None}
    pick = np.array([int(np.argmax(valid[: i + 1])) for i in range(len(valid))])  # first best-by-validation
    valid_regret = ref["best_valid"] - np.maximum.accumulate(valid)
    test_regret = ref["best_test"] - test[pick]
    pad = lambda c: np.concatenate([c, np.full(max(0, budget - len(c)), c[-1])])[:budget]  # noqa: E731
    best = set(ref["best_valid_hashes"])
    hit = [i for i, h in enumerate(run["hashes"]) if h in best]
    return {"valid_regret": pad(valid_regret).tolist(), "test_regret": pad(test_regret).tolist(),
            "queries_to_best": hit[0] + 1 if hit else None, "repeats": repeats(run["hashes"])}


def repeats(hashes: Sequence[int]) -> int:
    """How many queries hit a table entry that an earlier query of the run already had."""
    return len(hashes) - len(set(hashes))


def run_nbgraph_bench(output: str | Path, datasets: Sequence[str] = DATASETS, seeds: Any = 10, budget: int = 200,
                      strategies: Sequence[str] = STRATEGIES, device: str = "cpu") -> Dict[str, Any]:
    """Every dataset x strategy x seed; writes ``nbgraph.json`` and ``nbgraph.png`` under ``output``.

    All arguments are checked before the first run (unknown dataset or strategy, budget < 1,
    package missing).
    """
    from .search import ablation_base, ablation_kwargs

    check_installed()
    seeds = parse_seeds(seeds)
    unknown = [s for s in strategies if s not in STRATEGIES and not s.startswith("DiffusionNAG:")]
    if unknown or not strategies:
        raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGIES)} or an ablation "
                         "'DiffusionNAG:key=value:...'")
    settings = {s: ablation_kwargs(s) for s in strategies}  # a malformed setting fails here, before any run
    bad = [d for d in datasets if d not in ALL_DATASETS]
    if bad or not datasets:
        raise ValueError(f"unknown NAS-Bench-Graph datasets {bad}; choose from {list(ALL_DATASETS)}")
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    refs, runs = {}, []
    out = Path(output)
    result = {"machine": machine_info(), "budget": budget, "seeds": seeds, "datasets": list(datasets),
              "strategies": list(strategies), "tables": refs,
              "note": "metric = table validation performance (%); test regret = best test - test of the "
                      "best-by-validation pick; sequential engine, one trial at a time",
              "runs": runs}
    with tqdm(total=len(datasets) * len(strategies) * len(seeds), desc="bench nbgraph", unit="run") as bar:
        for dataset in datasets:
            table = load_table(dataset)
            refs[dataset] = table_summary(table)
            for name in strategies:
                for seed in seeds:
                    bar.set_postfix_str(f"{dataset} {name} seed {seed}")
                    run = run_one(ablation_base(name), dataset, seed, budget, device, table, **settings[name])
                    run["strategy"] = name
                    run.update(regrets(run, refs[dataset], budget))
                    runs.append(run)
                    _logger.info("%s %s seed %d: valid regret %.2f, test regret %.2f, best at %s, %.3f s/query",
                                 dataset, name, seed, run["valid_regret"][-1], run["test_regret"][-1],
                                 run["queries_to_best"], run["seconds_per_query"])
                    bar.update(1)
            write_json(out / "nbgraph.json", result)  # whole datasets so far survive an interruption
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(out / "nbgraph.json", result)
    _plot(result, out / "nbgraph.png")
    return result


def merge_results(paths: Sequence[str | Path], output: str | Path) -> Dict[str, Any]:
    """Runs of several ``nbgraph.json`` files (one per dataset or strategy, as long benchmarks are
    split over processes) as one result; writes its ``nbgraph.json`` and ``nbgraph.png`` under
    ``output``. Files must share the budget; a (dataset, strategy, seed) run in two files is an error."""
    if not paths:
        raise ValueError("give at least one nbgraph.json to merge")
    parts = []
    for path in paths:
        try:
            parts.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read bench nbgraph results {str(path)!r}: {err}") from None
    budgets = sorted({p["budget"] for p in parts})
    if len(budgets) > 1:
        raise ValueError(f"cannot merge runs of different budgets {budgets}: regrets are compared at fixed queries")
    first = lambda key: list(dict.fromkeys(x for p in parts for x in p[key]))  # noqa: E731 - in order of appearance
    runs, seen = [], set()
    for p in parts:
        for run in p["runs"]:
            which = (run["dataset"], run["strategy"], run["seed"])
            if which in seen:
                raise ValueError(f"run {which} appears in two of the files; merge disjoint runs")
            seen.add(which)
            runs.append(run)
    result = {"machine": [p["machine"] for p in parts], "budget": budgets[0], "seeds": sorted(first("seeds")),
              "datasets": first("datasets"), "strategies": first("strategies"),
              "tables": {d: t for p in parts for d, t in p["tables"].items()}, "note": parts[0].get("note", ""),
              "merged_from": [str(p) for p in paths], "runs": runs}
    out = Path(output)
    write_json(out / "nbgraph.json", result)
    _plot(result, out / "nbgraph.png")
    return result


def _select(result: Mapping[str, Any], dataset: str, name: str) -> List[Mapping[str, Any]]:
    return [r for r in result["runs"] if r["dataset"] == dataset and r["strategy"] == name]


def summarize(result: Mapping[str, Any]) -> str:
    """Markdown: per dataset x strategy, mean validation regret and pick test regret at the checkpoints."""
    budget = result["budget"]
    cols = [q for q in CHECKPOINTS if q < budget] + [budget]
    lines = [f"NAS-Bench-Graph, budget {budget}, {len(result['seeds'])} seeds; mean validation regret / mean test "
             f"regret of the best-by-validation pick (points), median queries to the best-validation architecture, "
             f"mean share of queries that trained a table entry again (repeats)",
             "", "| dataset | strategy | " + " | ".join(f"@{q}" for q in cols) + " | queries to best (found) | repeats | s / query |",
             "|---|---|" + "---|" * (len(cols) + 3)]
    for dataset in result["datasets"]:
        for name in result["strategies"]:
            runs = _select(result, dataset, name)
            if not runs:
                continue
            cells = regret_cells(runs, cols)
            q = [r["queries_to_best"] for r in runs]
            med = np.median([x if x is not None else np.inf for x in q])
            found = sum(x is not None for x in q)
            label = name if len(runs) == len(result["seeds"]) else f"{name} ({len(runs)} seeds)"  # merged files
            lines.append(f"| {dataset} | {label} | " + " | ".join(cells) +
                         f" | {med:.0f} ({found}/{len(q)})".replace("inf", f">{budget}") +
                         f" | {np.mean([repeats(r['hashes']) / max(1, len(r['hashes'])) for r in runs]):.1%}" +
                         f" | {np.mean([r['seconds_per_query'] for r in runs]):.3f} |")
    return "\n".join(lines)


def regret_cells(runs: Sequence[Mapping[str, Any]], checkpoints: Sequence[int]) -> List[str]:
    """``'mean validation regret / mean pick test regret'`` of ``runs`` at each checkpoint (1-based)."""
    vr = np.array([r["valid_regret"] for r in runs])
    tr = np.array([r["test_regret"] for r in runs])
    return [f"{vr[:, q - 1].mean():.2f} / {tr[:, q - 1].mean():.2f}" for q in checkpoints]


def plot_panels(panels: Sequence[Tuple[str, Sequence[Mapping[str, Any]]]], strategies: Sequence[str], key: str,
                budget: int, suptitle: str, path: Path, **axes: Any) -> None:
    """One panel per ``(title, runs)``: the mean ``run[key]`` curve of each strategy against queries,
    three panels a row; ``axes`` go to each panel's ``Axes.set``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, budget + 1)
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, grid = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (title, runs) in zip(grid.flat, panels):
        for name in strategies:
            mine = [r for r in runs if r["strategy"] == name]
            if mine:
                ax.plot(x, np.mean([r[key] for r in mine], 0), label=name)
        ax.set(title=title, xlabel="trained architectures", **axes)
    for ax in list(grid.flat)[len(panels):]:
        ax.axis("off")
    grid.flat[0].legend(fontsize=8)
    fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot(result: Mapping[str, Any], path: Path) -> None:
    panels = [(d, [r for r in result["runs"] if r["dataset"] == d]) for d in result["datasets"]]
    plot_panels(panels, result["strategies"], "valid_regret", result["budget"],
                f"NAS-Bench-Graph: mean validation regret ({len(result['seeds'])} seeds)", path,
                xscale="log", yscale="symlog", ylabel="validation regret (points)")
