"""GenericSpace (any NNI model space as a decision chain) and prior_for_space (train/cache a prior)."""

import logging

import numpy as np
import pytest
import torch
from numpy.random import RandomState

from nni_diffusionnag.integration import compat

compat.install()

import nni  # noqa: E402
from nni.mutable import ExpressionConstraint, SampleValidationError  # noqa: E402
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, MutableDropout, MutableLinear, Repeat  # noqa: E402
from nni.nas.nn.pytorch import model_context  # noqa: E402
from torch import nn as tnn  # noqa: E402

from nni_diffusionnag.prior import cache as prior_cache  # noqa: E402
from nni_diffusionnag.exceptions import SpaceMismatchError, UnsupportedSpaceError  # noqa: E402
from nni_diffusionnag.nn.score_net import ScoreNetConfig  # noqa: E402
from nni_diffusionnag.prior.model import DiffusionPrior  # noqa: E402
from nni_diffusionnag.space import NasBench201Space  # noqa: E402
from nni_diffusionnag.space.mobilenetv3 import MobileNetV3OFASpace  # noqa: E402
from nni_diffusionnag.space.base import SpaceSignature  # noqa: E402
from nni_diffusionnag.integration.mutables import decisions_from_mutables, generic_space  # noqa: E402
from nni_diffusionnag.space.generic import GenericSpace  # noqa: E402,F401
from nni_diffusionnag.prior.training import TrainConfig  # noqa: E402

TINY = ScoreNetConfig(num_layers=1, d_model=32, num_heads=2, d_ff=64)


class Toy(ModelSpace):
    """LayerChoice (list and dict), nni.choice, Repeat with a nni.choice depth, InputChoice with
    n_chosen 1, 2 and None; optionally a nni.uniform and a constraint."""

    def __init__(self, widths=(8, 16, 32), uniform=False, constraint=False):
        super().__init__()
        self._args = (widths, uniform, constraint)
        width = nni.choice("width", list(widths))
        self.stem = MutableLinear(4, width)
        self.op = LayerChoice([tnn.ReLU(), tnn.Tanh(), tnn.Sigmoid()], label="op")
        self.named = LayerChoice({"a": tnn.ReLU(), "b": tnn.Identity()}, label="named")
        depth = nni.choice("depth", [1, 2, 3])
        self.blocks = Repeat(lambda i: LayerChoice([tnn.ReLU(), tnn.Identity()], label=f"blk{i}"), depth)
        self.skip = InputChoice(3, n_chosen=1, label="skip")
        self.pair = InputChoice(4, n_chosen=2, label="pair")
        self.any = InputChoice(3, n_chosen=None, label="any")
        if uniform:
            self.drop = MutableDropout(nni.uniform("dropout", 0, 0.5))
        if constraint:
            self.add_mutable(ExpressionConstraint(depth <= 2, label="depth_le_2"))
        self.head = MutableLinear(width, 2)

    def freeze(self, sample):  # NNI 3.0 requires it of a ModelSpace that calls add_mutable (nni/nas/nn/pytorch/base.py)
        self.validate(sample)
        with model_context(sample):
            return Toy(*self._args)


@pytest.fixture(scope="module")
def toy():
    return Toy()


