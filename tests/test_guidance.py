"""Surrogates, guidance and constraints (docs/design.md, 'Guidance')."""

import numpy as np
import pytest
import torch

from nni_diffusionnag.diffusion.decoding import to_features
from nni_diffusionnag.diffusion.guidance import GuidanceTerm, budget_penalty, expected_improvement, guided_score_fn, ucb
from nni_diffusionnag.diffusion.sde import VESDE
from nni_diffusionnag.search.generator import GuidedGenerator
from nni_diffusionnag.nn.surrogate import SurrogateConfig, SurrogateEnsemble, fit_surrogate
from nni_diffusionnag.prior.model import DiffusionPrior, SamplerConfig
from nni_diffusionnag.properties import budget_constraint, count
from nni_diffusionnag.space import NasBench201Space

SPACE = NasBench201Space()
CONV3 = SPACE.node_types.index("nor_conv_3x3")


def test_guided_score_is_score_plus_normalised_gradient():
    w = torch.randn(8, 7)
    score_fn = lambda x, t: -x  # noqa: E731
    linear = GuidanceTerm(lambda x, t: (x * w).sum((1, 2)), scale=0.5)
    x, t = torch.randn(4, 8, 7), torch.full((4,), 0.5)
    got = guided_score_fn(score_fn, [linear])(x, t)
    s_norm = x.reshape(4, -1).norm(dim=1)
    expect = -x + 0.5 * s_norm[:, None, None] * (w / w.norm())[None]
    assert torch.allclose(got, expect, atol=1e-5)
    off = guided_score_fn(score_fn, [GuidanceTerm(linear.fn, scale=0.0)])
    assert off is score_fn  # a switched-off term costs nothing
    flat = guided_score_fn(score_fn, [GuidanceTerm(lambda x, t: budget_penalty(x.sum((1, 2)) * 0, 1.0))])
    assert torch.allclose(flat(x, t), -x)  # a satisfied budget adds no push


def test_acquisitions():
    mean, std = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(ucb(mean, std, 2.0), torch.tensor([1.0, 3.0]))
    ei = expected_improvement(mean, std, best=1.0)
    assert ei[1] > ei[0] >= 0


def _conv_count_task(n, seed):
    rng = np.random.default_rng(seed)
    types = SPACE.random_types(n, rng)
    return types, (types == CONV3).sum(1).astype(float)


@pytest.mark.parametrize("noise_aware", [True, False])
def test_surrogate_learns_and_its_gradient_moves_samples_up(noise_aware):
    sde = VESDE(0.1, 5.0)
    types, y = _conv_count_task(300, 0)
    ens = SurrogateEnsemble(SPACE.num_types, SPACE.adjacency, SurrogateConfig(hidden=32, steps=300, ensemble=3,
                                                                               noise_aware=noise_aware))
    fit_surrogate(ens, to_features(torch.as_tensor(types), 7), torch.as_tensor(y), sde, seed=0)
    test_types, test_y = _conv_count_task(200, 1)
    with torch.no_grad():
        mean, std = ens(to_features(torch.as_tensor(test_types), 7), torch.full((200,), 0.1))
    assert np.corrcoef(mean.numpy(), test_y)[0, 1] > 0.9
    assert (std >= 0).all() and std.mean() > 0  # the ensemble disagrees a little
    # gradient ascent on a batch of one-hots raises the predicted and the true conv count
    x = to_features(torch.as_tensor(test_types[:50]), 7).requires_grad_(True)
    level = torch.full((50,), 0.1)
    for _ in range(20):
        (g,) = torch.autograd.grad(ens(x, level)[0].sum(), x)
        x = (x + 0.5 * g / g.norm(dim=(1, 2), keepdim=True)).detach().requires_grad_(True)
    legal = torch.as_tensor(SPACE.legal)
    moved = x.detach().masked_fill(~legal, -1e9).argmax(-1).numpy()
    assert (moved == CONV3).sum(1).mean() > (test_types[:50] == CONV3).sum(1).mean() + 1


def test_noise_aware_surrogate_is_informative_at_high_noise():
    sde = VESDE(0.1, 5.0)
    types, y = _conv_count_task(300, 0)
    x0 = to_features(torch.as_tensor(types), 7)
    corr = {}
    for noise_aware in (True, False):
        ens = SurrogateEnsemble(7, SPACE.adjacency, SurrogateConfig(hidden=32, steps=150, ensemble=2, noise_aware=noise_aware))
        fit_surrogate(ens, x0, torch.as_tensor(y), sde, seed=0)
        t = torch.full((300,), 0.5)
        gen = torch.Generator().manual_seed(0)
        xt = x0 + sde.sigma(t)[:, None, None] * torch.randn(x0.shape, generator=gen)
        with torch.no_grad():
            corr[noise_aware] = np.corrcoef(ens(xt, sde.sigma(t))[0].numpy(), y)[0, 1]
    assert corr[True] > corr[False]


def test_fit_rejects_bad_targets():
    ens = SurrogateEnsemble(7, SPACE.adjacency, SurrogateConfig(steps=1, ensemble=1))
    x = to_features(torch.as_tensor(SPACE.random_types(4, np.random.default_rng(0))), 7)
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_surrogate(ens, x, torch.tensor([1.0, float("nan"), 2.0, 3.0]), VESDE())


