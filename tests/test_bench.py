"""The benchmark commands run end to end on tiny settings (the real figures are in docs/benchmarks.md)."""

import json

import nni
import pytest

from nni_diffusionnag.bench.search import run_one, run_search_bench, summarize


@pytest.fixture(autouse=True)
def _reset_trial_params():
    yield
    nni.trial._params = None


def test_search_bench_writes_json_and_plot(nb201_csv, tmp_path):
    result = run_search_bench(nb201_csv, "cifar10_test_acc", tmp_path, seeds=2, budget=12,
                              strategies=["Random", "RegularizedEvolution", "TPE"])
    data = json.loads((tmp_path / "search-cifar10_test_acc.json").read_text())
    assert (tmp_path / "search-cifar10_test_acc.png").stat().st_size > 1000
    assert len(data["runs"]) == 6 and all(len(r["metrics"]) == 12 for r in data["runs"])
    assert data["table_optimum"] == pytest.approx(94.3733)
    text = summarize(result)
    assert "RegularizedEvolution" in text and "TPE" in text and "test accuracy" in text


def test_stop_at_optimum_ends_a_run(nb201_csv):
    run = run_one("Random", nb201_csv, "cifar10_test_acc", seed=0, budget=50, stop_at=0.0)
    assert len(run["metrics"]) == 1  # the first result already reaches the threshold
