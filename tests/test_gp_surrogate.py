"""The Gaussian-process surrogate over decisions (nni_diffusionnag/nn/gp.py) and which spaces get it."""

import numpy as np
import pytest
import torch

from nni_diffusionnag.diffusion.decoding import to_features
from nni_diffusionnag.diffusion.sde import VESDE
from nni_diffusionnag.nn.config import SurrogateConfig
from nni_diffusionnag.nn.factory import build_surrogate, fit_model, surrogate_kind
from nni_diffusionnag.nn.gp import GPSurrogate, fit_gp
from nni_diffusionnag.nn.surrogate import SurrogateEnsemble
from nni_diffusionnag.search.config import SearchConfig
from nni_diffusionnag.space.legacy import space_for_search_space
from nni_diffusionnag.space.nasbench201 import NasBench201Space

SPACE_JSON = {
    "lr": {"_type": "loguniform", "_value": [1e-4, 1.0]},
    "width": {"_type": "choice", "_value": [64, 16, 32]},  # not sorted: ranks follow the values
    "act": {"_type": "choice", "_value": ["relu", "tanh", "gelu"]},
    "depth": {"_type": "randint", "_value": [1, 4]},
}


def _space():
    return space_for_search_space(SPACE_JSON, discretize=6)


def _truth(space, types: np.ndarray) -> np.ndarray:
    """A smooth function of two ordered decisions plus a categorical effect (the last decision
    does nothing): what a GP with one length-scale per decision should learn from few points."""
    coords = space.ordinal_coordinates()
    lr = coords[types[:, 0]]
    width = coords[types[:, 1]]
    act = np.array([{"relu": 0.0, "tanh": -0.3, "gelu": 0.1}[space.types_to_sample(t)["act"]] for t in types])
    return -4.0 * (lr - 0.6) ** 2 + width + act


def test_ordinal_coordinates_rank_numbers_and_leave_names_out():
    space = _space()
    coords = space.ordinal_coordinates()
    assert coords.shape == (space.num_types,)
    by_name = dict(zip(space.node_types, coords))
    assert [by_name[f"width={v}"] for v in (16, 32, 64)] == [0.0, 0.5, 1.0]  # rank of the value, not the order given
    assert [by_name[f"depth={v}"] for v in (1, 2, 3)] == [0.0, 0.5, 1.0]
    lr = [c for name, c in by_name.items() if name.startswith("lr=")]
    assert lr == sorted(lr) and lr[0] == 0.0 and lr[-1] == 1.0 and len(lr) == 6
    assert all(np.isnan(c) for name, c in by_name.items() if name.startswith("act="))
    assert np.isnan(NasBench201Space().ordinal_coordinates()).all()  # operations are names


def test_auto_picks_a_gp_on_a_decision_chain_and_the_gnn_on_a_cell():
    auto = SurrogateConfig()
    assert surrogate_kind(_space(), auto) == "gp" and surrogate_kind(NasBench201Space(), auto) == "gnn"
    assert isinstance(build_surrogate(_space(), auto), GPSurrogate)
    assert isinstance(build_surrogate(NasBench201Space(), auto), SurrogateEnsemble)
    assert isinstance(build_surrogate(_space(), SurrogateConfig(kind="gnn")), SurrogateEnsemble)
    assert isinstance(build_surrogate(NasBench201Space(), SurrogateConfig(kind="gp")), GPSurrogate)
    assert build_surrogate(_space(), SurrogateConfig(gp_steps=7)).fit_steps == 7  # what fit_gp runs


def test_a_wrong_kind_is_refused_at_construction_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"surrogate kind 'gpp' is not one of \['auto', 'gnn', 'gp'\]"):
        SearchConfig.from_kwargs(surrogate={"kind": "gpp"})
    with pytest.raises(ValueError, match="invalid surrogate settings"):
        SearchConfig.from_kwargs(surrogate={"gp_steps": 0})


def test_gp_learns_which_decisions_matter_and_ranks_unseen_graphs():
    space = _space()
    rng = np.random.default_rng(0)
    train, test = space.random_types(40, rng), space.random_types(300, rng)
    gp = GPSurrogate(space.legal, space.ordinal_coordinates())
    fit_gp(gp, to_features(torch.as_tensor(train), space.num_types), torch.as_tensor(_truth(space, train)))
    with torch.no_grad():
        mean, std = gp(to_features(torch.as_tensor(test), space.num_types))
    truth = _truth(space, test)
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(rank(mean.numpy()), rank(truth))[0, 1] > 0.9
    assert (std > 0).all()
    # the unused decision ('depth', the 4th) gets a longer length-scale than the two smooth ones
    ls = gp.log_ls.exp().numpy()
    assert ls[3] > ls[0] and ls[3] > ls[1], ls
    # at a training point the posterior is sure and right; far from every point it is not sure
    with torch.no_grad():
        m_train, s_train = gp(to_features(torch.as_tensor(train[:5]), space.num_types))
    assert np.allclose(m_train.numpy(), _truth(space, train[:5]), atol=0.1)
    assert float(s_train.max()) < float(std.mean())