def test_toy_encoding_and_round_trip(toy):
    space = generic_space(toy)
    kinds = {d.label: (d.kind, len(d.nodes)) for d in space.decisions}
    assert list(kinds) == list(toy.simplify())  # simplify() order
    assert kinds["skip"] == ("subset", 1) and kinds["pair"] == ("subset", 1) and kinds["any"] == ("binary", 3)
    assert space.num_nodes == 12 and space.num_types == 3 + 3 + 2 + 3 + 2 * 3 + 3 + 6 + 6
    assert space.name == "generic-toy"
    rs = RandomState(0)
    for _ in range(50):
        sample = {}
        toy.random(memo=sample, random_state=rs)
        types = space.sample_to_types(sample)
        assert space.is_legal(types).all()
        back = space.types_to_sample(types)
        assert back == sample and all(type(back[k]) is type(v) for k, v in sample.items())
    for types in space.random_types(100, np.random.default_rng(0)):
        sample = space.types_to_sample(types)
        assert toy.contains(sample)
        assert np.array_equal(space.sample_to_types(sample), types)
    # NNI's "categorical format" of a multiple choice (label/i booleans) reads the same
    flat = {k: v for k, v in sample.items() if k != "any"}
    flat.update({f"any/{i}": i in sample["any"] for i in range(3)})
    assert toy.contains(flat) and np.array_equal(space.sample_to_types(flat), types)
    # an executable model space (what a strategy receives) encodes the same way
    from nni.nas.space import RawFormatModelSpace

    wrapped = generic_space(RawFormatModelSpace.from_model(toy))
    assert wrapped.name == "generic-toy" and wrapped.signature() == space.signature()


def test_legal_mask_chain_and_errors(toy):
    space = generic_space(toy)
    for d in space.decisions:
        for node, off, choices in zip(d.nodes, d.offsets, d.choices):
            row = np.zeros(space.num_types, dtype=bool)
            row[off:off + len(choices)] = True
            assert np.array_equal(space.legal[node], row)
            assert all(space.node_types[t].startswith(d.label) for t in np.nonzero(row)[0])
    assert np.array_equal(space.adjacency, np.eye(space.num_nodes, k=1, dtype=int))
    assert space.attention_mask().all()
    types = space.random_types(1, np.random.default_rng(1))[0]
    bad = types.copy()
    bad[0] = space.decisions[1].offsets[0]  # width node given an 'op' type
    assert not space.is_legal(bad)[0]
    with pytest.raises(ValueError, match="node 0 \\(width\\)"):
        space.types_to_sample(bad)
    with pytest.raises(ValueError, match="lacks the decisions \\['width'\\]"):
        space.sample_to_types({k: v for k, v in space.types_to_sample(types).items() if k != "width"})
    with pytest.raises(ValueError, match="not a value of 'op'"):
        space.sample_to_types({**space.types_to_sample(types), "op": 7})


def test_signature_changes_with_a_choice_and_is_deterministic(toy, tmp_path):
    a = generic_space(toy).signature()
    assert generic_space(Toy()).signature().digest == a.digest  # rebuilt model: same
    assert SpaceSignature.from_dict(dict(reversed(list(a.to_dict().items())))).digest == a.digest
    assert set(a.labels) == set(toy.simplify()) and a.extra["encoding"] == "generic/1"
    changed = generic_space(Toy(widths=(8, 16, 64)))
    assert changed.signature().digest != a.digest
    reordered = GenericSpace(decisions_from_mutables(dict(reversed(list(toy.simplify().items())))), name="generic-toy")
    assert reordered.signature().digest != a.digest  # node order is part of the encoding
    path = tmp_path / "p.pt"
    DiffusionPrior(generic_space(toy), net_config=TINY, device="cpu").save(path)
    with pytest.raises(SpaceMismatchError, match="different choices|node types"):
        DiffusionPrior.load(path, changed)
    assert DiffusionPrior.load(path, generic_space(Toy())).space.num_nodes == 12


def test_unsupported_numerical_and_discretize():
    model = Toy(uniform=True)
    with pytest.raises(UnsupportedSpaceError, match="'dropout' is Numerical.*discretize"):
        generic_space(model)
    space = generic_space(model, discretize=4)
    d = next(d for d in space.decisions if d.label == "dropout")
    assert d.kind == "numerical" and d.values == (0.0625, 0.1875, 0.3125, 0.4375)
    assert generic_space(model, discretize={"dropout": 4}).signature() == space.signature()
    assert generic_space(model, discretize=3).signature().digest != space.signature().digest
    for types in space.random_types(20, np.random.default_rng(0)):
        sample = space.types_to_sample(types)
        assert model.contains(sample) and np.array_equal(space.sample_to_types(sample), types)
    sample = {}
    model.random(memo=sample, random_state=RandomState(3))
    types = space.sample_to_types(sample)  # a continuous value goes to its quantile bin
    assert space.types_to_sample(types)["dropout"] == d.values[min(3, int(sample["dropout"] / 0.125))]
    with pytest.raises(ValueError, match="not numerical decisions.*\\['dropout'\\]"):
        generic_space(model, discretize={"drop": 4})
    with pytest.raises(ValueError, match=r"values \[nan\] are not in the domain"):  # NNI's contains() takes NaN
        generic_space(model, discretize={"dropout": [0.1, float("nan")]})


