"""Tiny runs of `bench generate`, `bench guidance` and `bench transfer`: they write what the docs
cite, and their figures are consistent with the table (the real figures are in docs/benchmarks.md)."""

import json

import numpy as np
import pytest

from nni_diffusionnag.bench.common import nb201_truth
from nni_diffusionnag.bench.generate import run_generate_bench
from nni_diffusionnag.bench.generate import summarize as generate_summary
from nni_diffusionnag.bench.guidance import run_guidance_bench
from nni_diffusionnag.bench.transfer import run_transfer_bench
from nni_diffusionnag.bench.transfer import summarize as transfer_summary
from nni_diffusionnag.nn.surrogate import SurrogateConfig
from nni_diffusionnag.prior.model import SamplerConfig


def test_bench_generate_tiny(tmp_path):
    result = run_generate_bench(tmp_path, "nasbench201", n=40, steps=(5, 10), seeds=1, device="cpu")
    data = json.loads((tmp_path / "generate.json").read_text())
    assert (tmp_path / "generate.png").stat().st_size > 1000
    assert [r["steps"] for r in data["rows"]] == [5, 10]
    for row in data["rows"]:
        assert 0.0 <= row["validity"] <= 1.0 and 0.0 < row["uniqueness"] <= 1.0 and row["seconds"] >= 0
    assert "| 10 |" in generate_summary(result)


def test_bench_guidance_tiny(nb201_csv, tmp_path):
    result = run_guidance_bench(nb201_csv, tmp_path, columns=("cifar10_test_acc",), ns=(20,), k=16, seeds=1,
                                scales=(0.0, 0.3), sampler=SamplerConfig(num_steps=6),
                                surrogate=SurrogateConfig(hidden=8, steps=10, ensemble=2))
    assert (tmp_path / "guidance.json").is_file() and (tmp_path / "guidance.png").stat().st_size > 1000
    truth = nb201_truth(nb201_csv, "cifar10_test_acc")
    col = result["columns"]["cifar10_test_acc"]
    assert col["table_optimum"] == pytest.approx(truth.max()) and col["space_mean"] == pytest.approx(truth.mean())
    row = col["by_n"]["20"][0]
    for fig in (row["guided"], row["unguided"]):
        assert truth.min() - 1e-9 <= fig["mean"] <= truth.max() + 1e-9  # accuracies of real cells
    assert set(col["scale_sweep"]) == {"0.0", "0.3"}
    assert 0.0 <= result["params_constrained"]["runs"][0]["within_budget"] <= 1.0


def test_bench_transfer_tiny(nb201_csv, tmp_path):
    result = run_transfer_bench(nb201_csv, tmp_path, seeds=1, budget=3, strategies=("RegularizedEvolution",),
                                meta_steps=5)
    data = json.loads((tmp_path / "transfer.json").read_text())
    assert [(d["source"], d["target"]) for d in data["directions"]] == [
        ("cifar10_test_acc", "cifar100_test_acc"), ("cifar100_test_acc", "cifar10_test_acc")]
    for d in data["directions"]:
        assert (tmp_path / f"meta-{d['source']}.pt").is_file()
        truth = nb201_truth(nb201_csv, d["target"])
        assert d["target_optimum"] == pytest.approx(truth.max())
        run = d["runs"][0]
        assert 1 <= len(run["metrics"]) <= 3
        assert all(np.isclose(truth, m).any() for m in run["metrics"])  # each metric is a target-table value
    assert "RegularizedEvolution" in transfer_summary(result)
    assert (tmp_path / "transfer.md").read_text().strip() == transfer_summary(result)


def test_bench_speed_tiny(tmp_path):
    from nni_diffusionnag.bench.speed import run_speed_bench, summarize

    result = run_speed_bench(tmp_path, ["constrained"], n_results=6, repeats=1, n_valid=30, n_candidates=40,
                             surrogate=SurrogateConfig(hidden=8, steps=5, ensemble=2),
                             sampler=SamplerConfig(num_steps=6))
    assert (tmp_path / "speed.json").is_file() and (tmp_path / "speed.png").stat().st_size > 1000
    row = result["rows"][0]
    assert row["prior"] == "exact-product" and row["checked"] == 30
    assert row["valid"] == 1.0  # constraint breakers are rejected and 2-of-4 subsets repaired before a proposal
    assert row["round_s"] == pytest.approx(row["fit_s"] + row["generate_s"], abs=2e-3)
    assert "constrained" in summarize(result)