def test_gp_gradient_reaches_the_node_features_for_guidance():
    space = _space()
    rng = np.random.default_rng(1)
    train = space.random_types(20, rng)
    gp = GPSurrogate(space.legal, space.ordinal_coordinates())
    fit_gp(gp, to_features(torch.as_tensor(train), space.num_types), torch.as_tensor(_truth(space, train)))
    x = (to_features(torch.as_tensor(space.random_types(8, rng)), space.num_types) * 0.8
         + 0.1 * torch.randn(8, space.num_nodes, space.num_types)).requires_grad_(True)
    mean, std = gp(x)
    (mean + 0.3 * std).sum().backward()
    assert torch.isfinite(x.grad).all()
    legal = torch.as_tensor(space.legal)
    assert x.grad[:, legal].abs().sum() > 0 and x.grad[:, ~legal].abs().sum() == 0  # only legal types move


def test_state_dict_round_trip_predicts_the_same():
    space = _space()
    rng = np.random.default_rng(2)
    train, test = space.random_types(15, rng), space.random_types(10, rng)
    sde = VESDE()
    gp = build_surrogate(space, SurrogateConfig())
    fit_model(gp, to_features(torch.as_tensor(train), space.num_types), torch.as_tensor(_truth(space, train)), sde)
    state = {k: v.clone() for k, v in gp.state_dict().items()}
    fresh = build_surrogate(space, SurrogateConfig())
    fresh.load_state_dict(state)
    x = to_features(torch.as_tensor(test), space.num_types)
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(gp(x), fresh(x)))
    with pytest.raises(RuntimeError, match="not fitted"):
        build_surrogate(space, SurrogateConfig())(x)


def test_the_search_core_refits_a_gp_after_every_result_on_a_decision_chain(caplog):
    """batch_size=None: one proposal per refit with the GP (a chain of decisions), two with the GNN
    (NB201's cell; five with several objectives); an explicit batch_size wins."""
    import logging

    from nni_diffusionnag.prior.exact import ProductPrior
    from nni_diffusionnag.search.core import SearchCore

    def core(space, **kwargs):
        config = SearchConfig.from_kwargs(seed=0, warmup=3, n_candidates=20, device="cpu", sampler={"num_steps": 8},
                                          surrogate={"hidden": 8, "steps": 10, "ensemble": 2}, **kwargs)
        return SearchCore(space, config, prior=ProductPrior(space, device="cpu"))

    assert core(NasBench201Space()).batch_size == 2
    assert core(NasBench201Space(), objectives=["params"]).batch_size == 5  # several objectives: 5
    assert core(_space(), batch_size=3).batch_size == 3
    space = _space()
    with caplog.at_level(logging.INFO, logger="nni_diffusionnag.search.core"):
        chain = core(space)
        assert chain.batch_size == 1 and "GP surrogate, 1 proposal(s) per refit" in caplog.text
        for _ in range(6):
            (sample,) = chain.propose(1)
            types = space.sample_to_types(sample)
            chain.observe(sample, float(_truth(space, types[None])[0]))
    assert isinstance(chain.generator.surrogate, GPSurrogate)
    assert len(chain.generator.surrogate.alpha) == 5  # refitted on the 5 results before the 6th proposal


def test_default_warmup_follows_the_surrogate():
    """warmup=None: 5 unguided architectures with the GNN ensemble on one objective, 10 with the GP
    or several objectives; none with a meta-predictor; an explicit warmup wins."""
    from nni_diffusionnag.prior.exact import ProductPrior
    from nni_diffusionnag.search.core import SearchCore

    def core(space, **kwargs):
        config = SearchConfig.from_kwargs(seed=0, n_candidates=20, device="cpu", sampler={"num_steps": 8},
                                          surrogate={"hidden": 8, "steps": 10, "ensemble": 2}, **kwargs)
        return SearchCore(space, config, prior=ProductPrior(space, device="cpu"))

    assert core(NasBench201Space()).warmup == 5
    assert core(NasBench201Space(), objectives=["params"]).warmup == 10  # several objectives: 10
    assert core(_space()).warmup == 10
    assert core(NasBench201Space(), warmup=7).warmup == 7
    assert core(_space(), warmup=0).warmup == 0
    with pytest.raises(ValueError, match="warmup"):
        SearchConfig.from_kwargs(warmup=-1)


def test_default_guidance_scale_follows_the_path():
    """scale=None: LOOP_SCALE for the GNN ensemble on one objective from scratch, unconstrained;
    DEFAULT_SCALE with the GP, several objectives or constraints; an explicit scale wins."""
    from nni_diffusionnag.prior.exact import ProductPrior
    from nni_diffusionnag.search.config import DEFAULT_SCALE, LOOP_SCALE
    from nni_diffusionnag.search.core import SearchCore

    def core(space, **kwargs):
        config = SearchConfig.from_kwargs(seed=0, n_candidates=20, device="cpu", sampler={"num_steps": 8},
                                          surrogate={"hidden": 8, "steps": 10, "ensemble": 2}, **kwargs)
        return SearchCore(space, config, prior=ProductPrior(space, device="cpu"))

    assert LOOP_SCALE != DEFAULT_SCALE
    assert core(NasBench201Space()).scale == LOOP_SCALE
    assert core(NasBench201Space(), objectives=["params"]).scale == DEFAULT_SCALE
    assert core(NasBench201Space(), constraints=["params<=1.0M"]).scale == DEFAULT_SCALE
    assert core(_space()).scale == DEFAULT_SCALE  # the GP over decisions
    assert core(NasBench201Space(), scale=0.5).scale == 0.5
    assert core(_space(), scale=0.0).scale == 0.0
    with pytest.raises(ValueError, match="scale"):
        SearchConfig.from_kwargs(scale=-1)
