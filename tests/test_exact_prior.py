"""The exact score of product distributions (diffusion/product.py) and ProductPrior (prior/exact.py)."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import BASE_ENV, ROOT, light_job
from nni_diffusionnag.diffusion.decoding import to_features
from nni_diffusionnag.diffusion.guidance import GuidanceTerm, guided_score_fn
from nni_diffusionnag.diffusion.product import (check_log_probs, get_product_score_fn, product_log_density,
                                                product_posterior, product_score)
from nni_diffusionnag.diffusion.sampling import get_score_fn
from nni_diffusionnag.diffusion.sde import VESDE, VPSDE
from nni_diffusionnag.prior.exact import ProductPrior
from nni_diffusionnag.prior.model import DiffusionPrior, SamplerConfig
from nni_diffusionnag.space import GraphSpace, NasBench201Space

NB201 = NasBench201Space()
CONV3 = NB201.node_types.index("nor_conv_3x3")
CONFIG = SamplerConfig(num_steps=30)
TIMES = (0.01, 0.2, 0.5, 0.8, 1.0)


def small_space() -> GraphSpace:
    """4 nodes, 5 types: one node with a single legal type, the others with 2 to 5."""
    legal = np.array([[1, 1, 0, 0, 1],
                      [0, 0, 1, 0, 0],
                      [1, 1, 1, 1, 1],
                      [0, 1, 1, 1, 0]], dtype=bool)
    adj = np.triu(np.ones((4, 4), dtype=np.int64), 1)
    return GraphSpace("small", [f"t{k}" for k in range(5)], adj, legal, [f"n{i}" for i in range(4)])


def random_log_probs(legal: np.ndarray, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(legal.shape[1]), size=legal.shape[0]) * legal
    with np.errstate(divide="ignore"):
        return torch.as_tensor(np.log(probs / probs.sum(1, keepdims=True)), dtype=torch.float64)


def noised(sde, space, t_value: float, batch: int, seed: int = 0):
    """``x_t`` from clean graphs of ``space`` (random legal types) at time ``t``, float64."""
    rng = np.random.default_rng(seed)
    types = np.stack([rng.choice(np.flatnonzero(row), size=batch) for row in space.legal], axis=1)
    x0 = to_features(torch.as_tensor(types), space.num_types).double()
    t = torch.full((batch,), t_value, dtype=torch.float64)
    x = sde.perturb(x0, t, torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    alpha, std = sde.marginal_prob(torch.ones_like(t), t)
    return x, t, alpha, std


def node_freqs(space: GraphSpace, types: np.ndarray) -> np.ndarray:
    return np.stack([np.bincount(types[:, n], minlength=space.num_types) for n in range(space.num_nodes)]) / len(types)


def tv_per_node(space: GraphSpace, types: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(node_freqs(space, types) - probs).sum(1)


# --- the closed form -----------------------------------------------------------------------------
@pytest.mark.parametrize("sde", [VESDE(0.1, 5.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
@pytest.mark.parametrize("t_value", TIMES)
def test_score_is_gradient_of_log_density(sde, t_value):
    space = small_space()
    legal = torch.as_tensor(space.legal)
    log_probs = random_log_probs(space.legal)
    x, t, alpha, std = noised(sde, space, t_value, batch=6)
    score = product_score(x, log_probs, legal, alpha, std)
    assert score.dtype == torch.float64 and score.shape == x.shape

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(product_log_density(xg, log_probs, legal, alpha, std).sum(), xg)
    scale = score.abs().max()
    assert torch.allclose(score, grad, rtol=1e-9, atol=1e-10 * scale)

    # central finite differences, every coordinate of 3 graphs at once
    b, n, v = 3, space.num_nodes, space.num_types
    h = 1e-5
    eye = torch.eye(n * v, dtype=torch.float64).reshape(n * v, n, v)
    xs = x[:b, None] + h * eye[None]  # [b, n*v, n, v]
    xs = torch.cat([xs, xs - 2 * h * eye[None]], dim=1).reshape(-1, n, v)
    rep = lambda c: c[:b, None].expand(b, 2 * n * v).reshape(-1)  # noqa: E731
    logp = product_log_density(xs, log_probs, legal, rep(alpha), rep(std)).reshape(b, 2, n, v)
    fd = (logp[:, 0] - logp[:, 1]) / (2 * h)
    assert torch.allclose(score[:b], fd, rtol=1e-5, atol=1e-6 * scale)

    # the sampler-facing function takes alpha and std from the SDE
    assert torch.allclose(get_product_score_fn(sde, log_probs, legal)(x, t), score, rtol=1e-12, atol=0)


@pytest.mark.parametrize("sde", [VESDE(0.1, 5.0), VPSDE(0.1, 20.0)], ids=["ve", "vp"])
def test_posterior_is_exact_on_illegal_entries(sde):
    space = small_space()
    legal = torch.as_tensor(space.legal)
    log_probs = random_log_probs(space.legal, seed=1)
    for t_value in TIMES:
        x, _, alpha, std = noised(sde, space, t_value, batch=64, seed=2)
        x = x * 3.0  # far-out points too
        w = product_posterior(x, log_probs, legal, alpha, std)
        assert torch.isfinite(w).all()
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[:2], dtype=w.dtype), atol=1e-12)
        assert (w[:, ~legal] == 0).all()
        mean_c = 2 * w - 1
        assert (mean_c[:, ~legal] == -1).all()
        score = product_score(x, log_probs, legal, alpha, std)
        # at illegal entries: the closed form of nn.score_net.known_illegal_score
        var = std[:, None, None] ** 2
        expect = (-(x + alpha[:, None, None]) / var)[:, ~legal]
        assert torch.allclose(score[:, ~legal], expect, rtol=1e-12)


def test_float32_is_stable_at_small_noise():
    space = small_space()
    legal = torch.as_tensor(space.legal)
    log_probs = random_log_probs(space.legal).float()
    x = torch.randn(32, 4, 5) * 50  # logits of order 2 * 50 / 0.01 = 1e4
    alpha, std = torch.ones(32), torch.full((32,), 0.1)
    score = product_score(x, log_probs, legal, alpha, std)
    assert score.dtype == torch.float32 and torch.isfinite(score).all()
    ref = product_score(x.double(), log_probs.double(), legal, alpha.double(), std.double())
    assert torch.allclose(score.double(), ref, rtol=1e-5, atol=1e-3)


def test_input_checks():
    space = small_space()
    legal = torch.as_tensor(space.legal)
    log_probs = random_log_probs(space.legal)
    x, alpha, std = torch.zeros(2, 4, 5, dtype=torch.float64), torch.ones(2), torch.ones(2)
    with pytest.raises(ValueError, match="node 1"):
        check_log_probs(log_probs.masked_fill(torch.tensor([0, 1, 0, 0]).bool()[:, None], float("-inf")), legal)
    with pytest.raises(ValueError, match="shape"):
        check_log_probs(log_probs[:3], legal)
    with pytest.raises(ValueError, match="std must be positive"):
        product_score(x, log_probs, legal, alpha, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"x must be \[B, N, V\]"):
        product_score(x[:, :3], log_probs, legal, alpha, std)


# --- ProductPrior ---------------------------------------------------------------------------------
def test_probs_validation_and_from_samples():
    uniform = ProductPrior(NB201, device="cpu")
    assert np.allclose(uniform.probs, NB201.legal / NB201.legal.sum(1, keepdims=True))
    assert uniform.kind == "exact-product" and uniform.net_config is None and uniform.eval() is uniform
    assert "nasbench201" in repr(uniform) and "uniform" in repr(uniform)
    bad = NB201.legal.astype(float)
    with pytest.raises(ValueError, match=r"shape \[N, V\] = \[8, 7\]"):
        ProductPrior(NB201, bad[:7])
    neg = bad.copy()
    neg[3, CONV3] = -0.1
    with pytest.raises(ValueError, match="node 3 are negative"):
        ProductPrior(NB201, neg)
    illegal = bad.copy()
    illegal[2, 0] = 0.5
    with pytest.raises(ValueError, match="node 2 put 0.5 on type 0 \\('input'\\), which is illegal"):
        ProductPrior(NB201, illegal)
    zero = bad.copy()
    zero[5] = 0
    with pytest.raises(ValueError, match="node 5 sum to 0"):
        ProductPrior(NB201, zero)
    nan = bad.copy()
    nan[4, CONV3] = np.nan
    with pytest.raises(ValueError, match="node 4 are not finite"):
        ProductPrior(NB201, nan)
    # unnormalised rows (and torch input) are renormalised over the legal types
    scaled = ProductPrior(NB201, torch.as_tensor(bad * 7.0))
    assert np.allclose(scaled.probs, uniform.probs)

    # all of NB201, raw counts: exactly uniform
    assert np.allclose(ProductPrior.from_samples(NB201, NB201.enumerate_types(), smoothing=0).probs, uniform.probs)
    types = NB201.random_types(10, np.random.default_rng(0))
    est = ProductPrior.from_samples(NB201, types, smoothing=1.0)
    counts = node_freqs(NB201, types) * len(types)
    expect = (counts + 1.0) * NB201.legal
    assert np.allclose(est.probs, expect / expect.sum(1, keepdims=True))
    assert est.meta == {"kind": "exact-product", "num_samples": 10, "smoothing": 1.0}
    wrong = types.copy()
    wrong[4, 0] = CONV3
    with pytest.raises(ValueError, match="types\\[4\\] has type 5 \\('nor_conv_3x3'\\) at node 0"):
        ProductPrior.from_samples(NB201, wrong)
    with pytest.raises(ValueError, match="node 0 sum to 0"):
        ProductPrior.from_samples(NB201, types[:0], smoothing=0)


def test_model_matches_score_fn():
    for sde in (VESDE(0.1, 5.0), VPSDE()):
        prior = ProductPrior(NB201, NB201.legal * np.arange(1, 8), sde=sde, device="cpu")
        x, t = torch.randn(16, 8, 7), torch.rand(16) * 0.9 + 0.05
        a, b = prior.score_fn()(x, t), get_score_fn(sde, prior.model())(x, t)
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * a.abs().max())


def test_uniform_nb201_samples():
    prior = ProductPrior(NB201, device="cpu")
    batch = prior.generate(1000, CONFIG, seed=0)
    assert batch.types.shape == (1000, 8) and batch.x.shape == (1000, 8, 7)
    assert batch.valid.mean() == 1.0
    assert NB201.is_legal(batch.types).all()
    tv = tv_per_node(NB201, batch.types, prior.probs)
    # multinomial noise alone at 1,000 samples (5 uniform types): per-node TV 0.037 median,
    # 0.065 at the 99.9% quantile of the max over the 6 op nodes, mean over them 0.038 there;
    # 20,000 samples at 30 steps measured a per-node TV <= 0.006 (no bias)
    assert tv.max() < 0.07 and tv[1:-1].mean() < 0.045, tv
    # the same seed gives the same graphs; generate is DiffusionPrior.generate on this prior
    again = DiffusionPrior.generate(prior, 1000, CONFIG, seed=0)  # type: ignore[arg-type]
    assert np.array_equal(again.types, batch.types) and torch.equal(again.x, batch.x)


def test_nb201_gets_the_uniform_exact_prior_by_default_and_its_network_by_name():
    from nni_diffusionnag.prior.cache import prior_for_space
    from nni_diffusionnag.space.mobilenetv3 import MobileNetV3OFASpace

    # NB201 declares its six edges independent: the uniform closed form, by default and by name
    # (not the frequencies of a random sample of cells: each op's probability was 0.2 +- 0.006)
    assert NB201.independent_nodes and not MobileNetV3OFASpace().independent_nodes  # OFA: skip rules
    for kind in ("auto", "exact"):
        prior = prior_for_space(NB201, kind=kind, device="cpu")
        assert isinstance(prior, ProductPrior), kind
        assert np.array_equal(prior.probs, NB201.legal / NB201.legal.sum(1, keepdims=True))
    assert isinstance(prior_for_space(NB201, kind="learned", device="cpu"), DiffusionPrior)  # the shipped network


def test_non_uniform_nb201_samples_match_probs():
    rng = np.random.default_rng(3)
    probs = NB201.legal * rng.dirichlet(np.full(7, 2.0), size=8)
    prior = ProductPrior(NB201, probs, device="cpu")
    batch = prior.generate(2000, CONFIG, seed=1)
    assert batch.valid.mean() == 1.0
    tv = tv_per_node(NB201, batch.types, prior.probs)
    assert tv.max() < 0.06, tv  # 30 steps bias a 0.59 type by ~0.02 (measured at 20,000 samples)


def test_guidance_composes():
    prior = ProductPrior(NB201, device="cpu")
    term = GuidanceTerm(lambda x, t: x[:, 1, CONV3], scale=0.2, name="conv3-at-node-1")
    base = prior.generate(1000, CONFIG, seed=2)
    guided = prior.generate(1000, CONFIG, seed=2, score_fn=guided_score_fn(prior.score_fn(), [term]))
    assert guided.valid.mean() == 1.0
    before, after = (base.types[:, 1] == CONV3).mean(), (guided.types[:, 1] == CONV3).mean()
    assert before < 0.3 and after > 0.7, (before, after)  # measured 0.95 at scale 0.2
    # the other nodes are left (nearly) alone
    assert tv_per_node(NB201, guided.types, prior.probs)[2:7].max() < 0.08


def test_guided_generator_accepts_product_prior():
    from nni_diffusionnag.search.generator import GuidedGenerator

    generator = GuidedGenerator(ProductPrior(NB201, device="cpu"), sampler=SamplerConfig(num_steps=10, batch_size=64))
    batch = generator.generate(64, scale=0.0, seed=0)
    assert batch.types.shape == (64, 8) and NB201.is_legal(batch.types).all()


def test_trained_network_approaches_exact_score():
    """The shipped NB201 prior was trained on all 15,625 cells, i.e. the uniform product."""
    net = DiffusionPrior.shipped(NB201, "cpu").eval()
    exact = ProductPrior(NB201, sde=net.sde, device="cpu")
    legal = torch.as_tensor(NB201.legal)
    x0 = to_features(torch.as_tensor(NB201.random_types(256, np.random.default_rng(0))), NB201.num_types)
    gen = torch.Generator().manual_seed(0)
    errors = {}
    for t_value in (0.05, 0.2, 0.5, 0.9):
        t = torch.full((256,), t_value)
        x = net.sde.perturb(x0, t, torch.randn(x0.shape, generator=gen))
        with torch.no_grad():
            s_net, s_exact = net.score_fn()(x, t), exact.score_fn()(x, t)
        m = legal.expand_as(s_net)
        errors[t_value] = float((s_net - s_exact)[m].norm() / s_exact[m].norm())
    # measured (512 graphs, legal entries): 0.027 at t=0.05, 0.019 at 0.2, 0.048 at 0.5, 0.038 at
    # 0.9 (0.041 at t=0.01, 0.079 at t=1.0); all entries alike
    assert max(errors.values()) < 0.12, errors


@light_job
def exact_prior_without_nni():
    code = ("import sys, nni_diffusionnag.diffusion.product, nni_diffusionnag.prior.exact; "
            "assert not [m for m in sys.modules if m == 'nni' or m.startswith('nni.')]")
    return lambda: subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=BASE_ENV, cwd=ROOT)


@pytest.mark.background_job("exact_prior_without_nni")
def test_no_nni_import(background_result):
    """The interpreter runs (check=True) on the background subprocess worker (tests/helpers.py)."""
    assert background_result().returncode == 0


def test_local_variations_stay_near_their_anchors():
    """pc_sample from x_start (SDEdit): the noise time sets how far samples move from the anchor."""
    from nni_diffusionnag.search.generator import GuidedGenerator

    generator = GuidedGenerator(ProductPrior(NB201, device="cpu"), sampler=CONFIG)
    anchors = NB201.random_types(2, np.random.default_rng(0))
    moved = {}
    for t_start in (0.3, 0.55, 1.0):
        batch = generator.generate(400, scale=0.0, seed=1, start=(anchors, t_start))
        assert NB201.is_legal(batch.types).all() and batch.valid.all()
        moved[t_start] = (batch.types != anchors[np.arange(400) % 2]).sum(1)  # anchors are used in turn
    assert (moved[0.3] == 0).mean() > 0.95  # too little noise to leave the anchor
    # 0.55 (the default local_noise): 0 / 1 / 2 / 3 of the 6 edges change in 14-20% / 35-39% / 26-29% /
    # 13-15% of the samples (two seeds of 400), more only rarely
    assert 0.08 < (moved[0.55] == 0).mean() < 0.35 and (moved[0.55] <= 3).mean() > 0.9
    assert moved[1.0].mean() > 4.0  # from pure noise: a uniform cell differs in 6 x 4/5 = 4.8 edges on average
    with pytest.raises(ValueError, match="t_start"):
        generator.generate(4, scale=0.0, seed=1, start=(anchors, 0.0))


def test_local_candidates_join_the_ranked_pool():
    from nni_diffusionnag.search.generator import GuidedGenerator

    generator = GuidedGenerator(ProductPrior(NB201, device="cpu"), sampler=CONFIG)
    anchor = NB201.random_types(1, np.random.default_rng(3))
    out = generator.propose(40, n_candidates=40, scale=0.0, anchors=anchor, local_fraction=1.0, local_t=0.55,
                            max_rounds=1, seed=0)
    far = (out != anchor).sum(1)
    assert len(out) > 5 and far.max() <= 4 and (far >= 1).mean() > 0.9  # new graphs (duplicates dropped), nearby
    none = generator.propose(40, n_candidates=40, scale=0.0, anchors=anchor, local_fraction=0.0, max_rounds=1, seed=0)
    assert (none != anchor).sum(1).mean() > 3.5  # local_fraction=0: every candidate starts from noise


def test_crossovers_take_each_node_from_one_of_two_parents():
    """local_mix: the midpoint of two anchors' codes, diffused to CROSSOVER_NOISE and denoised,
    recombines the parents where they differ and keeps what they share."""
    from nni_diffusionnag.search.config import CROSSOVER_NOISE
    from nni_diffusionnag.search.generator import GuidedGenerator

    generator = GuidedGenerator(ProductPrior(NB201, device="cpu"), sampler=CONFIG)
    parents = np.repeat(NB201.random_types(1, np.random.default_rng(3)), 3, axis=0)
    parents[1, 2] = 2 + (parents[0, 2] - 1) % 5  # another operation on two edges
    parents[1, 5] = 2 + (parents[0, 5] - 1) % 5
    parents[2, 1] = 2 + (parents[0, 1] - 1) % 5
    codes, single = generator.start_codes(parents, 4, crossover=True), generator.features(parents)
    assert torch.allclose(codes[0], (single[0] + single[1]) / 2)  # the pairs in turn: (0, 1), (0, 2), (1, 2), ...
    assert torch.allclose(codes[2], (single[1] + single[2]) / 2) and torch.allclose(codes[3], codes[0])
    assert torch.equal(generator.start_codes(parents, 4), single[np.arange(4) % 3])  # without: each anchor in turn
    assert torch.equal(generator.start_codes(parents[:1], 4, crossover=True), single[[0, 0, 0, 0]])  # one: no pair

    types = generator.generate(600, scale=0.0, seed=1, start=(parents[:2], CROSSOVER_NOISE), crossover=True).types
    from_parents = ((types == parents[0]) | (types == parents[1])).all(1)
    new = from_parents & (types != parents[0]).any(1) & (types != parents[1]).any(1)
    # measured (seeds 1-2): 99% keep every node from a parent, about half are one of the 2 new combinations
    assert from_parents.mean() > 0.95 and 0.3 < new.mean() < 0.7
    assert len({tuple(t) for t in types[new]}) == 2


def test_a_stalled_search_picks_the_best_ones_neighbours_first():
    from nni_diffusionnag.search.config import SearchConfig
    from nni_diffusionnag.search.core import SearchCore
    from nni_diffusionnag.search.generator import GuidedGenerator

    generator = GuidedGenerator(ProductPrior(NB201, device="cpu"), sampler=CONFIG)
    best = NB201.random_types(1, np.random.default_rng(3))[0]
    pool = generator.propose(40, n_candidates=40, scale=0.0, anchors=best[None], local_fraction=0.5, max_rounds=1, seed=0)
    near = generator.propose(40, n_candidates=40, scale=0.0, anchors=best[None], local_fraction=0.5, max_rounds=1, seed=0,
                             near=best)
    one = (near != best).sum(1) == 1
    assert 0 < one.sum() < len(near) and one[:one.sum()].all()  # the best's neighbours first, then the others
    assert sorted(map(tuple, near)) == sorted(map(tuple, pool))  # the same candidates, reordered
    assert [tuple(t) for t in near[~one]] == [tuple(t) for t in pool if (t != best).sum() != 1]  # rest in order

    core = SearchCore(NB201, SearchConfig.from_kwargs(seed=0, device="cpu", local_patience=3))
    cells = NB201.random_types(6, np.random.default_rng(4))
    history = [(NB201.key(t), v) for t, v in zip(cells, [80.0, 91.0, 85.0, 90.0, 89.0, 91.0])]
    assert core._stalled_best(history[:4]) is None  # two results since the best (the second): not yet
    assert (core._stalled_best(history[:5]) == cells[1]).all()  # three: its neighbours first
    assert (core._stalled_best(history) == cells[1]).all()  # a tie is no new best
    assert SearchCore(NB201, SearchConfig.from_kwargs(seed=0, device="cpu"))._stalled_best(history) is None  # off


def test_a_balanced_warmup_covers_every_choice_and_keeps_the_prior():
    from nni_diffusionnag.search.config import SearchConfig
    from nni_diffusionnag.search.core import SearchCore

    prior = ProductPrior(NB201, device="cpu")
    draws = prior.balanced_types(5, np.random.default_rng(0))
    assert NB201.is_legal(draws).all()
    for edge in range(1, 7):  # 5 draws: each of an edge's 5 operations exactly once
        assert sorted(draws[:, edge]) == [2, 3, 4, 5, 6]
    # each draw is still distributed as the prior: marginals of many designs of 3 are uniform
    many = np.concatenate([prior.balanced_types(3, np.random.default_rng(s)) for s in range(2000)])
    freq = np.stack([(many[:, 1:7] == t).mean(0) for t in range(2, 7)])
    assert np.abs(freq - 0.2).max() < 0.02
    skewed = ProductPrior(NB201, probs=np.where(NB201.legal, [1, 1, 5, 1, 1, 1, 1], 0), device="cpu")
    freq = (skewed.balanced_types(9, np.random.default_rng(1))[:, 1:7] == 2).mean(0)
    assert (freq == 5 / 9).all()  # a systematic sample of p = 5/9: five of nine draws exactly

    core = SearchCore(NB201, SearchConfig.from_kwargs(seed=0, device="cpu", warmup_design="balanced"))
    first = core.propose(5)
    types = np.array([NB201.sample_to_types(s) for s in first])
    assert all(sorted(types[:, e]) == [2, 3, 4, 5, 6] for e in range(1, 7))
    with pytest.raises(ValueError, match="warmup_design"):
        SearchConfig.from_kwargs(warmup_design="sobol")


def test_local_settings_are_checked():
    from nni_diffusionnag.search.config import SearchConfig

    for name, bad in (("local_fraction", 1.5), ("local_fraction", -0.1), ("local_noise", 0.0), ("local_noise", 2.0),
                      ("local_anchors", 0), ("local_patience", -1), ("local_mix", 1.5), ("local_mix", -0.5)):
        with pytest.raises(ValueError, match=name):
            SearchConfig.from_kwargs(**{name: bad})