def test_fixed_n_chosen_as_binary_nodes_with_repair(toy):
    space = generic_space(toy, max_combinations=3)  # 'pair' (6 subsets) -> 4 binary nodes
    pair = next(d for d in space.decisions if d.label == "pair")
    assert pair.kind == "binary-k" and len(pair.nodes) == 4
    rs = RandomState(1)
    for _ in range(20):
        sample = {}
        toy.random(memo=sample, random_state=rs)
        assert space.types_to_sample(space.sample_to_types(sample)) == sample
    types = space.random_types(1, np.random.default_rng(0))[0]
    assert space.is_legal(types)[0]
    three_on = types.copy()
    three_on[list(pair.nodes[:3])] = np.array(pair.offsets[:3]) + 1
    three_on[pair.nodes[3]] = pair.offsets[3]
    assert not space.is_legal(three_on)[0]
    assert space.types_to_sample(three_on)["pair"] == [0, 1]  # no scores: first k "on"
    assert space.key(three_on) == tuple(space.repair(three_on))
    x = np.zeros((space.num_nodes, space.num_types))
    for i, (node, off) in enumerate(zip(pair.nodes, pair.offsets)):
        x[node, off + 1] = [0.1, 0.9, 0.5, -1.0][i]  # "on" margins: candidates 1 and 2 win
    repaired = space.repair(three_on[None], torch.as_tensor(x)[None])[0]
    assert space.types_to_sample(repaired)["pair"] == [1, 2] and space.is_legal(repaired)[0]


def test_constraints_are_checked_not_encoded():
    model = Toy(constraint=True)
    space = generic_space(model)
    assert space.has_constraints and "depth_le_2" not in space.labels
    types = space.random_types(60, np.random.default_rng(0))
    fast = space.valid_mask(types)
    slow = space.valid_mask(types, model_space=model)
    assert np.array_equal(fast, slow) and 0 < fast.sum() < len(fast)
    assert all(space.types_to_sample(t)["depth"] <= 2 for t in types[fast])
    for t in space.random_valid_types(30, np.random.default_rng(1)):
        assert model.contains(space.types_to_sample(t))
    model.freeze(space.types_to_sample(types[fast][0]))
    data = prior_cache._training_data(space, model, 50, np.random.default_rng(2))
    assert len(data) == 50 and all(model.contains(space.types_to_sample(t)) for t in data)


def test_nasbench201_through_generic_space():
    from nni.nas.hub.pytorch import NasBench201

    model = NasBench201()
    space = generic_space(model)
    assert space.num_nodes == 6 and space.num_types == 30 and space.name == "generic-nasbench201"
    nb201 = NasBench201Space()
    every = space.enumerate_types()
    assert len(every) == 15625
    for types in every[::97]:
        sample = space.types_to_sample(types)
        assert np.array_equal(space.sample_to_types(sample), types)
        assert nb201.types_to_sample(nb201.sample_to_types(sample)) == sample
    rs = RandomState(0)
    for _ in range(5):
        sample = {}
        model.random(memo=sample, random_state=rs)
        assert space.types_to_sample(space.sample_to_types(sample)) == sample


