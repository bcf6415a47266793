import torch

from nni_diffusionnag.diffusion.decoding import repair_decode, strict_decode, to_features
from nni_diffusionnag.diffusion.sampling import pc_sample
from nni_diffusionnag.diffusion.sde import VESDE
from nni_diffusionnag.prior.model import DiffusionPrior, SamplerConfig
from nni_diffusionnag.space import NasBench201Space


def test_pc_sampler_recovers_gaussian():
    # Data N(mu, s0^2): under the VE SDE the marginal is N(mu, s0^2 + sigma^2), score analytic.
    sde, mu, s0 = VESDE(0.01, 5.0), 1.5, 0.3

    def score_fn(x, t):
        var = s0**2 + sde.sigma(t) ** 2
        return -(x - mu) / var[:, None, None]

    gen = torch.Generator().manual_seed(0)
    x = pc_sample(sde, score_fn, (4000, 1, 1), num_steps=200, generator=gen)
    assert abs(float(x.mean()) - mu) < 0.05
    assert abs(float(x.std()) - s0) < 0.05


def test_decoding_strict_and_repair():
    space = NasBench201Space()
    legal = torch.as_tensor(space.legal)
    types = torch.as_tensor(space.enumerate_types()[:5])
    x = to_features(types, space.num_types)
    valid, dec = strict_decode(x, legal)
    assert valid.all() and torch.equal(dec, types)
    bad = x.clone()
    bad[0, 3, :] = -1.0  # node with no active type
    bad[1, 2, 4] = 1.0  # node with two active types
    bad[2, 0] = to_features(torch.tensor([5]), space.num_types)[0]  # an op where the input must be
    valid, _ = strict_decode(bad, legal)
    assert valid.tolist() == [False, False, False, True, True]
    rep = repair_decode(bad, legal)
    assert space.is_legal(rep.numpy()).all()
    assert rep[2, 0] == 0  # repaired to 'input'


def test_generate_shapes_and_membership(tiny_prior_path):
    space = NasBench201Space()
    prior = DiffusionPrior.load(tiny_prior_path, space, device="cpu")
    batch = prior.generate(37, SamplerConfig(num_steps=5, batch_size=16), seed=1)
    assert batch.types.shape == (37, 8) and batch.valid.shape == (37,) and batch.x.shape == (37, 8, 7)
    assert space.is_legal(batch.types).all()
    again = prior.generate(37, SamplerConfig(num_steps=5, batch_size=16), seed=1)
    assert (again.types == batch.types).all()  # seeded
