"""The DiffusionNAG strategy on NNI's engines (sequential here; the 'ts' engine in the slow tests)."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from nni_diffusionnag.integration import compat
from nni_diffusionnag.integration.strategy import DiffusionNAG, scalar_metric

import nni  # noqa: E402
from nni.nas.evaluator import Evaluator  # noqa: E402
from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.experiment import NasExperimentConfig  # noqa: E402
from nni.nas.hub.pytorch import NasBench201  # noqa: E402
from nni.nas.space import SimplifiedModelSpace  # noqa: E402

from helpers import fast_strategy_settings  # noqa: E402
from nni_diffusionnag.integration.evaluators import TabularEvaluator  # noqa: E402

FAST = fast_strategy_settings()


@nni.trace
class FlakyEvaluator(Evaluator):
    """Counts conv_3x3 edges; fails, reports NaN, None or a dict without 'default' for some cells."""

    def _execute(self, model):
        ops = [model.sample[k] for k in sorted(model.sample)]
        convs = ops.count("conv_3x3")
        tag = ops[0]
        if tag == "none":
            raise RuntimeError("simulated trial failure")
        if tag == "skip_connect":
            nni.report_final_result(float("nan"))
        elif tag == "avg_pool_3x3":
            nni.report_final_result({"accuracy": convs})
        else:
            nni.report_final_result({"default": float(convs), "other": 1.0})



def _space(evaluator):
    return SimplifiedModelSpace.from_model(NasBench201(), evaluator)


def test_scalar_metric():
    assert scalar_metric(3) == 3.0 and scalar_metric({"default": 2, "x": 1}) == 2.0
    for bad in (None, float("nan"), math.inf, {"acc": 1.0}, "abc"):
        assert scalar_metric(bad) is None


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="optimize_mode"):
        DiffusionNAG(optimize_mode="max")
    with pytest.raises(ValueError, match="batch_size"):
        DiffusionNAG(batch_size=0)


def test_unsupported_space_is_named():
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableDropout
    import torch.nn as tnn

    from nni_diffusionnag.exceptions import UnsupportedSpaceError

    class Toy(ModelSpace):
        def __init__(self):
            super().__init__()
            self.op = LayerChoice([tnn.Conv2d(3, 3, 1), tnn.Identity()], label="my_op")
            self.drop = MutableDropout(nni.uniform("my_rate", 0.0, 0.5))

        def forward(self, x):
            return self.drop(self.op(x))

    strategy = DiffusionNAG(seed=0, **FAST)
    with pytest.raises(UnsupportedSpaceError, match="my_rate"):
        strategy(SimplifiedModelSpace.from_model(Toy(), FlakyEvaluator()), SequentialExecutionEngine(max_model_count=2))


def test_search_improves_over_its_first_batch(nb201_csv):
    strategy = DiffusionNAG(seed=0, warmup=10, batch_size=5, **FAST)
    assert repr(strategy).startswith("DiffusionNAG(batch_size=5, warmup=10")
    strategy(_space(TabularEvaluator(str(nb201_csv), "cifar10_test_acc")), SequentialExecutionEngine(max_model_count=40))
    values = [r["metric"] for r in strategy.history()]
    assert len(values) == 40
    assert len({tuple(sorted(r["sample"].items())) for r in strategy.history()}) == 40  # no duplicates
    assert np.mean(values[10:]) > np.mean(values[:10]) + 1.0  # guided rounds beat the unguided warm-up
    assert max(values[10:]) >= max(values[:10])
    with pytest.raises(RuntimeError):  # a strategy runs once (NNI's lifecycle)
        strategy(_space(TabularEvaluator(str(nb201_csv), "cifar10_test_acc")), SequentialExecutionEngine(max_model_count=2))


def test_minimize_mode(nb201_csv):
    strategy = DiffusionNAG(seed=1, warmup=10, batch_size=5, optimize_mode="minimize", **FAST)
    strategy(_space(TabularEvaluator(str(nb201_csv), "cifar10_test_acc")), SequentialExecutionEngine(max_model_count=30))
    values = [r["metric"] for r in strategy.history()]
    assert np.mean(values[10:]) < np.mean(values[:10])


def test_failed_and_nan_trials_do_not_stop_the_search():
    strategy = DiffusionNAG(seed=0, warmup=8, batch_size=4, **FAST)
    engine = SequentialExecutionEngine(max_model_count=30, continue_on_failure=True)
    strategy(_space(FlakyEvaluator()), engine)
    state = strategy.state_dict()
    reasons = [why for _, why in state["failed"]]
    assert len(state["submitted"]) == 30  # the search used its whole budget
    assert any("trial failed" in r for r in reasons)
    assert any("unusable metric" in r for r in reasons)
    assert all(np.isfinite(v) for _, v in state["history"])
    assert len(state["history"]) + len({tuple(k) for k, _ in state["failed"]}) >= 30
    first_ops = {r["sample"]["cell/0_1"] for r in strategy.history()}
    assert first_ops <= {"conv_1x1", "conv_3x3"}  # only the good results were learned


def test_state_dict_round_trip_keeps_history_and_surrogate(nb201_csv):
    evaluator = TabularEvaluator(str(nb201_csv), "cifar100_test_acc")
    first = DiffusionNAG(seed=3, warmup=8, batch_size=4, **FAST)
    first(_space(evaluator), SequentialExecutionEngine(max_model_count=16))
    state = first.state_dict()
    probe = first.space.enumerate_types()[::997]
    before = first.generator.predict(probe)[0]

    second = DiffusionNAG(seed=99, warmup=8, batch_size=4, **FAST)
    second.load_state_dict(state)
    engine = SequentialExecutionEngine(max_model_count=8)
    second(_space(evaluator), engine)
    hist = second.history()
    assert len(hist) == 24 and hist[:16] == first.history()
    keys = [tuple(sorted(r["sample"].items())) for r in hist]
    assert len(set(keys)) == 24  # nothing re-submitted after the resume
    # the surrogate came back with the state: before refitting, the resumed one predicted the same
    third = DiffusionNAG(seed=5, **FAST)
    third.load_state_dict(state)
    third.initialize(_space(evaluator), SequentialExecutionEngine(max_model_count=1))
    assert np.allclose(third.generator.predict(probe)[0], before, atol=1e-4)
    third._cleanup()


def test_resume_takes_over_the_trials_the_nni_manager_knows(nb201_csv):
    """What the NNI manager's database holds and the restored state lacks (docs/design.md): a trial
    it runs again is adopted (its metric reaches the strategy, it is never proposed again), one that
    ended while the strategy was down is recorded, one already in the state is left alone."""
    import json
    from types import SimpleNamespace

    space = _space(TabularEvaluator(str(nb201_csv), "cifar10_test_acc"))
    cells = [dict(zip(sorted(space.simplify()), ops)) for ops in
             (["conv_3x3"] * 6, ["conv_1x1"] * 6, ["skip_connect"] * 6, ["avg_pool_3x3"] * 6)]
    models = [space.freeze(c) for c in cells]

    def trial(i, status, metric=None):
        param = SimpleNamespace(parameter_id=i, parameters=json.loads(nni.dump(models[i])))
        data = [SimpleNamespace(data=metric)] if metric is not None else []
        return SimpleNamespace(trialJobId=f"t{i}", status=status, hyperParameters=[param], finalMetricData=data)

    strategy = DiffusionNAG(seed=0, **FAST)
    strategy.initialize(space, SequentialExecutionEngine(max_model_count=1))
    strategy.core.observe(cells[0], 70.0)  # in the restored state
    jobs = [trial(0, "SUCCEEDED", 70.0), trial(1, "ADD_RESUMED"), trial(2, "SUCCEEDED", 80.0),
            trial(3, "USER_CANCELED")]
    engine = SimpleNamespace(nodejs_binding=SimpleNamespace(list_trial_jobs=lambda: jobs), _models={})
    strategy._adopt_manager_trials(engine)

    assert [r["metric"] for r in strategy.history()] == [70.0, 80.0]  # trial 0 not recorded twice
    assert [f["sample"] for f in strategy.core.failures()] == [cells[3]]
    assert all(strategy.core.is_submitted(c) for c in cells)  # none of the four is proposed again
    adopted = engine._models[1]()
    assert list(engine._models) == [1]
    assert adopted.sample == cells[1]  # the engine now finds the re-run trial's model by its id
    strategy._on_final_metric(SimpleNamespace(model=adopted, metric=90.0))
    assert strategy.history()[-1] == {"sample": cells[1], "metric": 90.0}
    strategy._adopt_manager_trials(engine)  # a second pass changes nothing
    assert len(strategy.history()) == 3 and list(engine._models) == [1]
    strategy._cleanup()


@pytest.mark.slow
def test_nas_experiment_ts_engine(ts_experiment):
    """Real NNI manager + local training service: trials are processes, metrics come back. The shared
    'ts' experiment (tests/conftest.py): this strategy (seed 0, warm-up 4, batches of 2, FAST) at
    concurrency 2."""
    evaluator, strategy = ts_experiment.evaluator, ts_experiment.strategy
    top, status = ts_experiment.top3, ts_experiment.status
    assert isinstance(strategy, DiffusionNAG) and repr(strategy).startswith("DiffusionNAG(batch_size=2, warmup=4")
    assert ts_experiment.exp.config.trial_concurrency == 2
    assert status == "DONE"
    assert len(strategy.history()) == ts_experiment.trials
    for row in strategy.history():  # FinalMetric values belong to the architecture that ran
        assert row["metric"] == evaluator.table.lookup(row["sample"])
    assert len(top) == 3 and top[0] in [r["sample"] for r in strategy.history()]


@nni.trace
class InterruptingEvaluator(TabularEvaluator):
    """The table, but the user presses Ctrl-C during the n-th trial of this process."""

    calls = 0
    interrupt_at = 0

    def _execute(self, model):
        type(self).calls += 1
        if type(self).calls == type(self).interrupt_at:
            raise KeyboardInterrupt
        return super()._execute(model)


@pytest.mark.slow
def test_interrupted_experiment_resumes_with_history_and_surrogate(nb201_csv, tmp_path):
    exp_id = "dnag_" + uuid.uuid4().hex[:10]

    def config(trials):
        c = NasExperimentConfig("sequential", "simplified")
        c.max_trial_number = trials
        c.experiment_working_directory = str(tmp_path)
        return c

    InterruptingEvaluator.calls, InterruptingEvaluator.interrupt_at = 0, 13
    evaluator = InterruptingEvaluator(str(nb201_csv), "cifar10_test_acc")
    first = DiffusionNAG(seed=0, warmup=6, batch_size=4, **FAST)
    exp = compat.DiffusionNAGExperiment(NasBench201(), evaluator, first, config(24), id=exp_id)
    try:
        exp.run()  # interrupted during trial 13: NNI stops the experiment and saves a checkpoint
    finally:
        exp.stop()
        nni.trial._params = None
    assert len(first.history()) == 12 and first.generator.surrogate is not None
    probe = first.space.enumerate_types()[::1500]
    learned = first.generator.predict(probe)[0]

    InterruptingEvaluator.interrupt_at = 0
    second = DiffusionNAG(seed=0, warmup=6, batch_size=4, **FAST)
    resumed = compat.DiffusionNAGExperiment(NasBench201(), InterruptingEvaluator(str(nb201_csv), "cifar10_test_acc"),
                                            second, config(24), id=exp_id)
    resumed_surrogate = {}
    real_load = second.load_state_dict

    def load_and_probe(state):
        real_load(state)
        resumed_surrogate["pred"] = second.generator.predict(probe)[0]

    second.load_state_dict = load_and_probe
    try:
        resumed.resume()
    finally:
        resumed.stop()
        nni.trial._params = None
    assert np.allclose(resumed_surrogate["pred"], learned, atol=1e-4)  # the surrogate came back
    hist = second.history()
    assert hist[:12] == first.history()  # history restored, then continued
    assert len(hist) > 12
    assert len({tuple(sorted(r["sample"].items())) for r in hist}) == len(hist)