def test_params_constraint_guides_a_prior(tiny_prior_path):
    prior = DiffusionPrior.load(tiny_prior_path, SPACE, "cpu")
    budget = 0.4  # M params: about a fifth of the space
    sampler = SamplerConfig(num_steps=20)
    plain = GuidedGenerator(prior, sampler=sampler, seed=0).generate(200, seed=0)
    guided = GuidedGenerator(prior, sampler=sampler, constraints=[budget_constraint("params", budget, scale=1.0)],
                             seed=0).generate(200, seed=0)
    frac = lambda b: (count(b.types, "params", unit="M") <= budget).mean()  # noqa: E731
    assert frac(guided) > frac(plain) + 0.3
    assert frac(guided) >= 0.8


def test_propose_dedups_and_enforces_constraints(tiny_prior_path):
    prior = DiffusionPrior.load(tiny_prior_path, SPACE, "cpu")
    cons = budget_constraint("params", 0.6)
    gen = GuidedGenerator(prior, SurrogateConfig(hidden=16, steps=30, ensemble=2), SamplerConfig(num_steps=10),
                          constraints=[cons], seed=0)
    first = gen.propose(10, n_candidates=60)
    assert len(first) == 10 and len({tuple(t) for t in first}) == 10
    assert (count(first, "params", unit="M") <= 0.6).all()
    gen.fit(first, (first == CONV3).sum(1).astype(float))
    second = gen.propose(10, exclude={SPACE.key(t) for t in first}, n_candidates=60)
    assert not ({SPACE.key(t) for t in second} & {SPACE.key(t) for t in first})
    mean, std = gen.predict(second)
    assert len(second) >= 2 and (np.diff(mean + std) <= 1e-5).all()  # ranked by UCB (kappa 1)


def test_flops_as_a_guidance_target(tiny_prior_path):
    from nni_diffusionnag.properties import cost_target

    prior = DiffusionPrior.load(tiny_prior_path, SPACE, "cpu")
    sampler = SamplerConfig(num_steps=20)
    plain = GuidedGenerator(prior, sampler=sampler, seed=0).generate(200, seed=0)
    fewer = GuidedGenerator(prior, sampler=sampler, targets=[cost_target("flops", scale=1.0)], seed=0).generate(200, seed=0)
    off = GuidedGenerator(prior, sampler=sampler, targets=[cost_target("flops", scale=0.0)], seed=0).generate(200, seed=0)
    flops = lambda b: count(b.types, "flops", unit="M").mean()  # noqa: E731
    assert flops(fewer) < 0.7 * flops(plain)
    assert (off.types == plain.types).all()  # a term at scale 0 is switched off


class _Members(torch.nn.Module):
    """A stand-in ensemble whose members predict fixed values for the graphs in the order given."""

    def __init__(self, preds):
        super().__init__()
        self.preds = torch.as_tensor(preds, dtype=torch.float32)  # [M, C]
        self.y_std = torch.tensor(1.0)

    def member_predictions(self, x, level):
        return self.preds[:, : len(x)]

    def forward(self, x, level):
        p = self.member_predictions(x, level)
        return p.mean(0), p.std(0, unbiased=False)


class _NoMembers(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)

    def forward(self, x, level):
        return self.mean[: len(x)], self.std[: len(x)]


def test_thompson_acquisition_gives_each_slot_its_own_member():
    from nni_diffusionnag.prior.exact import ProductPrior

    gen = GuidedGenerator(ProductPrior(SPACE, device="cpu"), sampler=SamplerConfig(num_steps=5))
    cand = SPACE.random_types(4, np.random.default_rng(0))
    # member 0 likes graph 0, member 1 graph 2, member 2 graph 0 again (taken: its next best, 3)
    gen.surrogate = _Members([[9, 1, 2, 3], [0, 1, 9, 3], [9, 1, 2, 5]])
    order = gen._thompson_order(cand, k=3, seed=0)
    assert list(order[:3]) == [0, 2, 3] and sorted(order) == [0, 1, 2, 3]
    # guidance: graph i is scored by member i mod M along the whole trajectory
    x = to_features(torch.as_tensor(cand), SPACE.num_types)
    got = gen.thompson(x, torch.ones(4), torch.zeros(4))
    assert torch.equal(got, torch.tensor([9.0, 1.0, 2.0, 3.0]))
    # a surrogate without members (the GP): mean + std z per graph; with std 0 that is the mean
    gen.surrogate = _NoMembers([1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    assert list(gen._thompson_order(cand, k=2, seed=0)) == [1, 2, 0, 3]
    assert torch.equal(gen.thompson(x, torch.ones(4), torch.full((4,), 2.0)), torch.tensor([1.0, 3.0, 2.0, 0.0],
                                                                                         dtype=torch.float64))
    # and through propose, de-duplicated, on a real ensemble: 5 distinct new graphs
    types, y = _conv_count_task(40, 0)
    gen.surrogate = None
    gen.surrogate_config = SurrogateConfig(hidden=16, steps=20, ensemble=3)
    gen.fit(types, y)
    out = gen.propose(5, exclude={SPACE.key(t) for t in types}, n_candidates=30, acquisition="ts", seed=0)
    assert len(out) == 5 and len({SPACE.key(t) for t in out}) == 5
    assert not {SPACE.key(t) for t in out} & {SPACE.key(t) for t in types}
