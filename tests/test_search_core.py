"""SearchCore: the NNI-free ask/tell search behind both adapters, tested on its own."""

from __future__ import annotations

import numpy as np
import pytest

from nni_diffusionnag.nn.targets import standardise, to_metric_units
from nni_diffusionnag.prior.exact import ProductPrior
from nni_diffusionnag.search.config import SearchConfig
from nni_diffusionnag.search.core import SearchCore, scalar_metric
from nni_diffusionnag.space import NasBench201Space

FAST = dict(surrogate=dict(hidden=16, steps=30, ensemble=2), sampler=dict(num_steps=10), device="cpu")
SCORE = {"conv_3x3": 3.0, "conv_1x1": 2.0, "skip_connect": 1.0}


def _score(sample: dict) -> float:
    return sum(SCORE.get(v, 0.0) for v in sample.values())


def _core(**kwargs) -> SearchCore:
    space = NasBench201Space()
    config = SearchConfig.from_kwargs(**{**FAST, "seed": 0, "warmup": 4, "batch_size": 2, "n_candidates": 20, **kwargs})
    return SearchCore(space, config, prior=ProductPrior(space, device="cpu"))


def test_scalar_metric_is_nni_rule():
    assert scalar_metric(1) == 1.0 and scalar_metric({"default": 2.5, "x": 1}) == 2.5 and scalar_metric(np.float32(3)) == 3.0
    for bad in (None, float("nan"), float("inf"), "90.43", {"acc": 1.0}, {"default": "1"}, True):
        assert scalar_metric(bad) is None, bad


def test_ask_tell_loop_warmup_then_guided_no_repeats():
    core = _core()
    seen = []
    for _ in range(5):
        batch = core.propose(2)
        assert len(batch) == 2
        if len(seen) < 4:
            assert core.generator.surrogate is None  # warm-up: unguided prior
        for sample in batch:
            assert core.is_submitted(sample)
            core.observe(sample, _score(sample))
            seen.append(core.key_of(sample))
    assert core.generator.surrogate is not None  # refitted after the warm-up
    assert len(set(seen)) == len(seen) == 10 and len(core.history()) == 10


def test_failures_counted_once_and_rejections_never_proposed_again():
    core = _core(warmup=20)
    a, b, c = core.propose(3)
    assert core.observe(a, None) is None  # unusable metric: a failure
    core.fail(a, "trial failed")  # NNI then also reports the trial failed: not counted twice
    core.observe(b, "90.43")  # a numeric string: NNI marks it failed, so do we
    core.reject(c, "constraint violated")
    assert [f["reason"] for f in core.failures()] == ["unusable metric None", "unusable metric '90.43'"]
    assert not core.is_submitted(c) and core.num_submitted == 2
    later = [core.key_of(s) for s in core.propose(15)]
    assert core.key_of(c) not in later and core.key_of(a) not in later


def test_state_dict_round_trip_resumes_without_repeats():
    first = _core()
    done = []
    for sample in first.propose(6):
        first.observe(sample, _score(sample))
        done.append(first.key_of(sample))
    running = first.propose(1)[0]  # submitted, no result yet: lost on resume, may come again
    state = first.state_dict()

    second = _core()
    second.load_state_dict(state)
    assert [h["metric"] for h in second.history()] == [h["metric"] for h in first.history()]
    assert second.generator.surrogate is not None
    assert not second.is_submitted(running) and second.num_submitted == 6
    nxt = [second.key_of(s) for s in second.propose(4)]
    assert not set(nxt) & set(done) and len(set(nxt)) == 4


def test_exhausted_space_returns_fewer():
    core = _core(patience=2, warmup=2)
    every = core.space.enumerate_types()
    for types in every[:-3]:
        core.observe(core.space.types_to_sample(types), 1.0)
    got = core.propose(10)
    assert len(got) <= 3 and len({core.key_of(s) for s in got}) == len(got)


def test_observe_refuses_foreign_samples():
    core = _core()
    with pytest.raises(ValueError):
        core.observe({"lr": 0.1}, 1.0)


def test_guided_proposals_log_what_the_surrogate_predicted(tmp_path):
    import json

    core = _core(optimize_mode="minimize")
    core.prediction_log = tmp_path / "checkpoint" / "predictions.jsonl"
    proposed = []
    for _ in range(4):
        for sample in core.propose(2):
            proposed.append(sample)
            core.observe(sample, -_score(sample))  # minimised: the best cells have the most convs
    lines = [json.loads(line) for line in core.prediction_log.read_text().splitlines()]
    assert len(lines) == 4 and [r["sample"] for r in lines] == proposed[4:]  # the guided ones, none in warm-up
    probe = np.array([core.key_of(r["sample"]) for r in lines])
    mean, std = core.generator.predict(probe)  # in target units: normal scores of the ranks
    # logged in the metric's own units (the surrogate learns ranks of -metric when minimising),
    # within the range observed; the last refit came after the first logged round, so compare the last round
    targets, values = core._fit_labels
    assert np.array_equal(np.argsort(targets, kind="stable"), np.argsort(values, kind="stable"))
    assert [r["mean"] for r in lines[2:]] == pytest.approx((-to_metric_units(mean[2:], targets, values)).tolist(),
                                                             abs=1e-5)
    observed = [-v for v in values]
    assert all(min(observed) - 1e-9 <= r["mean"] <= max(observed) + 1e-9 for r in lines)
    assert all(r["std"] >= 0 for r in lines)


