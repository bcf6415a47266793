"""bench nbgraph: the user-written NAS-Bench-Graph space, its evaluator, regrets, and a tiny run of every strategy."""

import json

import numpy as np
import pytest

from nni.nas.space import SimplifiedModelSpace

from nni_diffusionnag.bench import nbgraph  # needs the bench extra: bash scripts/setup.sh test installs it
from nni_diffusionnag.cli import main


def test_space_is_plain_choices_and_covers_the_table():
    space = nbgraph.GraphCellSpace()
    mutables = space.simplify()
    assert sorted(mutables) == ["input1", "input2", "input3", "op0", "op1", "op2", "op3"]
    assert [len(mutables[f"input{i}"].values) for i in (1, 2, 3)] == [2, 3, 4]
    table = nbgraph.load_table("cora")
    rng = np.random.default_rng(0)
    simple = SimplifiedModelSpace.from_model(space)
    hits = 0
    for _ in range(200):
        sample = simple.random(random_state=np.random.RandomState(int(rng.integers(1 << 30)))).sample
        hits += nbgraph.table_hash(sample) in table
    assert hits >= 199  # only the all-skip cell is missing from the table


def test_frozen_cell_runs_forward():
    import torch

    sample = {"input1": 0, "input2": 1, "input3": 1, "op0": "gcn", "op1": "skip", "op2": "gat", "op3": "fc"}
    model = nbgraph.GraphCellSpace(in_features=5, classes=3, dim=8).freeze(sample)
    assert model.sources == [0, 0, 1, 1]
    out = model(torch.randn(6, 5), torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]))
    assert out.shape == (6, 3)


def test_regrets_follow_the_pick_by_validation():
    ref = {"best_valid": 90.0, "best_test": 88.0, "best_valid_hashes": [7]}
    run = {"valid": [80.0, 85.0, 84.0, 90.0, 85.0], "test": [79.0, 83.0, 87.0, 86.0, 83.0], "hashes": [1, 2, 3, 7, 2]}
    r = nbgraph.regrets(run, ref, budget=6)
    assert r["valid_regret"] == [10.0, 5.0, 5.0, 0.0, 0.0, 0.0]
    # the pick after 3 queries is the 85.0-validation one (test 83), not the 87-test one
    assert r["test_regret"] == [9.0, 5.0, 5.0, 2.0, 2.0, 2.0]
    assert r["queries_to_best"] == 4
    assert r["repeats"] == 1  # the fifth query trained entry 2 again


@pytest.mark.slow
def test_cli_tiny_run_of_every_strategy(tmp_path):
    out = tmp_path / "out"
    assert main(["bench", "nbgraph", "--datasets", "cora", "--seeds", "1", "--budget", "12",
                 "--output", str(out)]) == 0
    result = json.loads((out / "nbgraph.json").read_text())
    assert (out / "nbgraph.png").stat().st_size > 0
    assert {r["strategy"] for r in result["runs"]} == set(nbgraph.STRATEGIES)
    table = nbgraph.load_table("cora")
    for run in result["runs"]:
        assert len(run["valid"]) == 12
        # every reported metric is the table's validation value of the architecture, in %
        for h, v in zip(run["hashes"], run["valid"]):
            assert v == pytest.approx(100 * table[h]["valid_perf"])
        assert all(np.diff(run["valid_regret"]) <= 1e-9)


def test_an_ablation_runs_under_its_own_name(tmp_path, monkeypatch):
    seen = []
    make = nbgraph._make
    monkeypatch.setattr(nbgraph, "_make", lambda name, seed, device, **kw: seen.append(kw) or make(name, seed, device, **kw))
    result = nbgraph.run_nbgraph_bench(tmp_path, ["cora"], 1, 3, ["DiffusionNAG:warmup=2:batch_size=1"])
    assert seen == [{"warmup": 2, "batch_size": 1}]
    assert [(r["strategy"], len(r["valid"])) for r in result["runs"]] == [("DiffusionNAG:warmup=2:batch_size=1", 3)]
    assert "DiffusionNAG:warmup=2:batch_size=1" in nbgraph.summarize(result)
    with pytest.raises(ValueError, match="key=value"):
        nbgraph.run_nbgraph_bench(tmp_path, ["cora"], 1, 3, ["DiffusionNAG:warmup"])


def test_isomorphic_cells_share_a_key_and_the_keyed_search_trains_one_of_each(tmp_path):
    a = {"input1": 0, "input2": 0, "input3": 0, "op0": "gcn", "op1": "gat", "op2": "sage", "op3": "fc"}
    swapped = {**a, "op0": "gat", "op1": "gcn"}  # four parallel branches, summed: any order is one network
    chained = {**a, "input2": 1}
    assert nbgraph.isomorphism_key(a) == nbgraph.isomorphism_key(swapped) != nbgraph.isomorphism_key(chained)
    result = nbgraph.run_nbgraph_bench(tmp_path, ["citeseer"], 1, 40, ["DiffusionNAG:dedup_key=nni_diffusionnag.bench.nbgraph.isomorphism_key"])
    hashes = result["runs"][0]["hashes"]
    assert len(hashes) == 40 and len(set(hashes)) == 40 and result["runs"][0]["repeats"] == 0
    assert "| 0.0% |" in nbgraph.summarize(result)


