"""Exact params/FLOPs of NAS-Bench-201 cells against NNI's hub model (frozen) and forward hooks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from helpers import hook_flops
from nni_diffusionnag.properties import NB201Macro, cost_table, count, count_sample, expected_cost
from nni_diffusionnag.space.nasbench201 import NNI_OPS, NasBench201Space

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")

SPACE = NasBench201Space()
N_TYPES = len(SPACE.node_types)


def _samples():
    rng = np.random.default_rng(20240)
    out = {f"all_{op}": {lab: op for lab in SPACE.labels} for op in ("none", "conv_3x3", "skip_connect")}
    for i, types in enumerate(SPACE.random_types(6, rng)):
        out[f"random{i}"] = SPACE.types_to_sample(types)
    out["mixed"] = dict(zip(SPACE.labels, NNI_OPS + ("conv_1x1",)))  # every op at least once
    return out


SAMPLES = _samples()


@pytest.fixture(scope="module")
def hub_space():
    import nni.nas.hub.pytorch as hub  # a hard dependency: never skipped
    return hub.NasBench201()


@pytest.mark.parametrize("name", list(SAMPLES))
def test_matches_frozen_hub_model(hub_space, name):
    sample = SAMPLES[name]
    model = hub_space.freeze(sample)
    params = sum(p.numel() for p in model.parameters())
    assert count_sample(sample, "params") == params
    assert count_sample(sample, "flops") == hook_flops(model)


def test_known_nb201_ranges():
    # NB201's published CIFAR-10 ranges: 0.073306 .. 1.531546 MB params, 7.78 .. 220.12 MFLOPs.
    none, conv3 = SAMPLES["all_none"], SAMPLES["all_conv_3x3"]
    assert count_sample(none, "params") == 73306 and count_sample(conv3, "params") == 1531546
    assert count_sample(none, "flops") == 7783050 and count_sample(conv3, "flops") == 220119690
    assert count_sample(conv3, "flops", unit="M") == pytest.approx(220.11969)
    m = NB201Macro.for_dataset("ImageNet16-120")
    assert count_sample(none, "flops", m, "M") == pytest.approx(1.9534)
    assert count_sample(conv3, "flops", m, "M") == pytest.approx(55.03756)


def test_non_default_macro_matches_hub():
    import nni.nas.hub.pytorch as hub  # a hard dependency: never skipped
    macro = NB201Macro(stem_channels=8, num_cells=1, num_labels=7, resolution=16)
    space = hub.NasBench201(stem_out_channels=8, num_modules_per_stack=1, num_labels=7)
    sample = SAMPLES["mixed"]
    model = space.freeze(sample)
    assert count_sample(sample, "params", macro) == sum(p.numel() for p in model.parameters())
    assert count_sample(sample, "flops", macro) == hook_flops(model, resolution=16)


def test_table_shape_and_zeros():
    for kind in ("params", "flops"):
        const, coef = cost_table(kind)
        assert coef.shape == (8, 7) and const > 0
        assert not coef[[0, -1]].any() and not coef[:, [0, 1, 2, 3, 6]].any()
        assert (coef[1:-1] == coef[1]).all() and (coef[1:-1, 4:6] > 0).all()
    with pytest.raises(ValueError):
        cost_table("latency")


def test_count_vectorised_and_validates():
    types = SPACE.enumerate_types()
    vals = count(types, "params")
    assert vals.shape == (len(types),)
    assert vals[0] == count(types[0], "params") == 73306
    assert vals.max() == 1531546 and vals.min() == 73306
    bad = types[0].copy()
    bad[3] = 0  # 'input' type on an op node
    with pytest.raises(ValueError):
        count(bad, "params")


def _centred_onehot(types: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return 2.0 * torch.nn.functional.one_hot(torch.as_tensor(types), N_TYPES).to(dtype) - 1.0


@pytest.mark.parametrize("kind", ["params", "flops"])
def test_expected_cost_equals_count_on_onehots(kind):
    types = SPACE.random_types(64, np.random.default_rng(1))
    types = np.concatenate([types, SPACE.sample_to_types(SAMPLES["all_conv_3x3"])[None]])
    x = _centred_onehot(types)
    exact = count(types, kind)
    got = expected_cost(x, kind).numpy()
    np.testing.assert_array_equal(got, exact)
    got32 = expected_cost(x.float(), kind, unit="M").numpy()
    np.testing.assert_allclose(got32, exact / 1e6, rtol=1e-6)
    # unbatched [8, 7]
    assert float(expected_cost(x[0], kind)) == exact[0]


def test_expected_cost_gradient():
    types = SPACE.random_types(4, np.random.default_rng(2))
    torch.manual_seed(0)
    x = (_centred_onehot(types, torch.float32) + 0.5 * torch.randn(4, 8, N_TYPES)).requires_grad_(True)
    for kind in ("params", "flops"):
        x.grad = None
        expected_cost(x, kind, temperature=1.0, unit="M").sum().backward()
        g = x.grad
        assert torch.isfinite(g).all()
        assert g[:, 1:-1, 4:6].abs().sum() > 0  # conv logits move the cost
        assert not g[:, [0, -1]].any()  # input/output rows have a single legal type
    # raising the conv_3x3 logit everywhere raises the expected params
    lo = expected_cost(x.detach(), "params", temperature=1.0)
    x2 = x.detach().clone()
    x2[:, 1:-1, 5] += 1.0
    assert (expected_cost(x2, "params", temperature=1.0) > lo).all()