def test_zscore_labels_fit_the_metric_itself(tmp_path):
    import json

    core = _core(surrogate={**FAST["surrogate"], "labels": "zscore"})
    core.prediction_log = tmp_path / "predictions.jsonl"
    for _ in range(4):
        for sample in core.propose(2):
            core.observe(sample, _score(sample))
    lines = [json.loads(line) for line in core.prediction_log.read_text().splitlines()]
    probe = np.array([core.key_of(r["sample"]) for r in lines[2:]])
    mean, _ = core.generator.predict(probe)  # zscore labels: the ensemble's own units are the metric's
    assert [r["mean"] for r in lines[2:]] == pytest.approx(mean.tolist(), abs=1e-5)


def test_rank_labels_keep_order_only():
    values = np.array([94.1, 10.0, 93.9, 94.1, 85.0])
    z = standardise(values, "rank")
    assert np.allclose(z, norm_scores([4.0, 0.5, 2.5, 4.0, 1.5], 5))  # ties share their mean rank
    assert np.allclose(standardise(values ** 3, "rank"), z)  # only the order counts
    zs = standardise(values, "zscore")
    # a broken architecture (10.0) stretches z-scores so that 93.9 and 94.1 look alike; ranks keep them apart
    assert zs[0] - zs[2] < 0.01 and z[0] - z[2] > 0.5
    assert np.allclose(to_metric_units(z, z, values), values)
    assert to_metric_units(np.array([z.max() + 5]), z, values)[0] == values.max()  # clamped to what was seen
    assert zs.mean() == pytest.approx(0) and zs.std() == pytest.approx(1)
    with pytest.raises(ValueError, match="labels"):
        standardise(values, "ranks")
    with pytest.raises(ValueError, match="labels 'ranks' is not one of"):
        SearchConfig.from_kwargs(surrogate={"labels": "ranks"})


def norm_scores(ranks, n):
    from statistics import NormalDist

    return [NormalDist().inv_cdf(r / n) for r in ranks]


def test_refit_steps_continue_from_the_last_fit(monkeypatch):
    """surrogate.refit_steps: the first fit trains `steps` from scratch, later ones `refit_steps`
    from the previous weights; without it every refit starts over."""
    import torch

    steps = []
    real_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        steps[-1] += 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    for refit, expect in ((5, [30, 5, 5]), (None, [30, 30, 30])):
        core = _core(surrogate=dict(hidden=16, steps=30, ensemble=2, refit_steps=refit))
        real_fit = core.generator.fit
        warm = []

        def fit(types, values, warm_start=False):
            warm.append(warm_start)
            steps.append(0)
            return real_fit(types, values, warm_start=warm_start)

        core.generator.fit = fit
        for _ in range(5):
            for sample in core.propose(2):
                core.observe(sample, _score(sample))
        assert steps[-3:] == expect and warm[-3:] == [False, refit is not None, refit is not None]
        steps.clear()
    with pytest.raises(ValueError, match="refit_steps must be None or an int >= 1"):
        SearchConfig.from_kwargs(surrogate={"refit_steps": 0})


def test_running_trials_are_believed_in_the_refit():
    """LoopConfig.pending: with trials still running, 'believer' fits on the results plus each
    running architecture labelled with the last fit's prediction; 'ignore' on the results only."""
    for mode in ("believer", "ignore"):
        core = _core(pending=mode)
        fits = []
        real_fit = core.generator.fit

        def fit(types, values, warm_start=False):
            fits.append((np.array(types), np.array(values)))
            return real_fit(types, values, warm_start=warm_start)

        core.generator.fit = fit
        for _ in range(3):  # warm-up and a first fit on results only: nothing is running yet
            for sample in core.propose(2):
                core.observe(sample, _score(sample))
        assert len(fits) == 1 and len(fits[0][0]) == 4
        running = core.propose(2)  # two trials in flight, then two more of which one reports
        done = core.propose(2)
        core.observe(done[0], _score(done[0]))
        before = core.generator.predict(np.array([core.space.sample_to_types(s) for s in running]))[0]
        core.propose(2)  # a round with 7 results and 3 running
        types, values = fits[-1]
        if mode == "ignore":
            assert len(types) == 7
            continue
        assert len(types) == 10
        believed = {core.key_of(s) for s in running + done[1:]}
        assert {tuple(t) for t in types[7:]} == believed
        keys = [tuple(t) for t in types]
        for sample, mean in zip(running, before):
            assert values[keys.index(core.key_of(sample))] == pytest.approx(mean, abs=1e-5)
        assert core.generator.best_value == pytest.approx(values[:7].max())  # a belief is not a result
    with pytest.raises(ValueError, match="pending"):
        SearchConfig.from_kwargs(pending="fantasy")