def test_multiobjective_bench_takes_settings_and_the_isomorphism_key():
    from nni_diffusionnag.bench import nbgraph_mo

    t = nbgraph_mo.nbgraph_table("citeseer")
    method = "DiffusionNAG-MO:dedup_key=nni_diffusionnag.bench.nbgraph.isomorphism_key:warmup=5"
    run = nbgraph_mo.run_one(t, method, 0, 25)
    assert run["method"] == method
    assert len({tuple(p) for p in run["points"]}) == 25  # isomorphic cells share their table point


def test_cli_refuses_bad_arguments_before_any_run(tmp_path, capsys):
    assert main(["bench", "nbgraph", "--datasets", "cora,mars", "--output", str(tmp_path)]) != 0
    assert "mars" in capsys.readouterr().err
    with pytest.raises(ValueError, match="budget"):
        nbgraph.run_nbgraph_bench(tmp_path, ["cora"], 1, 0)


def test_multiobjective_bench_on_nas_bench_graph(tmp_path):
    """A tiny run of NAS-Bench-Graph validation x its measured latency (a reported objective the
    search learns); the NB201 columns' search is tested in tests/test_multiobjective.py."""
    from nni_diffusionnag.bench import nbgraph_mo

    out = tmp_path / "out"
    assert main(["bench", "multiobjective", "--costs", "latency", "--datasets", "cora",
                 "--seeds", "1", "--budget", "12", "--methods", "DiffusionNAG-MO,NSGAII", "--output", str(out)]) == 0
    result = json.loads((out / "multiobjective-nbgraph.json").read_text())  # named for what ran
    assert set(result["columns"]) == {"cora x latency"}
    assert (out / "multiobjective-nbgraph.png").stat().st_size > 0
    from nni_diffusionnag.bench.multiobjective import output_stem

    assert output_stem(["params", "latency"], "cifar10_test_acc") == "multiobjective-cifar10_test_acc+nbgraph"
    t = nbgraph_mo.nbgraph_table("cora")
    points = {tuple(p) for p in t["y"].round(9).tolist()}
    for col in result["columns"].values():
        assert {r["method"] for r in col["runs"]} == {"DiffusionNAG-MO", "NSGAII"}
        for run in col["runs"]:
            hv = np.array(run["hv_fraction"])
            assert len(hv) == 12 and np.all(np.diff(hv) >= -1e-12) and 0 <= hv[-1] <= 1 + 1e-9
            # every query is a table entry: (validation %, -latency ms)
            assert all(tuple(np.round(p, 9)) in points for p in run["points"])
    assert main(["bench", "multiobjective", "--costs", "latency", "--datasets", "cora,mars",
                 "--output", str(tmp_path)]) != 0


@pytest.mark.slow
def test_transfer_bench_leaves_each_dataset_out(tmp_path):
    """bench nbgraph-transfer: source surrogates trained per dataset, each target searched with the
    others as sources (their weights recorded), the oracle bound from the tables themselves."""
    out = tmp_path / "out"
    assert main(["bench", "nbgraph-transfer", "--datasets", "cora,citeseer,pubmed", "--seeds", "1", "--budget", "7",
                 "--meta-steps", "20", "--strategies", "DiffusionNAG+transfer,DiffusionNAG+pooled,RegularizedEvolution",
                 "--output", str(out)]) == 0
    result = json.loads((out / "nbgraph-transfer.json").read_text())
    assert (out / "nbgraph-transfer.png").stat().st_size > 0
    assert [t["target"] for t in result["targets"]] == ["cora", "citeseer", "pubmed"]
    for t in result["targets"]:
        assert t["sources"] == [d for d in ("cora", "citeseer", "pubmed") if d != t["target"]]
        assert set(t["oracle"]["per_source"]) == set(t["sources"]) and t["oracle"]["mean_of_sources"] >= 1
        transfer = [r for r in t["runs"] if r["strategy"] == "DiffusionNAG+transfer"]
        assert len(transfer) == 1 and len(transfer[0]["valid"]) == 7
        assert set(transfer[0]["source_weights"]) == set(t["sources"])  # weighed after >= 5 results
        pooled = [r for r in t["runs"] if r["strategy"] == "DiffusionNAG+pooled"]
        assert len(pooled) == 1 and len(pooled[0]["valid"]) == 7 and "source_weights" not in pooled[0]
    assert "leave-one-dataset-out" in (out / "nbgraph-transfer.md").read_text()


