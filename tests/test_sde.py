import math

import pytest
import torch

from nni_diffusionnag.diffusion.sde import VESDE, VPSDE, get_sde


def _simulate_forward(sde, x0, t0, t1, steps, gen):
    """Euler–Maruyama integration of the forward SDE from t0 to t1."""
    x = x0.clone()
    dt = (t1 - t0) / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), t0 + k * dt)
        drift, g = sde.sde(x, t)
        x = x + drift * dt + g[:, None] * math.sqrt(dt) * torch.randn(x.shape, generator=gen)
    return x


def test_ve_closed_form():
    sde = VESDE(0.1, 5.0)
    t = torch.tensor([0.0, 0.5, 1.0])
    mean, std = sde.marginal_prob(torch.ones(3, 2), t)
    assert torch.allclose(mean, torch.ones(3, 2))
    assert torch.allclose(std, torch.tensor([0.1, math.sqrt(0.1 * 5.0), 5.0]), rtol=1e-5)


def test_ve_marginal_matches_simulation():
    # x_t - x_s ~ N(0, sigma(t)^2 - sigma(s)^2) for the VE SDE
    sde, gen = VESDE(0.1, 5.0), torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7)
    x1 = _simulate_forward(sde, x0, 0.2, 0.8, 400, gen)
    expect = math.sqrt(float(sde.sigma(torch.tensor(0.8)) ** 2 - sde.sigma(torch.tensor(0.2)) ** 2))
    assert abs(float(x1.mean()) - 0.7) < 0.05
    assert abs(float(x1.std()) - expect) / expect < 0.03


def test_vp_marginal_matches_simulation():
    sde, gen = VPSDE(0.1, 20.0), torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 1.0)
    x1 = _simulate_forward(sde, x0, 0.0, 0.3, 600, gen)
    mean, std = sde.marginal_prob(x0[:1], torch.tensor([0.3]))
    assert abs(float(x1.mean()) - float(mean)) < 0.02
    assert abs(float(x1.std()) - float(std)) / float(std) < 0.03


def test_get_sde_errors():
    assert isinstance(get_sde("VE", sigma_min=0.1, sigma_max=1.0), VESDE)
    with pytest.raises(ValueError, match="choose one of"):
        get_sde("subvp")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(1.0, 0.5)
