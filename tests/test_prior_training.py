import numpy as np
import pytest
import torch

from nni_diffusionnag.exceptions import CheckpointError, SpaceMismatchError
from nni_diffusionnag.nn.score_net import ScoreNetConfig
from nni_diffusionnag.prior.model import DiffusionPrior
from nni_diffusionnag.space import GraphSpace, NasBench201Space
from nni_diffusionnag.prior.training import TrainConfig, train_prior

TINY = ScoreNetConfig(num_layers=1, d_model=32, num_heads=2, d_ff=64)


def test_loss_falls_on_tiny_run():
    space = NasBench201Space()
    prior = DiffusionPrior(space, net_config=TINY, device="cpu")
    losses = train_prior(prior, space.enumerate_types()[:512], TrainConfig(steps=200, batch_size=64, lr=3e-3, warmup=10),
                         progress=False)
    assert np.mean(losses[-30:]) < 0.7 * np.mean(losses[:30])


def test_training_resumes_from_checkpoint(tmp_path):
    space = NasBench201Space()
    data = space.enumerate_types()[:256]
    path = tmp_path / "p.pt"
    first = DiffusionPrior(space, net_config=TINY, device="cpu")
    l1 = train_prior(first, data, TrainConfig(steps=40, batch_size=32, checkpoint_every=20), checkpoint=path, progress=False)
    second = DiffusionPrior(space, net_config=TINY, device="cpu")
    l2 = train_prior(second, data, TrainConfig(steps=60, batch_size=32, checkpoint_every=20), checkpoint=path, progress=False)
    assert len(l1) == 40 and len(l2) == 60 and l2[:40] == l1  # continued, history kept
    loaded = DiffusionPrior.load(path, space)
    assert loaded.meta["train_steps"] == 60


class _OtherSpace(GraphSpace):
    def __init__(self):
        adj = np.zeros((3, 3), dtype=int)
        adj[0, 1] = adj[1, 2] = 1
        legal = np.ones((3, 4), dtype=bool)
        super().__init__("toy-chain", ["a", "b", "c", "d"], adj, legal, ["x", "y", "z"])


def test_checkpoint_for_another_space_is_refused(tiny_prior_path):
    with pytest.raises(SpaceMismatchError, match="nasbench201.*toy-chain|toy-chain.*nasbench201"):
        DiffusionPrior.load(tiny_prior_path, _OtherSpace())


def test_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no prior checkpoint"):
        DiffusionPrior.load(tmp_path / "nope.pt", NasBench201Space())
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a prior checkpoint"):
        DiffusionPrior.load(tmp_path / "foreign.pt", NasBench201Space())


def test_training_data_validated():
    space = NasBench201Space()
    prior = DiffusionPrior(space, net_config=TINY, device="cpu")
    with pytest.raises(ValueError, match="not legal"):
        train_prior(prior, np.zeros((4, 8), dtype=int), TrainConfig(steps=1), progress=False)