def test_bench_multiobjective_nb201_tiny(nb201_csv, tmp_path):
    """The NB201 columns' runs go through bench/common.search_nb201_table (the search core on the
    table): a tiny run queries distinct table cells and its hypervolume curve is a fraction."""
    from nni_diffusionnag.cli import main

    out = tmp_path / "out"
    assert main(["bench", "multiobjective", "--table", str(nb201_csv), "--costs", "params", "--seeds", "1",
                 "--budget", "12", "--methods", "DiffusionNAG-MO", "--output", str(out)]) == 0
    result = json.loads(next(out.glob("multiobjective-*.json")).read_text())
    (run,) = [r for col in result["columns"].values() for r in col["runs"]]
    assert run["method"] == "DiffusionNAG-MO" and len(run["rows"]) == 12 == run["distinct"]
    hv = np.array(run["hv_fraction"])
    assert np.all(np.diff(hv) >= -1e-12) and np.all((hv >= 0) & (hv <= 1 + 1e-9))
    # the curve's last point is the hypervolume of the queried cells, recomputed here from the table
    # (12 queries may all lie below the reference point, the table's median accuracy: then 0)
    from nni_diffusionnag.bench.multiobjective import _table
    from nni_diffusionnag.search.pareto import hypervolume

    t = _table(nb201_csv, "cifar10_test_acc", "params")
    assert hv[-1] == pytest.approx(hypervolume(t["y"][run["rows"]], t["ref"]) / t["true_hv"], abs=1e-4)


def test_bench_multiobjective_takes_settings_of_diffusionnag(nb201_csv, tmp_path):
    """'DiffusionNAG-MO:key=value' runs DiffusionNAG-MO with those settings (an ablation row)."""
    from nni_diffusionnag.cli import main

    out = tmp_path / "out"
    assert main(["bench", "multiobjective", "--table", str(nb201_csv), "--costs", "params", "--seeds", "1",
                 "--budget", "8", "--methods", "DiffusionNAG-MO:warmup=8", "--output", str(out)]) == 0
    result = json.loads(next(out.glob("multiobjective-*.json")).read_text())
    (run,) = [r for col in result["columns"].values() for r in col["runs"]]
    assert run["method"] == "DiffusionNAG-MO:warmup=8" and run["distinct"] == 8
    # all 8 unguided ("--seeds 1": seed 0), whatever the batch size: the same cells
    from nni_diffusionnag.bench.multiobjective import _table, run_one

    t = _table(nb201_csv, "cifar10_test_acc", "params")
    assert run_one(t, "DiffusionNAG-MO:warmup=8", "params", 0, 8)["rows"] == run["rows"]
    assert run_one(t, "DiffusionNAG-MO:warmup=8:batch_size=1", "params", 0, 8)["rows"] == run["rows"]


def test_bench_multiobjective_keeps_finished_methods_when_a_later_one_dies(nb201_csv, tmp_path, monkeypatch):
    """The JSON is written after every method, so a run killed (here: crashing) in its second
    method keeps the first method's seeds."""
    from nni_diffusionnag.bench import multiobjective

    real = multiobjective.run_one

    def dies_on_random(t, method, cost, seed, budget, device="cpu"):
        if method == "Random":
            raise KeyboardInterrupt("killed")
        return real(t, method, cost, seed, budget, device)

    monkeypatch.setattr(multiobjective, "run_one", dies_on_random)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        multiobjective.run_multiobjective_bench(nb201_csv, out, costs=("params",), seeds=(0, 1), budget=6,
                                                methods=("DiffusionNAG-MO:warmup=6", "Random"))
    result = json.loads(next(out.glob("multiobjective-*.json")).read_text())
    (col,) = result["columns"].values()
    assert [(r["method"], r["seed"]) for r in col["runs"]] == [("DiffusionNAG-MO:warmup=6", 0),
                                                                ("DiffusionNAG-MO:warmup=6", 1)]
