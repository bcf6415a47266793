import _thread
import os
import threading
import warnings
from pathlib import Path

import pytest
import torch

warnings.filterwarnings("ignore", message=".*is found to be not a nn.Module.*")
# One thread: tests share two cores with NNI trial processes, and oversubscribed torch
# threads slow a small model down by orders of magnitude.
torch.set_num_threads(1)

SHARED_NB201 = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201" / "nb201_test_acc.csv"


@pytest.fixture(scope="session")
def nb201_csv() -> Path:
    """The NB201 table from ../shared/data (or $NB201_CSV); never committed into the project."""
    path = Path(os.environ.get("NB201_CSV", SHARED_NB201))
    if not path.is_file():
        pytest.skip(f"NB201 table not found at {path}; set NB201_CSV")
    return path


@pytest.fixture(scope="session")
def tiny_prior_path(tmp_path_factory) -> Path:
    """A prior for NB201 trained for a few steps: enough to exercise code paths, not quality."""
    from nni_diffusionnag.prior.model import DiffusionPrior
    from nni_diffusionnag.nn.score_net import ScoreNetConfig
    from nni_diffusionnag.space import NasBench201Space
    from nni_diffusionnag.prior.training import TrainConfig, train_prior

    space = NasBench201Space()
    prior = DiffusionPrior(space, net_config=ScoreNetConfig(num_layers=1, d_model=32, num_heads=2, d_ff=64), device="cpu")
    train_prior(prior, space.enumerate_types(), TrainConfig(steps=150, batch_size=128, lr=3e-3, warmup=10), progress=False)
    path = tmp_path_factory.mktemp("prior") / "tiny.pt"
    prior.save(path)
    return path




def ts_config(workdir, trials: int, concurrency: int = 1):
    """An NNI 'ts' engine config on the local training service, writing under ``workdir``."""
    from nni.nas.experiment import NasExperimentConfig

    config = NasExperimentConfig("ts", "simplified", "local")
    config.max_trial_number = trials
    config.trial_concurrency = concurrency
    config.experiment_working_directory = str(workdir)
    config.training_service.use_active_gpu = False
    return config


def run_bounded(exp, seconds: float = 240) -> None:
    """``exp.run`` on a free port, bounded in time: a stuck run gets a KeyboardInterrupt after
    ``seconds``, which NNI turns into stop(). Asserts the experiment finished; the caller stops it."""
    from nni_diffusionnag.integration.compat import free_port

    watchdog = threading.Timer(seconds, _thread.interrupt_main)
    watchdog.start()
    try:
        finished = exp.run(port=free_port())
    finally:
        watchdog.cancel()
    assert finished is True, "the experiment did not finish (watchdog or error)"


def hook_flops(model: torch.nn.Module, resolution: int = 32) -> int:
    """Count a model's FLOPs by running it: MACs of Conv2d and Linear (+ bias) for one image
    (NB201's convention, xautodl flop_benchmark), the reference the cost models are tested against."""
    total = [0]

    def conv_hook(m, inp, out):
        h, w = out.shape[2:]
        kh, kw = m.kernel_size
        macs = kh * kw * m.in_channels // m.groups * m.out_channels * h * w
        total[0] += macs + (m.out_channels * h * w if m.bias is not None else 0)

    def linear_hook(m, inp, out):
        total[0] += m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)

    handles = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    return total[0]
