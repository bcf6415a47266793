"""Multi-objective search: Pareto/hypervolume maths, objective settings, the core's Pareto loop."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from nni_diffusionnag.search.config import Objective, SearchConfig
from nni_diffusionnag.search.multiobjective import MultiObjective, chebyshev_np
from nni_diffusionnag.search.pareto import hypervolume, hypervolume_curve, hypervolume_improvement, pareto_mask


def test_pareto_mask_and_hypervolume_on_known_points():
    y = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 1.0], [1.0, 2.0], [0.5, 0.5]])
    assert pareto_mask(y).tolist() == [True, True, False, False, False]  # dominated, repeated, dominated
    assert hypervolume(y, np.zeros(2)) == pytest.approx(3.0)  # two 1x2 boxes overlapping in a 1x1 one
    assert hypervolume(y, np.array([1.5, 0.0])) == pytest.approx(0.5)  # only [2, 1] is above it in both
    assert hypervolume_curve(np.array([[1.0, 1.0], [0.5, 0.5], [2.0, 1.0], [1.0, 2.0]]), np.zeros(2)).tolist() == [
        1.0, 1.0, 2.0, 3.0]
    assert hypervolume_improvement(np.array([[3.0, 3.0], [0.5, 0.5]]), y[:2], np.zeros(2)).tolist() == [
        pytest.approx(6.0), 0.0]


def test_two_objective_front_sweep_matches_the_pairwise_definition():
    """The sorted sweep of 2-D fronts against pairwise dominance, ties and repeats included."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        y = rng.integers(0, 4, size=(int(rng.integers(1, 15)), 2)).astype(float)
        dominated = ((y[None] >= y[:, None]).all(-1) & (y[None] > y[:, None]).any(-1)).any(1)
        first_copy = np.array([not (y[:i] == y[i]).all(1).any() for i in range(len(y))])
        assert pareto_mask(y).tolist() == (~dominated & first_copy).tolist(), y


def test_two_objective_improvement_is_the_hypervolume_difference():
    """The vectorised 2-D staircase against the definition (one hypervolume per candidate)."""
    rng = np.random.default_rng(0)
    ref = np.array([-1.5, -1.2])
    for n in range(8):
        front, cands = rng.normal(size=(n, 2)), rng.normal(size=(30, 2))
        base = hypervolume(front, ref) if n else 0.0
        slow = [hypervolume(np.vstack([front, c[None]]), ref) - base for c in cands]
        assert np.allclose(hypervolume_improvement(cands, front, ref), slow, atol=1e-12)


def test_expected_improvement_does_not_trust_a_wide_guess():
    """A candidate predicted below the reference with a large spread looks best to an optimistic
    (mean + 2 std) pick but has a small expected improvement; one predicted just above it wins."""
    observed = np.array([[0.5, -1.0], [0.2, -0.2]])  # maximised: accuracy, -cost
    lo, hi, ref = observed.min(0), observed.max(0), np.array([0.3, -1.1])
    mean = np.array([[0.35, -0.5],   # a little above the reference, mid cost, sure
                     [0.0, -0.1]])   # well below the reference, cheap, very unsure
    std = np.array([[0.01, 0.0], [0.2, 0.0]])
    w = np.full((2, 2), 0.5)
    assert MultiObjective.select(mean + 2 * std, w, observed, 1, lo, hi, ref) == [1]  # optimism
    assert MultiObjective.select(mean, w, observed, 1, lo, hi, ref, std=std, rng=np.random.default_rng(0)) == [0]


@pytest.mark.parametrize("m", [3, 4])
def test_hypervolume_matches_monte_carlo_in_more_dimensions(m):
    rng = np.random.default_rng(m)
    y = rng.random((12, m))
    u = rng.random((200_000, m))
    mc = (u[:, None, :] <= y[None]).all(-1).any(-1).mean()
    assert hypervolume(y, np.zeros(m)) == pytest.approx(mc, abs=0.01)