def _ops_multiset(sample: dict) -> tuple:
    """A coarse identity for the tests: cells with the same operations in any order are 'one'."""
    return tuple(sorted(sample.values()))


@pytest.mark.parametrize("objectives", [(), ("params",)])
def test_dedup_key_trains_one_architecture_per_key(objectives):
    core = _core(dedup_key=_ops_multiset, objectives=objectives)
    keys = []
    for _ in range(8):  # warm-up, then guided (or Pareto-guided) rounds with local candidates
        for sample in core.propose(2):
            core.observe(sample, _score(sample))
            keys.append(_ops_multiset(sample))
    assert len(keys) == 16 and len(set(keys)) == 16
    # without the key the same search trains several orders of one multiset (what the key is for)
    plain = _core(objectives=objectives)
    keys = []
    for _ in range(8):
        for sample in plain.propose(2):
            plain.observe(sample, _score(sample))
            keys.append(_ops_multiset(sample))
    assert len(set(keys)) < len(keys)


def test_dedup_key_exhausts_a_space_of_few_keys():
    first_edge = lambda sample: sample[sorted(sample)[0]]  # noqa: E731 - five 'architectures' in all
    core = _core(dedup_key=first_edge, warmup=2, patience=2)
    got = []
    for _ in range(6):
        for sample in core.propose(2):
            core.observe(sample, _score(sample))
            got.append(first_edge(sample))
    assert sorted(got) == sorted(set(got)) and len(got) <= 5
    assert core.propose(1) == []  # nothing new is left: the search says so instead of repeating


@pytest.mark.parametrize("bad, says", [(lambda s: [1], "unhashable"), (lambda s: s["no such label"], "KeyError"),
                                       ("json:no_such_function", "cannot import dedup_key"), (3, "dedup_key=3")])
def test_dedup_key_refused_at_construction(bad, says):
    with pytest.raises(ValueError, match=says):
        _core(dedup_key=bad)


def test_dedup_key_failing_on_a_later_sample_warns_and_the_search_goes_on(caplog):
    first = []

    def picky(sample: dict) -> tuple:  # works on the construction check's sample, fails on most others
        first.append(sample)
        if sample != first[0]:
            raise KeyError("no key for this one")
        return tuple(sorted(sample.values()))

    core = _core(dedup_key=picky)
    with caplog.at_level("WARNING", logger="nni_diffusionnag.search.core"):
        got = []
        for _ in range(4):
            for sample in core.propose(2):
                core.observe(sample, _score(sample))
                got.append(tuple(sorted(sample.items())))
    assert len(got) == 8 and len(set(got)) == 8  # every sample compared as itself: still no repeats
    warnings = [r for r in caplog.records if "dedup_key" in r.getMessage()]
    assert len(warnings) == 1 and "KeyError" in warnings[0].getMessage()


def test_dedup_key_by_name_for_yaml():
    config = SearchConfig.from_kwargs(dedup_key="json:dumps")
    import json

    assert config.loop.dedup_key is json.dumps and "dedup_key" in config.describe()


def test_tight_constraints_are_not_an_exhausted_space():
    """1 draw in 400 passes the constraint: rounds that find nothing grow until they do, so the
    search keeps proposing (it used to stop after 0-8 proposals of such a space)."""
    from nni_diffusionnag.space.decisions import Choice, Condition
    from nni_diffusionnag.space.generic import GenericSpace

    def tight(sample):
        return None if sample["a"] == sample["b"] and sample["c"] == sample["d"] else ValueError("a != b or c != d")

    space = GenericSpace([*(Choice(x, tuple(range(20))) for x in "abcd"), Condition("tight", tight)], name="tight")
    core = SearchCore(space, SearchConfig.from_kwargs(seed=0, warmup=4, n_candidates=20, device="cpu",
                                                      sampler=dict(num_steps=10)))
    got = []
    for i in range(8):
        proposal = core.propose(1)
        assert proposal, f"exhausted after {i} proposals"
        got.append(proposal[0])
        core.observe(proposal[0], float(proposal[0]["a"] + proposal[0]["c"]))
    assert all(tight(s) is None for s in got) and len({core.key_of(s) for s in got}) == 8
