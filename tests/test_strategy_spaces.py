"""The strategy on NNI's hub spaces and on a user's own space: generic encoding, a prior
(exact for independent choices, else trained on the fly within a small time budget), sequential engine, a synthetic evaluator."""

from __future__ import annotations

import pytest
import torch.nn as tnn

import nni
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, MutableDropout, Repeat
from nni.nas.space import SimplifiedModelSpace

from helpers import SampleLengthEvaluator
from nni_diffusionnag.exceptions import UnsupportedSpaceError
from nni_diffusionnag.nn.surrogate import SurrogateConfig
from nni_diffusionnag.prior.model import SamplerConfig
from nni_diffusionnag.integration.strategy import DiffusionNAG


class MixedSpace(ModelSpace):
    """A user's own space mixing LayerChoice, nni.choice, Repeat depth and InputChoice."""

    def __init__(self):
        super().__init__()
        width = nni.choice("width", [8, 16, 24])
        self.stem = LayerChoice([tnn.Conv2d(3, 8, 3, padding=1), tnn.Conv2d(3, 8, 5, padding=2)], label="stem")
        self.body = Repeat(lambda i: LayerChoice([tnn.ReLU(), tnn.Tanh(), tnn.Identity()], label=f"act{i}"),
                           nni.choice("depth", [1, 2, 3]))
        self.skip = InputChoice(n_candidates=3, n_chosen=1, label="skip")
        self.width = width

    def forward(self, x):
        return self.body(self.stem(x))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_DIFFUSIONNAG_CACHE", str(tmp_path / "priors"))


def _run(model_space, trials=12, **kw):
    strategy = DiffusionNAG(seed=0, warmup=6, batch_size=3, n_candidates=30, device="cpu", prior_time_budget=4,
                            surrogate=SurrogateConfig(hidden=16, steps=30, ensemble=2),
                            sampler=SamplerConfig(num_steps=8), **kw)
    space = SimplifiedModelSpace.from_model(model_space, SampleLengthEvaluator())
    strategy(space, SequentialExecutionEngine(max_model_count=trials))
    hist = strategy.history()
    assert len(hist) == trials
    samples = [r["sample"] for r in hist]
    assert len({repr(sorted(s.items())) for s in samples}) == trials  # no duplicates
    for sample in samples:
        assert model_space.contains(sample)
    return strategy


def test_mixed_user_space():
    strategy = _run(MixedSpace())
    assert strategy.space.name.startswith("generic")


@pytest.mark.parametrize("name", ["MobileNetV3Space", "ProxylessNAS", "ShuffleNetSpace", "AutoformerSpace"])
def test_hub_spaces(name):
    import nni.nas.hub.pytorch as hub

    _run(getattr(hub, name)(), trials=8)


def test_numerical_mutable_is_refused_by_name_then_discretized():
    class WithDropout(MixedSpace):
        def __init__(self):
            super().__init__()
            self.drop = MutableDropout(nni.uniform("dropout", 0.0, 0.5))

    with pytest.raises(UnsupportedSpaceError, match="dropout"):
        _run(WithDropout(), trials=2)
    _run(WithDropout(), trials=6, discretize=4)


def test_ofa_mobilenetv3_under_a_flops_budget():
    """The paper's 20-node encoding with its shipped prior; every trial fits the exact budget."""
    from nni_diffusionnag.properties.mobilenetv3 import MobileNetV3Macro, count_sample, mobilenetv3_budget
    from nni_diffusionnag.space.mobilenetv3 import MobileNetV3OFASpace, ofa_mobilenetv3

    model_space = ofa_mobilenetv3()
    strategy = _run(model_space, trials=8, constraints=[mobilenetv3_budget("flops", 230)])
    assert isinstance(strategy.space, MobileNetV3OFASpace)
    assert "on the fly" not in str(strategy.generator.prior.meta.get("source", ""))  # the shipped prior
    macro = MobileNetV3Macro.from_model(model_space)
    flops = [count_sample(r["sample"], macro)["flops"] / 1e6 for r in strategy.history()]
    assert max(flops) <= 230


def test_default_mobilenetv3_under_a_flops_budget():
    """NNI's default space (generic encoding): the additive fit guides, the exact count decides."""
    import nni.nas.hub.pytorch as hub

    from nni_diffusionnag.properties.mobilenetv3 import MobileNetV3Macro, count_sample, mobilenetv3_budget

    model_space = hub.MobileNetV3Space()
    strategy = _run(model_space, trials=6, constraints=[mobilenetv3_budget("flops", 200, num_samples=300)])
    macro = MobileNetV3Macro.from_model(model_space)
    assert max(count_sample(r["sample"], macro)["flops"] / 1e6 for r in strategy.history()) <= 200
