"""The batched evaluation of ensemble members (nn/stacked.py) computes what the members compute."""

import numpy as np
import pytest
import torch

from nni_diffusionnag.nn.config import SurrogateConfig
from nni_diffusionnag.nn.stacked import node_mixing, stack_members, stacked_forward
from nni_diffusionnag.nn.surrogate import GraphSurrogate, SurrogateEnsemble, fit_surrogate
from nni_diffusionnag.diffusion.sde import VESDE


def _chain(n: int) -> np.ndarray:
    adj = np.zeros((n, n))
    adj[np.arange(n - 1), np.arange(1, n)] = 1
    adj[0, n - 1] = 1  # one long edge: the transposed direction must differ from the forward one
    return adj


@pytest.mark.parametrize("log_noise,global_readout", [(True, False), (False, True)])
def test_stacked_matches_members_and_their_input_gradient(log_noise, global_readout):
    torch.manual_seed(0)
    members = [GraphSurrogate(9, _chain(6), hidden=16, num_layers=2, log_noise=log_noise,
                              global_readout=global_readout) for _ in range(3)]
    for m in members:  # non-trivial norms and embeddings (they start at 1 / 0)
        for p in m.parameters():
            p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(11, 6, 9, requires_grad=True)
    level = torch.rand(11) + 0.05
    ref = torch.stack([m(x, level) for m in members])
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    out = stacked_forward(stack_members(members), members[0], x, level)
    (g_out,) = torch.autograd.grad(out.sum(), x)
    assert out.shape == (3, 11)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-4, atol=1e-5)


def test_stack_refuses_members_of_different_shapes():
    with pytest.raises(ValueError, match="same configuration"):
        stack_members([GraphSurrogate(9, _chain(6), hidden=16), GraphSurrogate(9, _chain(6), hidden=8)])


def test_ensemble_eval_follows_its_weights_through_a_refit():
    torch.manual_seed(0)
    ens = SurrogateEnsemble(9, _chain(6), SurrogateConfig(hidden=16, num_layers=2, ensemble=3, steps=5)).eval()
    x, level = torch.randn(7, 6, 9), torch.rand(7) + 0.05

    def loop():
        return torch.stack([m(x, level) for m in ens.members]) * ens.y_std + ens.y_mean

    before = ens.member_predictions(x, level)
    torch.testing.assert_close(before, loop(), rtol=1e-5, atol=1e-5)
    x0 = torch.randn(20, 6, 9)
    fit_surrogate(ens, x0, torch.randn(20), VESDE(), seed=1)  # weights change in place
    after = ens.member_predictions(x, level)
    assert not torch.allclose(after, before)  # the snapshot was retaken, not reused
    torch.testing.assert_close(after, loop(), rtol=1e-5, atol=1e-5)


def test_a_deep_copy_evaluates_its_own_weights():
    import copy

    ens = SurrogateEnsemble(9, _chain(6), SurrogateConfig(hidden=16, num_layers=2, ensemble=2)).eval()
    x, level = torch.randn(5, 6, 9), torch.rand(5) + 0.05
    before = ens.member_predictions(x, level)  # snapshot taken
    twin = copy.deepcopy(ens)  # as the meta-surrogate hands out a copy to fine-tune
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1)
    torch.testing.assert_close(twin.member_predictions(x, level),
                               torch.stack([m(x, level) for m in twin.members]) * twin.y_std + twin.y_mean,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ens.member_predictions(x, level), before)  # the original is untouched


def test_node_mixing_sums_the_three_directed_parts():
    adj = torch.as_tensor(_chain(5), dtype=torch.float32)
    mixing, degrees = node_mixing(adj)
    u = torch.randn(4, 5, 3, 6)  # [B, N, part, H], as a layer's product lays it out
    expected = adj @ u[:, :, 0] + adj.t() @ u[:, :, 1] + u[:, :, 2]
    torch.testing.assert_close(mixing @ u.reshape(4, 15, 6), expected)
    # a shift that is the same on every node reaches node i as (row sum of each part) x shift
    shift = torch.randn(3, 6)
    torch.testing.assert_close(mixing @ shift.expand(5, 3, 6).reshape(15, 6), degrees.t() @ shift)