def test_transfer_bench_refuses_bad_arguments(tmp_path, capsys):
    assert main(["bench", "nbgraph-transfer", "--datasets", "cora", "--output", str(tmp_path)]) != 0
    assert "at least two" in capsys.readouterr().err
    assert main(["bench", "nbgraph-transfer", "--strategies", "TPE", "--output", str(tmp_path)]) != 0
    assert "TPE" in capsys.readouterr().err


def test_front_split_puts_the_missing_hypervolume_at_the_validation_top():
    """docs/benchmarks.md §11 'What 95% of the front takes': a hand-computed table of two
    maximised objectives (validation, -latency) with a dominated filler."""
    from nni_diffusionnag.bench import nbgraph_mo

    front = [[10.0, -5.0], [9.0, -1.0], [5.0, -0.5], [1.0, -0.1]]
    filler = [[0.5 + 0.1 * i, -5.5] for i in range(36)]
    y, ref = np.array(front + filler), np.array([0.0, -6.0])
    # hypervolumes by hand: front 10 + 36 + 2.5 + 0.4 = 48.9; without the top two 27.5 + 0.4 = 27.9
    assert sorted(nbgraph_mo.top_entries(y, 0.05).tolist()) == [0, 1]
    split = nbgraph_mo.front_split(y, ref, 0.05)
    assert split["front_size"] == 4 and split["top_ranks"] == [1, 2]
    assert split["top_share"] == pytest.approx(1 - 27.9 / 48.9) and split["true_hv"] == pytest.approx(48.9)
    assert nbgraph_mo.hv_with_top(np.array([[5.0, -0.5]]), split, ref) == pytest.approx(48.5 / 48.9)
    # given the rest, drawing 9 first reaches 47.9 / 48.9 >= 0.95 at once; drawing 10 first, 32.9 / 48.9 does not
    draws = nbgraph_mo.uniform_top_draws(y, ref, split, repeats=200)
    assert set(draws.tolist()) == {1, 2}
    assert set(nbgraph_mo.uniform_top_draws(y, ref, split, target=1.0, repeats=20).tolist()) == {2}
    assert set(nbgraph_mo.uniform_top_draws(y, ref, split, target=1.01, repeats=5).tolist()) == {3}  # never
    # an entry tied with the last of the top joins it (float rounding included)
    tied = np.vstack([y, [[9.0 + 1e-9, -3.0]]])
    assert sorted(nbgraph_mo.top_entries(tied, 0.04).tolist()) == [0, 1, 40]  # 2 asked, 3 kept
    with pytest.raises(ValueError, match="top_fraction"):
        nbgraph_mo.top_entries(y, 0.0)


def _result(budget, runs, dataset="cora", seeds=(0,)):
    ref = {"best_valid": 90.0, "best_test": 88.0, "best_valid_hashes": [7], "entries": 9}
    full = []
    for strategy, seed, hashes in runs:
        run = {"strategy": strategy, "dataset": dataset, "seed": seed, "hashes": hashes,
               "valid": [80.0 + h for h in hashes], "test": [80.0] * len(hashes), "seconds_per_query": 0.1}
        full.append({**run, **nbgraph.regrets(run, ref, budget)})
    return {"machine": {}, "budget": budget, "seeds": list(seeds), "datasets": [dataset],
            "strategies": list(dict.fromkeys(r[0] for r in runs)), "tables": {dataset: ref}, "runs": full}


def test_merge_joins_split_runs_and_refuses_overlaps(tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_result(3, [("Random", 0, [1, 2, 2]), ("Random", 1, [3, 1, 2])], seeds=(0, 1))))
    b.write_text(json.dumps(_result(3, [("DiffusionNAG", 0, [5, 6, 7])], dataset="photo")))
    assert main(["bench", "nbgraph", "--merge", f"{a},{b}", "--output", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "nbgraph.json").read_text())
    assert merged["datasets"] == ["cora", "photo"] and merged["seeds"] == [0, 1] and len(merged["runs"]) == 3
    assert (tmp_path / "m" / "nbgraph.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "| photo | DiffusionNAG (1 seeds) | " in out and "| 3 (1/1) | 0.0% |" in out  # found entry 7 at query 3
    assert "| cora | Random | " in out and "| 16.7% |" in out  # one repeat in 6 queries
    c.write_text(json.dumps(_result(4, [("TPE", 0, [1, 2, 3, 4])])))
    assert main(["bench", "nbgraph", "--merge", f"{a},{c}", "--output", str(tmp_path / "m")]) != 0
    assert "different budgets [3, 4]" in capsys.readouterr().err
    assert main(["bench", "nbgraph", "--merge", f"{a},{a}", "--output", str(tmp_path / "m")]) != 0
    assert "appears in two of the files" in capsys.readouterr().err
    assert main(["bench", "search", "--merge", str(a), "--output", str(tmp_path / "m")]) != 0
    assert "--merge is for bench nbgraph only" in capsys.readouterr().err