def test_nasbench101_custom_constraint_and_any_subset_inputs():
    from nni.nas.hub.pytorch import NasBench101

    model = NasBench101()  # ~4 s to build on a busy 2-core machine
    space = generic_space(model)
    assert space.has_constraints and space.name == "generic-nasbench101"
    assert {d.kind for d in space.decisions} == {"categorical", "binary"}
    types = space.random_types(100, np.random.default_rng(0))
    fast = space.valid_mask(types)
    assert np.array_equal(fast, space.valid_mask(types, model_space=model)) and 0 < fast.sum() < 100
    rs, samples = RandomState(0), []
    while len(samples) < 3:
        sample = {}
        try:
            model.random(memo=sample, random_state=rs)  # raises on a constraint violation, no retry
        except SampleValidationError:
            continue
        samples.append(sample)
    for sample in samples:
        # the constraint writes the pruned cell into the sample as 'cell/final' (nasbench101.py L482-489):
        # not a decision, ignored when encoding and not produced when decoding
        assert "cell/final" in sample and "cell/final" not in space.labels
        assert space.types_to_sample(space.sample_to_types(sample)) == {k: sample[k] for k in space.labels}
    model.freeze(space.types_to_sample(types[fast][0]))


HUB = ["MobileNetV3Space", "ProxylessNAS", "ShuffleNetSpace", "AutoformerSpace"]


@pytest.mark.parametrize("name", HUB)
def test_hub_spaces_encode_and_round_trip(name):
    import nni.nas.hub.pytorch as hub

    model = getattr(hub, name)()
    space = generic_space(model)  # (its cost is a benchmark matter, not a test's)
    assert space.num_nodes == len(model.simplify())  # all Categorical: one node each
    assert space.num_types == sum(len(m.values) for m in model.simplify().values())
    rs = RandomState(0)
    for _ in range(5):
        sample = {}
        model.random(memo=sample, random_state=rs)
        types = space.sample_to_types(sample)
        assert space.types_to_sample(types) == sample and space.key(types) == tuple(types)
    for types in space.random_types(5, np.random.default_rng(0)):
        assert model.contains(space.types_to_sample(types))


def test_a_shipped_network_of_a_product_space_is_used_only_by_name(caplog):
    """NNI's default MobileNetV3Space is a product of independent choices: the exact prior by
    default, the network shipped for it (trained on the same uniform draws) with kind='learned'."""
    import nni.nas.hub.pytorch as hub
    from nni_diffusionnag.prior.exact import ProductPrior
    from nni_diffusionnag.prior.model import shipped_prior_path

    space = generic_space(hub.MobileNetV3Space())
    assert prior_cache.is_product_space(space) and shipped_prior_path(space.name).is_file()
    caplog.set_level(logging.INFO, logger="nni_diffusionnag.prior.cache")
    assert isinstance(prior_cache.prior_for_space(space, device="cpu"), ProductPrior)
    assert "not the network shipped for it" in caplog.text
    assert isinstance(prior_cache.prior_for_space(space, device="cpu", kind="learned"), DiffusionPrior)