def test_objective_settings_are_checked():
    assert SearchConfig.from_kwargs(objectives=["params", "latency_ms:min", {"name": "top5", "mode": "max"}]
                                    ).objectives == (Objective("params"), Objective("latency_ms"),
                                                     Objective("top5", "maximize"))
    for bad, says in [("latency_ms", "latency_ms:min"), ("default", "beside"), ("params:up", "'min' or 'max'"),
                      (["flops", "flops"], "twice"), (3, "invalid")]:
        with pytest.raises(ValueError, match=says):
            SearchConfig.from_kwargs(objectives=bad)


def test_a_cost_objective_needs_a_cost_model():
    import nni

    from nni_diffusionnag.search.core import SearchCore
    from nni_diffusionnag.integration.mutables import decisions_from_mutables
    from nni_diffusionnag.space.generic import GenericSpace

    space = GenericSpace(decisions_from_mutables({"a": nni.choice("a", [1, 2]), "b": nni.choice("b", ["x", "y"])}))
    with pytest.raises(ValueError, match="no params cost model"):
        SearchCore(space, SearchConfig.from_kwargs(objectives=["params"], device="cpu", seed=0))


def test_selection_prefers_what_enlarges_the_front():
    observed = np.array([[0.9, -0.5], [0.8, -0.2]])
    pred = np.array([[0.85, -0.4],  # dominated by nothing observed? (0.9,-0.5) no, (0.8,-0.2) no: fills a gap
                     [0.7, -0.6],  # dominated
                     [0.95, -0.45]])  # dominates the first observed point
    w = np.full((3, 2), 0.5)
    picks = MultiObjective.select(pred, w, observed, 2, observed.min(0), observed.max(0), np.array([0.7, -0.7]))
    assert picks[0] == 2 and 1 not in picks
    assert chebyshev_np(np.array([[1.0, 1.0], [0.0, 1.0]]), np.full((2, 2), 0.5)).tolist() == [0.0, pytest.approx(-0.525)]


def test_rank_targets_keep_the_front_and_the_costs():
    from nni_diffusionnag.search.core import SearchCore
    from nni_diffusionnag.space import NasBench201Space

    space = NasBench201Space()
    rng = np.random.default_rng(0)

    def core(labels):
        return SearchCore(space, SearchConfig.from_kwargs(objectives=["params", "latency_ms:min"], seed=0, device="cpu",
                                                          surrogate={"labels": labels}))

    ranked_core, zscore_core = core("rank"), core("zscore")
    accuracy = np.r_[rng.normal(90, 1, 19), 10.0]  # a long low tail, as NB201's
    latency = rng.uniform(1, 9, 20)
    for i, types in enumerate(space.enumerate_types()[rng.permutation(15625)[:20]]):
        sample = space.types_to_sample(types)
        metric = {"default": accuracy[i]} if i == 3 else {"default": accuracy[i], "latency_ms": latency[i]}
        for c in (ranked_core, zscore_core):  # trial 3 did not report its latency
            c.observe(sample, metric)
    history = ranked_core._history
    values = ranked_core._objective_values(history) * ranked_core.mo.sign
    ranked = ranked_core._mo_targets(history)
    assert np.array_equal(zscore_core._mo_targets(history), values, equal_nan=True)
    assert np.array_equal(ranked[:, 1:], values[:, 1:], equal_nan=True)  # the costs, exact or reported, as they are
    assert np.isnan(ranked[3, 2]) and np.isfinite(values[:, :2]).all()
    # the metric: the same order, rank scores symmetric around 0, remembered for the prediction log
    assert (np.argsort(ranked[:, 0]) == np.argsort(values[:, 0])).all()
    assert abs(ranked[:, 0].mean()) < 1e-9
    assert np.array_equal(ranked_core._fit_labels[0], ranked[:, 0]) and zscore_core._fit_labels is None
    # the tail no longer dwarfs the rest: the 10% result is one rank step below the next
    assert ranked[19, 0] > ranked[:19, 0].min() - 1.0
    finite = np.isfinite(values).all(axis=1)
    assert (pareto_mask(ranked[finite]) == pareto_mask(values[finite])).all()


def _nb201_core(objectives, **settings):
    from nni_diffusionnag.search.core import SearchCore
    from nni_diffusionnag.space import NasBench201Space

    from helpers import fast_strategy_settings

    fast = fast_strategy_settings()
    config = SearchConfig.from_kwargs(objectives=objectives, seed=0, warmup=6, batch_size=3, **fast, **settings)
    return SearchCore(NasBench201Space(), config)


