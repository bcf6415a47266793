"""The benchmark commands run end to end on tiny settings (the real figures are in docs/benchmarks.md)."""

import json

import pytest

from nni_diffusionnag.bench.search import run_one, run_search_bench, run_strategy, summarize



def test_search_bench_writes_json_and_plot(nb201_csv, tmp_path):
    result = run_search_bench(nb201_csv, "cifar10_test_acc", tmp_path, seeds=2, budget=12,
                              strategies=["Random", "RegularizedEvolution", "TPE"])
    data = json.loads((tmp_path / "search-cifar10_test_acc.json").read_text())
    assert (tmp_path / "search-cifar10_test_acc.png").stat().st_size > 1000
    assert len(data["runs"]) == 6 and all(len(r["metrics"]) == 12 for r in data["runs"])
    assert data["table_optimum"] == pytest.approx(94.3733)
    text = summarize(result)
    assert "RegularizedEvolution" in text and "TPE" in text and "test accuracy" in text


def test_ablation_names_become_strategy_arguments():
    from nni_diffusionnag.bench.search import ablation_kwargs

    assert ablation_kwargs("DiffusionNAG:local_fraction=0:surrogate.labels=zscore:acquisition=ei") == {
        "local_fraction": 0, "surrogate": {"labels": "zscore"}, "acquisition": "ei"}
    with pytest.raises(ValueError, match="key=value"):
        ablation_kwargs("DiffusionNAG:local_fraction")


def test_stop_at_optimum_ends_a_run(nb201_csv):
    run = run_one("Random", nb201_csv, "cifar10_test_acc", seed=0, budget=50, stop_at=0.0)
    assert len(run["metrics"]) == 1  # the first result already reaches the threshold


def test_concurrency_keeps_trials_in_flight(nb201_csv):
    # the first result arrives only once the third model is submitted; the two in flight then finish
    run = run_one("Random", nb201_csv, "cifar10_test_acc", seed=0, budget=50, stop_at=0.0, concurrency=3)
    assert len(run["metrics"]) == 3
    # DiffusionNAG decides with results outstanding and never proposes an architecture in flight twice
    strategy, metrics, _ = run_strategy("DiffusionNAG", nb201_csv, "cifar10_test_acc", seed=0, budget=12,
                                        concurrency=4)
    history = strategy.core.history()
    assert len(metrics) == len(history) == 12
    assert len({strategy.core.key_of(h["sample"]) for h in history}) == 12
    with pytest.raises(ValueError, match="concurrency"):
        run_one("Random", nb201_csv, "cifar10_test_acc", seed=0, budget=5, concurrency=0)


def test_mobilenetv3_bench_counts_every_predictor_call(tmp_path):
    """Tiny run of `bench mobilenetv3` (cached synthetic labels instead of digits training)."""
    import numpy as np

    from nni_diffusionnag.bench.mobilenetv3 import run_mbv3_bench, summarize as summarize_mbv3
    from nni_diffusionnag.nn.surrogate import SurrogateConfig
    from nni_diffusionnag.prior.model import SamplerConfig
    from nni_diffusionnag.space.mobilenetv3 import MobileNetV3OFASpace

    space = MobileNetV3OFASpace()
    types = space.random_types(16, np.random.default_rng(0))
    labels = {"n": 16, "epochs": 1, "types": types.tolist(), "accuracy": (types[:, 0] * 1.0 + 80).tolist(),
              "seconds": 0, "task": "synthetic (test)"}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "mbv3_labels.json").write_text(json.dumps(labels))
    result = run_mbv3_bench(tmp_path, seeds=1, num_labels=16, label_epochs=1, reference=4000, batch=4,
                            max_batches=2, min_batches=1, trace_calls=0, filter_cap=3000,
                            sampler=SamplerConfig(num_steps=5), surrogate=SurrogateConfig(hidden=8, steps=20, ensemble=2),
                            sweep_budgets=(220.0,), sweep_scales=(1.0,), sweep_seeds=1)
    assert (tmp_path / "mobilenetv3.json").is_file() and (tmp_path / "mobilenetv3.png").is_file()
    run = result["runs"][0]
    guided = run["guided"]
    per_batch = 4 * 2 * 5  # graphs x (corrector + predictor) x steps, before scoring
    assert per_batch * guided["batches"] <= guided["calls"] <= (per_batch + 4) * guided["batches"]
    assert run["filter"]["calls"] <= 3000
    for hit in list(run["filter"]["hits"].values()) + list(guided["hits"].values()):
        assert hit is None or hit["calls"] >= 1
    assert len(result["budget_sweep"]) == 2 and "sample-and-filter" in summarize_mbv3(result)


def test_bench_durability_times_every_save(nb201_csv, tmp_path):
    from nni_diffusionnag.bench.durability import run_durability_bench, summarize

    result = run_durability_bench(nb201_csv, tmp_path, budget=4)
    assert result["results"] == 4 and result["saves"] >= 4  # one save per result (and NNI's own at start)
    assert 0 < result["share_saving"] < 1 and result["checkpoint_kib"] > 0
    assert (tmp_path / "durability.json").is_file() and "checkpoint saves for 4 results" in summarize(result)