def test_prior_for_space_trains_within_budget_then_reuses_cache(toy, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(prior_cache.CACHE_ENV, str(tmp_path / "env-cache"))
    space = generic_space(toy)
    caplog.set_level(logging.INFO, logger="nni_diffusionnag.prior.cache")
    prior = prior_cache.prior_for_space(space, toy, kind="learned", time_budget_s=3.0, steps=100_000, device="cpu",
                                        net_config=TINY, num_samples=512, progress=False)
    path = prior_cache.cache_path(space)
    assert path.parent == tmp_path / "env-cache" and path.name == f"generic-toy-{space.signature().digest}.pt"
    assert path.is_file() and not list(path.parent.glob("*.partial.pt"))
    assert prior.meta["budget_hit"] and 10 <= prior.meta["train_steps"] < 100_000
    types = prior.generate(8, seed=0).types
    assert space.is_legal(types).all()

    def no_training(*args, **kwargs):
        raise AssertionError("the cached prior should have been reused")

    monkeypatch.setattr(prior_cache, "train_prior", no_training)
    caplog.clear()
    again = prior_cache.prior_for_space(space, toy, kind="learned", time_budget_s=3.0, device="cpu", progress=False)
    assert "loaded cached prior" in caplog.text and str(path) in caplog.text
    assert again.meta["train_steps"] == prior.meta["train_steps"]
    for a, b in zip(prior.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


def test_prior_for_space_finishes_small_runs_in_explicit_cache_dir(tmp_path):
    model = Toy(widths=(8, 16))
    space = generic_space(model)
    prior = prior_cache.prior_for_space(space, kind="learned", cache_dir=tmp_path, time_budget_s=30, device="cpu", net_config=TINY,
                                        train_config=TrainConfig(steps=25, batch_size=32, warmup=2),
                                        num_samples=256, progress=False)
    assert not prior.meta["budget_hit"] and prior.meta["train_steps"] == 25
    assert prior_cache.cache_path(space, tmp_path).is_file()


def test_product_space_detection_and_the_exact_prior(caplog, monkeypatch, tmp_path):
    """Independent choices get the exact prior (nothing trained); a constraint makes a space not a product."""
    from nni_diffusionnag.prior.exact import ProductPrior
    from nni_diffusionnag.space.legacy import space_for_search_space

    monkeypatch.setenv(prior_cache.CACHE_ENV, str(tmp_path))
    free = generic_space(Toy(), max_combinations=256)  # InputChoice(4, 2) is one node over its 6 subsets
    assert prior_cache.is_product_space(free)
    assert not prior_cache.is_product_space(generic_space(Toy(constraint=True)))
    assert not prior_cache.is_product_space(generic_space(Toy(), max_combinations=3))  # 'pair' split: k-of-n rule
    assert prior_cache.is_product_space(NasBench201Space())  # a hand-made encoding that declares it
    assert not prior_cache.is_product_space(MobileNetV3OFASpace())  # OFA's skipped layers tie nodes
    caplog.set_level(logging.INFO, logger="nni_diffusionnag.prior.cache")
    prior = prior_cache.prior_for_space(free, device="cpu")
    assert isinstance(prior, ProductPrior) and "exact prior of independent choices" in caplog.text
    batch = prior.generate(200, seed=0)
    assert batch.valid.all() and free.is_legal(batch.types).all()
    hpo = space_for_search_space({"lr": {"_type": "loguniform", "_value": [1e-4, 1]},
                                  "act": {"_type": "choice", "_value": ["relu", "tanh"]}})
    assert isinstance(prior_cache.prior_for_space(hpo, device="cpu"), ProductPrior)
    assert not isinstance(prior_cache.prior_for_space(free, device="cpu", kind="learned", time_budget_s=2,
                                                      net_config=TINY, num_samples=64, progress=False),
                          ProductPrior)


def test_values_without_equality_match_their_deep_copies():
    """NNI's simplified format deep-copies a sample; a choice of functools.partial (no value
    equality) must still decode, as NNI itself builds it."""
    import copy
    import functools

    import nni
    import torch
    from nni.nas.nn.pytorch import ModelSpace
    from nni.nas.space import SimplifiedModelSpace

    from nni_diffusionnag.integration.mutables import space_for_model

    norms = [functools.partial(torch.nn.BatchNorm1d, eps=1e-5), functools.partial(torch.nn.BatchNorm1d, eps=1e-3)]

    class Net(ModelSpace):
        def __init__(self):
            super().__init__()
            self.norm = nni.choice("norm", norms)
            self.add_mutable(self.norm)

        def forward(self, x):
            return x

    wrapped = SimplifiedModelSpace.from_model(Net())
    space = space_for_model(wrapped)
    for i in range(2):
        sample = copy.deepcopy(space.types_to_sample(np.array([i])))
        assert sample["norm"] is not norms[i] and space.sample_to_types(sample).tolist() == [i]
    assert space.sample_to_types({"norm": copy.deepcopy(norms[1])}).tolist() == [1]