def test_core_searches_a_front_of_accuracy_and_params(nb201_csv, tmp_path):
    import json

    from nni_diffusionnag.bench.common import type_index
    from nni_diffusionnag.bench.common import nb201_truth
    from nni_diffusionnag.properties.nasbench201 import count

    acc = nb201_truth(nb201_csv, "cifar10_test_acc")
    core = _nb201_core(["params"])
    core.prediction_log = tmp_path / "predictions.jsonl"
    for _ in range(6):
        for sample in core.propose(3):
            core.observe(sample, float(acc[int(type_index(np.array(core.key_of(sample))))]))
    assert len(core.history()) == 18
    # the accuracy surrogate learns rank scores; what it predicted is logged in accuracy units
    logged = [json.loads(line)["mean"] for line in core.prediction_log.read_text().splitlines()]
    seen = [h["metric"] for h in core.history()]
    assert len(logged) == 12 and all(min(seen) - 1e-9 <= m <= max(seen) + 1e-9 for m in logged)
    assert max(logged) > 50  # accuracy in percent, not a normal score
    front = core.pareto_front()
    values = np.array([[f["objectives"]["default"], -f["objectives"]["params"]] for f in front])
    everything = np.array([[h["metric"], -count(np.array([core.key_of(h["sample"])]), "params", unit="M")[0]]
                           for h in core.history()])
    assert len(front) >= 2 and pareto_mask(values).all()  # non-dominated, with both objectives
    assert all(not ((everything >= v).all(1) & (everything > v).any(1)).any() for v in values)
    assert [f["objectives"]["default"] for f in front] == sorted((f["objectives"]["default"] for f in front),
                                                                 reverse=True)

    state = core.state_dict()
    again = _nb201_core(["params"])
    again.load_state_dict(state)
    assert again.pareto_front() == front


def test_reported_objective_missing_is_named_and_the_search_goes_on(caplog):
    core = _nb201_core(["latency_ms:min"])
    samples = core.propose(6)
    with caplog.at_level(logging.WARNING):
        for i, sample in enumerate(samples):
            core.observe(sample, {"default": float(i), "latency_ms": 5.0 - i} if i % 2 else {"default": float(i)})
        core.observe(core.propose(1)[0], {"default": 9.0, "latency_ms": float("nan")})
    said = [r.getMessage() for r in caplog.records if "latency_ms" in r.getMessage()]
    assert len(said) == 1 and "report it in their final dict" in said[0]  # once, naming it
    assert len(core.history()) == 7
    front = core.pareto_front()  # only the results that reported it
    assert front and all(set(f["objectives"]) == {"default", "latency_ms"} for f in front)
    assert len(core.propose(3)) == 3  # a guided round with the latency surrogate fitted on 3 results
    assert "latency_ms" in core.mo.models


def test_the_tuner_takes_objectives_from_its_class_args():
    """The nnictl route: the same setting by name, results with the reported objective."""
    import json
    from pathlib import Path

    from nni_diffusionnag.integration.tuner import DiffusionNAGTuner

    ss = json.loads((Path(__file__).resolve().parents[1] / "examples" / "nnictl_nasbench201" /
                     "search_space.json").read_text())
    tuner = DiffusionNAGTuner(objectives=["latency_ms:min"], seed=0, warmup=4, batch_size=2, device="cpu",
                              surrogate=dict(hidden=16, steps=30, ensemble=2), sampler=dict(num_steps=10))
    tuner.update_search_space(ss)
    for i in range(6):
        params = tuner.generate_parameters(i)
        convs = sum(v == "conv_3x3" for v in params.values())
        tuner.receive_trial_result(i, params, {"default": float(convs), "latency_ms": 1.0 + convs})
    front = tuner.core.pareto_front()
    assert front and all(set(f["objectives"]) == {"default", "latency_ms"} for f in front)
    # accuracy and latency grow together here: every front point trades one for the other
    ordered = sorted((f["objectives"]["default"], f["objectives"]["latency_ms"]) for f in front)
    assert [lat for _, lat in ordered] == sorted(lat for _, lat in ordered)
