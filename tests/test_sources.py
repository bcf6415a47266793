"""Several source tasks weighed by the target's results (transfer/sources.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_diffusionnag.nn.surrogate import SurrogateConfig
from nni_diffusionnag.prior.exact import ProductPrior
from nni_diffusionnag.search.config import SearchConfig
from nni_diffusionnag.search.core import SearchCore
from nni_diffusionnag.space import NasBench201Space
from nni_diffusionnag.transfer.meta import load_meta
from nni_diffusionnag.transfer.sources import MIN_RESULTS, SourceTasks, effective_weights, source_weights, train_sources

TINY = SurrogateConfig(hidden=16, num_layers=2, ensemble=2, steps=300, batch_size=128, lr=3e-3)


def _convs(types: np.ndarray) -> np.ndarray:
    return (np.asarray(types)[:, 1:-1] == 4).sum(1).astype(float)


def _pools(types: np.ndarray) -> np.ndarray:
    return (np.asarray(types)[:, 1:-1] == 2).sum(1).astype(float)


def test_weights_follow_how_each_source_ranks_the_target():
    rng = np.random.default_rng(0)
    y = rng.normal(size=12)
    good, reversed_, noise = y + 0.3 * rng.normal(size=12), -y, rng.normal(size=12)
    w, c = source_weights(np.stack([good, reversed_, noise]), y)
    assert w[0] > 0.5 and w[1] == 0.0 and w.sum() == pytest.approx(1.0)
    assert 0.5 < c <= 1.0
    # a target unlike every source: no weight anywhere, the loop's own surrogate alone
    w, c = source_weights(np.stack([-y, -y + 0.1 * rng.normal(size=12)]), y)
    assert w.tolist() == [0.0, 0.0] and c == 0.0
    # too few results to read ranks from: the sources' consensus
    w, c = source_weights(np.stack([good, reversed_])[:, :MIN_RESULTS - 1], y[:MIN_RESULTS - 1])
    assert w.tolist() == [0.5, 0.5] and c == 1.0
    with pytest.raises(ValueError, match=r"predictions must be \[S, 12\]"):
        source_weights(np.zeros((2, 5)), y)


def test_sources_with_a_tiny_share_are_dropped():
    np.testing.assert_allclose(effective_weights(np.array([0.6, 0.32, 0.08]), 0.5), [0.3, 0.16, 0.0])
    np.testing.assert_allclose(effective_weights(np.array([0.2] * 5), 1.0), [0.2] * 5)  # the first consensus
    assert not effective_weights(np.zeros(3), 0.0).any()


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    space = NasBench201Space()
    types = space.random_types(600, np.random.default_rng(1))
    path = tmp_path_factory.mktemp("sources") / "sources.pt"
    train_sources(space, {"convs": (types, _convs(types)), "pools": (types, _pools(types))}, TINY, output=path,
                  progress=False)
    return space, path


def test_sources_roundtrip_and_combine(two_sources):
    space, path = two_sources
    sources = load_meta(path, space)
    assert isinstance(sources, SourceTasks) and sources.tasks == ["convs", "pools"]
    x = space.random_types(200, np.random.default_rng(2))
    each = sources.predict_each(x)
    assert each.shape == (2, 200)
    # each source learned its own task, not their average
    assert np.corrcoef(each[0], _convs(x))[0, 1] > 0.8 and np.corrcoef(each[1], _pools(x))[0, 1] > 0.8
    combined = sources.combine(np.array([0.7, 0.0]))
    assert combined.stack.num_members == TINY.ensemble  # a source without weight is not evaluated
    feats = torch.nn.functional.one_hot(torch.as_tensor(x), space.num_types).float() * 2 - 1
    level = sources.sde.noise_level(torch.full((len(x),), 1e-5))
    mean, std = combined(feats, level)
    np.testing.assert_allclose(mean.detach().numpy(), 0.7 * each[0], rtol=1e-4, atol=1e-4)
    assert float(std.abs().max()) == 0.0
    # both sources in one batched call: the weighted sum of their own predictions
    mean, _ = sources.combine(np.array([0.3, 0.5]))(feats, level)
    np.testing.assert_allclose(mean.detach().numpy(), 0.3 * each[0] + 0.5 * each[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="at least 2 tasks"):
        train_sources(space, {"one": (x, _convs(x))}, TINY, progress=False)


def _search(space, path, truth, n: int) -> SearchCore:
    config = SearchConfig.from_kwargs(seed=0, meta_predictor=str(path), n_candidates=40, device="cpu", batch_size=5,
                                      sampler={"num_steps": 10}, surrogate={"hidden": 8, "steps": 30, "ensemble": 2})
    core = SearchCore(space, config, prior=ProductPrior(space, device="cpu"))
    while len(core._history) < n:
        for sample in core.propose(5):
            core.observe(sample, float(truth(space.sample_to_types(sample)[None])[0]))
    return core


def test_the_search_weighs_the_source_that_ranks_the_target_and_ignores_the_other(two_sources):
    space, path = two_sources
    core = _search(space, path, _convs, 15)
    w = core.source_weights
    assert w is not None and w["convs"] > 0.3 and w["pools"] == 0.0, w
    # the consensus of the first batch already leans to convolutions and the search keeps finding them
    values = [v for _, v in core._history]
    assert np.mean(values) > 2.0, values  # random cells have 1.2 convolutions on average


def test_a_target_unlike_every_source_is_not_misled(two_sources):
    space, path = two_sources
    core = _search(space, path, lambda t: -_convs(t) - _pools(t), 15)
    assert set(core.source_weights.values()) == {0.0}, core.source_weights
    state = core.state_dict()  # resumable: the weights are read again from the history
    assert "surrogate" not in state and len(state["history"]) == 15


def test_cli_train_meta_per_task(tmp_path, nb201_csv):
    import pandas as pd

    from nni_diffusionnag.cli import main

    csv = tmp_path / "small.csv"
    pd.read_csv(nb201_csv).sample(200, random_state=0).to_csv(csv, index=False)
    out = tmp_path / "sources.pt"
    assert main(["train-meta", "--per-task", "--steps", "5", "--task", f"c10={csv}:cifar10_test_acc",
                 "--task", f"c100={csv}:cifar100_test_acc", "--output", str(out)]) == 0
    sources = load_meta(out, NasBench201Space())
    assert isinstance(sources, SourceTasks) and sources.tasks == ["c10", "c100"]
    with pytest.raises(SystemExit, match="at least two"):
        main(["train-meta", "--per-task", "--task", f"c10={csv}:cifar10_test_acc", "--output", str(out)])
