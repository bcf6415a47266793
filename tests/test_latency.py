"""The latency profiler (bounded, validated) and the additive latency model (fit, relaxation, I/O)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from nni_diffusionnag.properties.latency import (AdditiveLatencyModel, device_description, fit_additive_latency,
                                                 latency_constraint, profile_latency)
from nni_diffusionnag.search.generator import Constraint
from nni_diffusionnag.space import NasBench201Space

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")

SPACE = NasBench201Space()


def _synthetic(m: int = 300, noise: float = 0.0, seed: int = 0):
    """Exactly additive latencies on NB201 graphs (+ Gaussian noise), and the true table."""
    rng = np.random.default_rng(seed)
    coef = np.where(SPACE.legal, rng.uniform(0.5, 3.0, SPACE.legal.shape), 0.0)
    coef[0] = coef[-1] = 0.0  # the fixed input/output nodes: folded into the constant
    types = SPACE.random_types(m, rng)
    y = 2.0 + coef[np.arange(SPACE.num_nodes)[None, :], types].sum(1) + noise * rng.standard_normal(m)
    return types, y, coef


def _differences(coef: np.ndarray) -> np.ndarray:
    # Per node only differences between types are identified (a shift moves into the constant).
    ops = coef[1:-1, 2:]
    return ops - ops[:, :1]


def test_fit_recovers_known_coefficients():
    types, y, coef = _synthetic(noise=0.0)
    model = fit_additive_latency(types, y, space=SPACE, ridge=1e-6)
    assert model.report["r2"] > 0.999999 and model.report["mae_ms"] < 1e-3
    assert np.allclose(_differences(model.coef), _differences(coef), atol=1e-3)
    assert np.allclose(model.predict(types), y, atol=1e-3)
    assert model.report["n_networks"] == 300 and model.report["n_test"] == 60
    # Types never used (illegal at a node) get coefficient 0.
    assert np.all(model.coef[~SPACE.legal] == 0.0)


def test_fit_with_small_noise_and_default_ridge():
    types, y, coef = _synthetic(noise=0.05, seed=1)
    model = fit_additive_latency(types, y, space=SPACE)
    assert model.report["r2"] > 0.99
    assert np.abs(_differences(model.coef) - _differences(coef)).max() < 0.1


def test_fit_without_space_zeroes_unused_types():
    types = np.array([[0, 1], [1, 0], [0, 0], [1, 1], [0, 1], [1, 0]])
    y = 1.0 + types[:, 0] * 2.0 + types[:, 1] * 0.5
    model = fit_additive_latency(types, y, num_types=4, holdout=0.0, ridge=1e-9)
    assert model.coef.shape == (2, 4) and np.all(model.coef[:, 2:] == 0.0)
    assert np.allclose(model.predict(types), y, atol=1e-6)
    assert "r2" not in model.report and model.report["r2_train"] > 0.999999


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads"),
    ({"repeats": 0}, "repeats"),
    ({"rounds": 0}, "rounds"),
    ({"warmup": -1}, "warmup"),
    ({"time_budget_s": 0}, "time_budget_s"),
    ({"input_shape": (1, 0, 4)}, "input_shape"),
    ({"input_shape": None}, "input_shape"),
    ({"device": "nodevice"}, "device"),
    ({"build": "not callable"}, "build"),
])
def test_profile_argument_validation(kwargs, match):
    args = {"build": lambda s: torch.nn.Identity(), "samples": [0], "input_shape": (1, 4)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        profile_latency(args.pop("build"), args.pop("samples"), args.pop("input_shape"), progress=False, **args)


@pytest.mark.parametrize("kwargs, match", [
    ({"types": np.zeros(3, dtype=int)}, "types"),
    ({"types": np.zeros((3, 2))}, "types"),
    ({"latency_ms": np.ones(2)}, "latency_ms"),
    ({"latency_ms": np.array([1.0, np.nan, 1.0])}, "finite"),
    ({"holdout": 1.0}, "holdout"),
    ({"ridge": -1.0}, "ridge"),
])
def test_fit_argument_validation(kwargs, match):
    args = {"types": np.zeros((3, 2), dtype=int), "latency_ms": np.ones(3), "holdout": 0.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_additive_latency(args.pop("types"), args.pop("latency_ms"), **args)


def test_time_budget_stops_profiling_early(caplog):
    built = []

    def build(sample):
        built.append(sample)
        time.sleep(0.02)  # a lower bound on the time per network, so the budget must run out
        return torch.nn.Identity()

    with caplog.at_level("WARNING"):
        ms = profile_latency(build, list(range(50)), (1, 4), warmup=0, repeats=1, time_budget_s=0.05,
                             progress=False)
    assert len(ms) == len(built) < 50
    assert "budget" in caplog.text and f"profiled {len(ms)} of 50" in caplog.text


def test_rounds_take_the_median_and_respect_the_budget():
    calls = []

    class Counted(torch.nn.Module):
        def forward(self, x):
            calls.append(1)
            return x

    ms = profile_latency(lambda s: Counted(), [0, 1], (1, 2), warmup=0, repeats=2, rounds=3, progress=False)
    assert ms.shape == (2,) and len(calls) == 2 * 2 * 3
    # With a reference, each timed pass alternates with one of it (warmed up once first).
    calls.clear()
    ms = profile_latency(lambda s: torch.nn.Identity(), [0, 1], (1, 2), warmup=0, repeats=2, rounds=3,
                         reference=Counted(), progress=False)
    assert ms.shape == (2,) and np.all(np.isfinite(ms)) and len(calls) == 1 + 2 * 2 * 3
    with pytest.raises(ValueError, match="reference"):
        profile_latency(lambda s: torch.nn.Identity(), [0], (1, 2), reference="net", progress=False)


def test_profile_restores_thread_count():
    before = torch.get_num_threads()
    profile_latency(lambda s: torch.nn.Identity(), [0], (1, 2), threads=1, warmup=0, repeats=1, progress=False)
    assert torch.get_num_threads() == before


def test_real_profile_of_small_nb201_cells():
    import nni.nas.hub.pytorch as hub  # a hard dependency: never skipped

    # A small macro keeps this fast; the latencies are of real frozen NNI networks.
    model_space = hub.NasBench201(stem_out_channels=8, num_modules_per_stack=1, num_labels=10)
    samples = [SPACE.types_to_sample(t) for t in SPACE.random_types(3, np.random.default_rng(0))]
    ms = profile_latency(model_space.freeze, samples, (1, 3, 16, 16), warmup=1, repeats=3, progress=False)
    assert ms.shape == (3,) and np.all(np.isfinite(ms)) and np.all(ms > 0)


def test_constraint_exact_and_relaxed_agree_on_one_hots():
    types, y, _ = _synthetic(m=100, noise=0.01)
    model = fit_additive_latency(types, y, space=SPACE)
    budget = float(np.median(y))
    c = latency_constraint(model, budget, temperature=1e-3)  # near zero: the softmax is the one-hot
    assert isinstance(c, Constraint) and c.budget == budget and c.noise_aware
    onehot = torch.nn.functional.one_hot(torch.as_tensor(types[:10]), SPACE.num_types).double()
    x = 2.0 * onehot - 1.0  # centred one-hots, as the diffusion features are
    relaxed = c.relaxed(x, torch.full((10,), 1e-4, dtype=torch.float64)).numpy()
    assert np.allclose(relaxed, c.exact(types[:10]), atol=1e-6)
    assert np.array_equal(c.satisfied(types), model.predict(types) <= budget)
    # The relaxation is differentiable: the gradient points towards faster types.
    x = x.clone().requires_grad_(True)
    c.relaxed(x, torch.full((10,), 0.5, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="budget_ms"):
        latency_constraint(model, 0.0)


def test_save_load_round_trip_and_cache_key(tmp_path):
    types, y, _ = _synthetic(m=50, noise=0.01)
    model = fit_additive_latency(types, y, space=SPACE, device="cpu:test:threads=1", input_shape=(1, 3, 32, 32))
    model.save(tmp_path / "lat.json")
    back = AdditiveLatencyModel.load(tmp_path / "lat.json", space=SPACE)
    assert back.const == model.const and np.array_equal(back.coef, model.coef)
    assert np.array_equal(back.legal, model.legal) and back.report == model.report
    assert back.cache_key == model.cache_key and back.input_shape == (1, 3, 32, 32)
    other = fit_additive_latency(types, y, space=SPACE, device="cpu:test:threads=2", input_shape=(1, 3, 32, 32))
    assert other.cache_key != model.cache_key
    # The signature is part of the key, and a model for another space is refused on load.
    from nni_diffusionnag.space import MobileNetV3OFASpace
    from nni_diffusionnag.exceptions import SpaceMismatchError

    with pytest.raises(SpaceMismatchError):
        AdditiveLatencyModel.load(tmp_path / "lat.json", space=MobileNetV3OFASpace())
    with pytest.raises(FileNotFoundError):
        AdditiveLatencyModel.load(tmp_path / "missing.json")


def test_device_description_names_cpu_and_threads():
    d1, d4 = device_description("cpu", 1), device_description("cpu", 4)
    assert d1.startswith("cpu:") and d1.endswith("threads=1") and d1 != d4


# --- latency by name: the configuration's latency_model, 'latency<=Bms' and the 'latency' objective ----
def _saved_model(tmp_path, noise: float = 0.05):
    types, y, _ = _synthetic(m=300, noise=noise, seed=3)
    model = fit_additive_latency(types, y, space=SPACE)
    model.save(tmp_path / "lat.json")
    return model, tmp_path / "lat.json", y


def test_latency_by_name_needs_a_model_and_a_valid_file(tmp_path):
    from nni_diffusionnag.search.config import SearchConfig

    for settings in ({"constraints": ["latency<=8ms"]}, {"objectives": ["latency"]},
                     {"constraints": [{"cost": "latency", "budget": 8}]}):
        with pytest.raises(ValueError, match="needs latency_model=PATH"):
            SearchConfig.from_kwargs(**settings)
    with pytest.raises(ValueError, match="latency_model='.*missing.json' is not a file"):
        SearchConfig.from_kwargs(latency_model=str(tmp_path / "missing.json"))
    (tmp_path / "other.json").write_text('{"format": 1, "const": 0}')
    with pytest.raises(ValueError, match="not a saved AdditiveLatencyModel"):
        SearchConfig.from_kwargs(latency_model=str(tmp_path / "other.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="is not a latency model's JSON"):
        SearchConfig.from_kwargs(latency_model=str(tmp_path / "broken.json"))
    _, path, _ = _saved_model(tmp_path)
    config = SearchConfig.from_kwargs(constraints=["latency<=9ms"], latency_model=str(path))
    assert isinstance(config.latency(), AdditiveLatencyModel) and "latency_model=" in config.describe()


def test_named_latency_budget_resolves_with_a_confidence_margin(tmp_path):
    from statistics import NormalDist

    from nni_diffusionnag.exceptions import SpaceMismatchError
    from nni_diffusionnag.properties.budgets import parse_budget
    from nni_diffusionnag.space import MobileNetV3OFASpace

    model, _, y = _saved_model(tmp_path)
    budget = float(np.median(y))
    c = parse_budget(f"latency<={budget}ms", latency_model=model)(SPACE, None)
    # admitted only if prediction + z_0.95 * held-out RMSE is within the budget
    assert c.budget == pytest.approx(budget - NormalDist().inv_cdf(0.95) * model.report["rmse_ms"])
    assert "95% sure" in c.name and c.budget < budget
    assert parse_budget({"cost": "latency", "budget": budget}, latency_model=model)(SPACE, None).budget == c.budget
    assert latency_constraint(model, budget).budget == budget  # the Python constraint trusts the model by default
    with pytest.raises(SpaceMismatchError, match="latency model"):
        parse_budget("latency<=8ms", latency_model=model)(MobileNetV3OFASpace(), None)
    with pytest.raises(ValueError, match="milliseconds"):
        parse_budget("latency<=8M", latency_model=model)
    with pytest.raises(ValueError, match="needs latency_model=PATH"):
        parse_budget("latency<=8ms")(SPACE, None)
    with pytest.raises(ValueError, match="kinds: params, flops, latency"):
        parse_budget("latency>8ms")


def test_latency_budget_guides_the_search_and_an_impossible_one_is_refused(tmp_path):
    from helpers import fast_strategy_settings

    from nni_diffusionnag.search.config import SearchConfig
    from nni_diffusionnag.search.core import SearchCore

    model, path, y = _saved_model(tmp_path)
    budget = float(np.quantile(y, 0.3))
    config = SearchConfig.from_kwargs(seed=0, warmup=4, batch_size=4, constraints=[f"latency<={budget}ms"],
                                      latency_model=str(path), **fast_strategy_settings())
    core = SearchCore(SPACE, config)
    rank = {v: i for i, v in enumerate(SPACE.node_types)}
    proposed = []
    for _ in range(3):
        for sample in core.propose(4):
            t = np.array(core.key_of(sample))
            proposed.append(t)
            core.observe(sample, float(sum(t == rank["nor_conv_3x3"])))  # wants the slow operation
    pred = model.predict(np.stack(proposed))
    assert len(proposed) == 12 and np.all(pred <= core.generator.constraints[0].budget) and np.all(pred <= budget)
    fastest = model.const + np.where(SPACE.legal, model.coef, np.inf).min(1).sum()
    with pytest.raises(ValueError, match=r"no architecture meets the constraint latency<="):
        SearchCore(SPACE, config.replace(constraints=[f"latency<={0.9 * fastest}ms"]))


def test_latency_as_an_objective_is_the_models_prediction(tmp_path):
    from helpers import fast_strategy_settings

    from nni_diffusionnag.search.config import SearchConfig
    from nni_diffusionnag.search.core import SearchCore

    model, path, _ = _saved_model(tmp_path)
    config = SearchConfig.from_kwargs(seed=0, warmup=4, batch_size=4, objectives=["latency"], latency_model=str(path),
                                      **fast_strategy_settings())
    core = SearchCore(SPACE, config)
    for _ in range(2):
        for sample in core.propose(4):
            core.observe(sample, float(np.random.default_rng(len(core.history())).uniform()))
    front = core.pareto_front()
    assert front and all(f["objectives"]["latency"] == pytest.approx(
        float(model.predict(np.array(core.key_of(f["sample"])))[0])) for f in front)
