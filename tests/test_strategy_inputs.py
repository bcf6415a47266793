"""Bad input fails early and clearly; bad trials never end the search (the strategy route)."""

from __future__ import annotations

import logging
import math

import pytest

from nni_diffusionnag.integration import compat  # noqa: F401  (NNI import warnings)

import nni  # noqa: E402
from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.experiment import NasExperimentConfig  # noqa: E402
from nni.nas.hub.pytorch import NasBench201  # noqa: E402
from nni.nas.space import SimplifiedModelSpace  # noqa: E402

from nni_diffusionnag import DiffusionNAG, DiffusionNAGExperiment  # noqa: E402
from nni_diffusionnag.properties import budget_constraint  # noqa: E402

FAST = dict(seed=0, warmup=3, batch_size=2, n_candidates=20, device="cpu",
            surrogate=dict(hidden=16, steps=20, ensemble=2), sampler=dict(num_steps=8))
SCORE = {"conv_3x3": 3.0, "conv_1x1": 2.0, "skip_connect": 1.0}


def _score(sample) -> float:
    return sum(SCORE.get(v, 0.0) for v in sample.values())


def _search(fn, budget: int = 6, **kwargs) -> DiffusionNAG:
    strategy = DiffusionNAG(**{**FAST, **kwargs})
    space = SimplifiedModelSpace.from_model(NasBench201(), FunctionalEvaluator(fn))
    strategy(space, SequentialExecutionEngine(max_model_count=budget, continue_on_failure=True))
    return strategy


@pytest.mark.parametrize("kwargs, match", [
    (dict(acquisition="typo"), r"acquisition='typo' is invalid; acquisition must be one of \['ucb', 'ei', 'mean', 'ts'\]"),
    (dict(scale=-3), r"scale=-3 is invalid; scale must be a finite number >= 0"),
    (dict(kappa=math.nan), r"kappa=nan is invalid"),
    (dict(device="cuda"), r"device='cuda' but this machine has no CUDA device"),
    (dict(patience=0), r"patience=0 is invalid"),
    (dict(prior="/no/such/prior.pt"), r"prior='/no/such/prior.pt' is not a file"),
    (dict(batch_sise=3), r"unknown argument\(s\) \['batch_sise'\]; valid arguments: \['acquisition'"),
    (dict(surrogate=dict(ensemble=0)), r"surrogate=.* is invalid"),
    (dict(surrogate=dict(lr=math.nan)), r"surrogate lr must be a finite number > 0, got nan"),
    (dict(surrogate=dict(hidden=16.0)), r"surrogate hidden must be an int, got 16.0"),
    (dict(sampler=dict(num_steps=2.5)), r"sampler num_steps must be an int, got 2.5"),
    (dict(sampler=dict(snr=math.nan)), r"sampler snr must be a finite number > 0, got nan"),
])
def test_strategy_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionNAG(**kwargs)


def test_impossible_constraint_is_refused_before_any_trial():
    calls = []
    with pytest.raises(ValueError, match=r"no architecture meets the constraint params<=0.0001M: the smallest of all "
                                         r"15,625 architectures of 'nasbench201' costs 0\.073306"):
        _search(lambda model: calls.append(1), constraints=[budget_constraint("params", 0.0001)])
    assert calls == []


def test_named_budget_constraint_by_string():
    seen = []

    def evaluate(model):
        seen.append(nni.get_current_parameter().sample)
        nni.report_final_result(1.0)

    _search(evaluate, budget=4, constraints=["params<=0.4"])
    from nni_diffusionnag.properties import count_sample

    assert len(seen) == 4 and all(count_sample(s, "params") / 1e6 <= 0.4 for s in seen)


def test_failing_trials_and_bad_metrics_never_end_the_search(caplog):
    calls = []

    def evaluate(model):
        sample = nni.get_current_parameter().sample
        calls.append(sample)
        kind = len(calls) % 4
        if kind == 1:
            raise RuntimeError("out of memory")
        if kind == 2:
            nni.report_final_result(None)
        elif kind == 3:
            nni.report_final_result("90.43")  # NNI marks this failed; so do we
        else:
            nni.report_final_result(_score(sample))

    strategy = _search(evaluate, budget=8)
    assert len(calls) == 8
    reasons = [f["reason"] for f in strategy.core.failures()]
    assert len(reasons) == 6 and reasons.count("trial failed") == 2  # each failed architecture once
    assert [h["metric"] for h in strategy.history()] == [_score(calls[3]), _score(calls[7])]


def test_returned_but_unreported_score_warns_with_the_fix(caplog):
    caplog.set_level(logging.WARNING)
    strategy = _search(lambda model: 93.0, budget=3)
    assert strategy.history() == [] and len(strategy.core.failures()) == 3
    assert "nni.report_final_result(score)" in caplog.text
    assert caplog.text.count("a trial ended without a final metric") == 1  # once, not per trial


def test_experiment_sets_continue_on_failure():
    config = NasExperimentConfig("sequential", "simplified", "local")
    assert config.execution_engine.continue_on_failure is False  # NNI's default ends the search
    exp = DiffusionNAGExperiment(NasBench201(), FunctionalEvaluator(lambda m: None), DiffusionNAG(**FAST), config)
    assert exp.config.execution_engine.continue_on_failure is True
    assert exp.strategy.persist == exp._save_progress
