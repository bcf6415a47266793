"""Fuzz: 200 seeded random user spaces either search 3 trials or are refused by name; and the
per-node prior that makes spaces with dependencies cheap (no training, every proposal valid)."""

from __future__ import annotations

import random
import signal
from contextlib import contextmanager

import pytest
import torch.nn as tnn

import nni
from nni.mutable import ensure_frozen
from nni.mutable.annotation import ExpressionConstraint
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, Repeat, model_context
from nni.nas.space import SimplifiedModelSpace

from helpers import SampleLengthEvaluator
from nni_diffusionnag.exceptions import UnsupportedSpaceError
from nni_diffusionnag.integration.mutables import generic_space
from nni_diffusionnag.integration.strategy import DiffusionNAG
from nni_diffusionnag.nn.surrogate import SurrogateConfig
from nni_diffusionnag.prior import cache as prior_cache
from nni_diffusionnag.prior.exact import ProductPrior
from nni_diffusionnag.prior.model import SamplerConfig
from nni_diffusionnag.search.generator import GuidedGenerator

ACTS = [tnn.ReLU, tnn.Tanh, tnn.Identity, tnn.Sigmoid, tnn.GELU]


class FuzzSpace(ModelSpace):
    """A random mixture of LayerChoice, nni.choice, Repeat, InputChoice, numerical mutables and a
    constraint, drawn from ``seed`` (the same seed builds the same space, as freeze() needs)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self._seed = seed
        rng = random.Random(seed)
        self.numeric_labels, self.choices = [], []
        blocks = []
        for j in range(rng.randint(1, 5)):
            kind = rng.choice(["layer", "layer_dict", "choice", "repeat", "input", "numerical"])
            if kind == "layer":
                blocks.append(LayerChoice([a() for a in ACTS[: rng.randint(2, 5)]], label=f"layer{j}"))
            elif kind == "layer_dict":
                blocks.append(LayerChoice({f"op{k}": ACTS[k]() for k in range(rng.randint(2, 4))}, label=f"named{j}"))
            elif kind == "choice":
                values = rng.choice([[1, 2, 4, 8][: rng.randint(2, 4)], ["a", "b", "c"], [0.1, 0.5]])
                c = self.add_mutable(nni.choice(f"choice{j}", values))
                ensure_frozen(c)
                if isinstance(values[0], int):
                    self.choices.append(c)
            elif kind == "repeat":
                depth = rng.choice([(1, rng.randint(2, 3)), nni.choice(f"depth{j}", [1, 2, 3])])
                blocks.append(Repeat(lambda i, j=j: LayerChoice([tnn.ReLU(), tnn.Tanh()], label=f"rep{j}_{i}"), depth,
                                     label=f"repeat{j}" if isinstance(depth, tuple) else None))
            elif kind == "input":
                n = rng.randint(2, 4)
                self.add_module(f"input{j}", InputChoice(n, n_chosen=rng.choice([1, 2, None]) if n > 2 else 1,
                                                         label=f"input{j}"))
            else:
                u = self.add_mutable(rng.choice([nni.uniform, nni.loguniform])(f"num{j}", 0.01, 1.0))
                ensure_frozen(u)
                self.numeric_labels.append(f"num{j}")
        self.blocks = tnn.ModuleList(blocks)
        if self.choices and rng.random() < 0.5:
            c = self.choices[0]
            # satisfiable by construction: the smallest value always passes
            self.add_mutable(ExpressionConstraint(c <= sorted(c.values)[len(c.values) // 2], label=f"limit_{c.label}"))

    def freeze(self, sample):  # NNI 3.0 asks a space that calls add_mutable to rebuild itself
        self.validate(sample)
        with model_context(sample):
            return FuzzSpace(self._seed)

    def forward(self, x):
        return x


@contextmanager
def _hang_guard(seconds: int, what: str):
    """Fail (not time) a case that hangs: SIGALRM after a generous bound."""
    def _raise(*_):
        raise TimeoutError(f"{what} did not finish within {seconds} s: it hangs")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_DIFFUSIONNAG_CACHE", str(tmp_path / "priors"))


@pytest.mark.slow
def test_200_random_spaces_search_or_are_refused_by_name():
    searched = refused = constrained = 0
    for seed in range(200):
        model_space = FuzzSpace(seed)
        discretize = 4 if seed % 2 else None  # numerical mutables: refused without discretize, binned with it
        strategy = DiffusionNAG(seed=seed, warmup=2, batch_size=1, n_candidates=8, device="cpu", discretize=discretize,
                                surrogate=SurrogateConfig(hidden=8, steps=5, ensemble=2, gp_steps=10),
                                sampler=SamplerConfig(num_steps=4))
        with _hang_guard(120, f"space {seed}"):
            try:
                space = SimplifiedModelSpace.from_model(model_space, SampleLengthEvaluator())
                strategy(space, SequentialExecutionEngine(max_model_count=3))
            except UnsupportedSpaceError as err:
                assert model_space.numeric_labels and discretize is None, f"space {seed}: {err}"
                assert any(f"'{label}'" in str(err) for label in model_space.numeric_labels), str(err)
                refused += 1
                continue
        nni.trial._params = None
        hist = strategy.history()
        samples = [r["sample"] for r in hist]
        every = strategy.space.enumerate_types()  # constraints respected; None if too many to list
        expected = 3 if every is None else min(3, len(every))
        assert len(hist) == expected and not strategy.core.failures(), f"space {seed}: {hist}, {strategy.core.failures()}"
        for sample in samples:
            assert model_space.contains(sample), f"space {seed}: {sample} is not in the space"
        assert len({repr(sorted(s.items())) for s in samples}) == len(samples)
        constrained += any(isinstance(m, ExpressionConstraint) for m in model_space.simplify().values())
        searched += 1
    assert searched + refused == 200
    assert searched > 100 and refused > 20 and constrained > 10  # the mixture really covers every case


class Constrained(ModelSpace):
    """Three choices tied by a constraint, and a 2-of-4 InputChoice (a k-of-n rule)."""

    def __init__(self):
        super().__init__()
        self.a = self.add_mutable(nni.choice("a", [1, 2, 3, 4]))
        self.b = self.add_mutable(nni.choice("b", [1, 2, 3, 4]))
        ensure_frozen(self.a), ensure_frozen(self.b)
        self.add_mutable(ExpressionConstraint(self.a + self.b <= 4, label="sum_le_4"))
        self.pick = InputChoice(4, n_chosen=2, label="pick")
        self.op = LayerChoice([tnn.ReLU(), tnn.Tanh(), tnn.Identity()], label="op")

    def freeze(self, sample):
        self.validate(sample)
        with model_context(sample):
            return Constrained()


def test_spaces_with_dependencies_get_the_per_node_prior_and_only_valid_proposals(caplog):
    model_space = Constrained()
    space = generic_space(model_space, max_combinations=3)  # 'pick' split into 4 bits: a k-of-n rule
    assert not prior_cache.is_product_space(space)
    with caplog.at_level("INFO", logger="nni_diffusionnag.prior.cache"):
        prior = prior_cache.prior_for_space(space, model_space)
    assert isinstance(prior, ProductPrior)  # nothing trained
    assert "constraints are enforced after sampling" in caplog.text
    # the frequencies are those of valid architectures: a (of a + b <= 4) is never 4
    a_node = next(d for d in space.decisions if d.label == "a").nodes[0]
    a_probs = prior.probs[a_node][space.legal[a_node]]
    assert a_probs[-1] < a_probs[0] / 3
    gen = GuidedGenerator(prior, SurrogateConfig(hidden=8, steps=5, ensemble=2), SamplerConfig(num_steps=10), seed=0)
    proposed = gen.propose(40, n_candidates=100, scale=0.0)
    assert len(proposed) >= 20
    for types in proposed:
        assert model_space.contains(space.types_to_sample(types))
    # forced learned stays selectable by name
    learned = prior_cache.prior_for_space(space, model_space, kind="learned", time_budget_s=1, steps=5, progress=False)
    assert not isinstance(learned, ProductPrior)
