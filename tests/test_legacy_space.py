"""Legacy search_space.json -> graph space: every type NNI's tuners accept, values inside the space."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nni_diffusionnag.exceptions import UnsupportedSpaceError
from nni_diffusionnag.space.legacy import DEFAULT_BINS, space_for_search_space

SPACE = {
    "lr": {"_type": "loguniform", "_value": [1e-4, 0.1]},
    "momentum": {"_type": "uniform", "_value": [0, 0.99]},
    "width": {"_type": "quniform", "_value": [16, 256, 16]},
    "depth": {"_type": "randint", "_value": [1, 4]},
    "wd": {"_type": "qloguniform", "_value": [1e-6, 1e-2, 1e-6]},
    "init": {"_type": "normal", "_value": [0, 1]},
    "scale": {"_type": "qnormal", "_value": [10, 3, 1]},
    "temp": {"_type": "lognormal", "_value": [0, 0.5]},
    "act": {"_type": "choice", "_value": ["relu", "tanh", 3, True]},
    "big": {"_type": "randint", "_value": [0, 1000]},
}


def _inside(label: str, value) -> bool:
    spec = SPACE[label]
    kind, v = spec["_type"], spec["_value"]
    if kind == "choice":
        return any(value == c and type(value) is type(c) for c in v)
    if kind == "randint":
        return isinstance(value, int) and v[0] <= value < v[1]
    if kind in ("uniform", "loguniform", "quniform", "qloguniform"):
        ok = v[0] <= value <= v[1]
        if kind.startswith("q"):
            ok &= math.isclose(value / v[2], round(value / v[2]), abs_tol=1e-6)
        return ok and isinstance(value, (int, float))
    if kind == "qnormal":
        return float(value).is_integer()
    if kind == "lognormal":
        return value > 0
    return math.isfinite(value)


def test_every_type_gives_values_inside_the_declared_space():
    space = space_for_search_space(SPACE)
    rng = np.random.default_rng(0)
    for types in space.random_types(300, rng):
        params = space.types_to_sample(types)
        assert list(params) == list(SPACE)
        for label, value in params.items():
            assert _inside(label, value), (label, value)
        assert np.array_equal(space.sample_to_types(json.loads(json.dumps(params))), types)  # JSON round trip
    rows = {r["label"]: r for r in space.describe()}
    assert rows["depth"]["types"] == 3 and rows["width"]["types"] == 16  # small grids kept whole
    assert rows["lr"]["types"] == DEFAULT_BINS and rows["big"]["types"] == DEFAULT_BINS  # binned
    assert isinstance(space.types_to_sample(space.random_types(1, rng)[0])["width"], int)  # integral grid: ints


def test_discretize_and_off_grid_values():
    space = space_for_search_space(SPACE, discretize={"lr": 4})
    lr = next(d for d in space.decisions if d.label == "lr")
    assert len(lr.values) == 4 and all(1e-4 < v < 0.1 for v in lr.values)
    params = space.types_to_sample(space.random_types(1, np.random.default_rng(1))[0])
    params["lr"] = 0.0999  # e.g. an imported result from another tuner: nearest bin by quantile
    assert space.types_to_sample(space.sample_to_types(params))["lr"] == max(lr.values)
    with pytest.raises(ValueError, match="not parameters of the search space"):
        space_for_search_space(SPACE, discretize={"lrr": 4})


def test_discretize_lists_the_values_of_a_parameter():
    space = space_for_search_space(SPACE, discretize={"lr": [1e-3, 1e-2, 1e-3], "width": [32, 64], "depth": [1, 3],
                                                      "init": [-1, 2]})
    values = {d.label: d.values for d in space.decisions}
    assert values["lr"] == (1e-3, 1e-2) and values["width"] == (32, 64) and values["depth"] == (1, 3)
    assert values["init"] == (-1.0, 2.0) and type(values["width"][0]) is int
    for given, match in [({"lr": [0.5]}, "outside its range"), ({"width": [20]}, "off its q grid"),
                         ({"depth": [4]}, "outside its range"), ({"temp": [-1]}, "outside its range"),
                         ({"lr": ["a"]}, "not all numbers"), ({"act": [1]}, "discretize applies to numbers")]:
        label = next(iter(given))
        with pytest.raises(UnsupportedSpaceError, match=f"'{label}'.*{match}"):
            space_for_search_space(SPACE, discretize=given)


def test_choice_options_as_nni_sees_them(caplog):
    """Dicts without '_name' are plain values, a value listed twice is one option, 1 and True are
    two, and nested options come back with the _name as given (an int stays an int)."""
    space = space_for_search_space({
        "d": {"_type": "choice", "_value": [{"k": 1}, {"k": 2}, 3]},
        "mixed": {"_type": "choice", "_value": [{"_name": "a"}, {"k": 1}]},
        "dup": {"_type": "choice", "_value": ["x", "x", "y"]},
        "b": {"_type": "choice", "_value": [1, True]},
        "n": {"_type": "choice", "_value": [{"_name": 1}, {"_name": 2, "w": {"_type": "choice", "_value": [4, 8]}}]}})
    values = {d.label: d.values for d in space.decisions}
    assert values["d"] == ({"k": 1}, {"k": 2}, 3) and values["mixed"] == ({"_name": "a"}, {"k": 1})
    assert values["dup"] == ("x", "y") and "'dup' lists a value more than once" in caplog.text
    assert "only some options of 'mixed' have '_name'" in caplog.text
    assert len(values["b"]) == 2 and values["n"] == (1, 2)
    assert set(space.labels) == {"d", "mixed", "dup", "b", "n", "n/2/w"}
    samples = [space.types_to_sample(t) for t in space.random_types(200, np.random.default_rng(0))]
    assert {json.dumps(s["b"]) for s in samples} == {"1", "true"}
    assert {json.dumps(s["n"]["_name"]) for s in samples} == {"1", "2"}
    for s in samples:  # JSON text: in Python {'b': True} == {'b': 1}
        assert json.dumps(space.types_to_sample(space.sample_to_types(s))) == json.dumps(s)


def test_nested_choice_sends_only_the_chosen_option():
    nested = {"layer": {"_type": "choice", "_value": [
        {"_name": "conv", "ks": {"_type": "choice", "_value": [3, 5]}, "ch": {"_type": "randint", "_value": [1, 3]}},
        {"_name": "pool"}]},
        "lr": {"_type": "uniform", "_value": [0, 1]}}
    space = space_for_search_space(nested)
    assert set(space.labels) == {"layer", "layer/conv/ks", "layer/conv/ch", "lr"}
    seen = set()
    for types in space.random_types(200, np.random.default_rng(0)):
        params = space.types_to_sample(types)
        layer = params["layer"]
        assert layer["_name"] in ("conv", "pool")
        assert set(layer) == ({"_name", "ks", "ch"} if layer["_name"] == "conv" else {"_name"})
        assert space.types_to_sample(space.sample_to_types(params)) == params
        seen.add(space.key(types))
    pools = {k for k in seen if space.types_to_sample(k)["layer"]["_name"] == "pool"}
    assert len(pools) == len({space.types_to_sample(k)["lr"] for k in pools})  # unchosen options do not split keys


@pytest.mark.parametrize("spec, match", [
    ({"x": {"_type": "choice", "_value": [{"_name": "a"}, {"_name": "a"}]}}, "_name read the same"),
    ({"x": {"_type": "choice", "_value": [{"_name": 1}, {"_name": "1"}]}}, "_name read the same"),
    ({"x": {"_type": "uniform", "_value": [1]}}, "needs exactly 2 numbers"),
    ({"x": {"_type": "uniform", "_value": [0, 1, 5]}}, "needs exactly 2 numbers"),  # as NNI's own validation
    ({"x": {"_type": "qnormal", "_value": [0, 1]}}, "needs exactly 3 numbers"),
    ({"x": {"_type": "quniform", "_value": [0, 1, 0]}}, "q > 0"),
    ({"x": {"_type": "uniform", "_value": [0, float("inf")]}}, "non-finite"),
    ({"x": {"_type": "uniform", "_value": ["a", "b"]}}, "non-numeric"),
])
def test_bad_parameters_name_the_label(spec, match):
    with pytest.raises(UnsupportedSpaceError, match=f"'x'.*{match}"):
        space_for_search_space(spec)


def test_model_space_simplify_json_round_trips_through_nni():
    """The search_space.json a user writes from their ModelSpace's simplify() works the same way."""
    import nni
    import torch
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableDropout, MutableLinear, model_context

    class Net(ModelSpace):
        def __init__(self):
            super().__init__()
            width = nni.choice("width", [8, 16])
            self.fc = MutableLinear(4, width)
            self.act = LayerChoice([torch.nn.ReLU(), torch.nn.Tanh()], label="act")
            self.drop = MutableDropout(nni.choice("dropout", [0.0, 0.25]))  # NNI writes no legacy dict for nni.uniform
            self.out = MutableLinear(width, 2)

        def forward(self, x):
            return self.out(self.drop(self.act(self.fc(x))))

    legacy = json.loads(json.dumps({k: v.as_legacy_dict() for k, v in Net().simplify().items()}))
    space = space_for_search_space(legacy)
    for types in space.random_types(10, np.random.default_rng(0)):
        params = space.types_to_sample(types)
        assert Net().contains(params), params
        with model_context(params):
            model = Net()
        assert model(torch.zeros(1, 4)).shape == (1, 2)
