import os
import warnings
from pathlib import Path

# One BLAS thread in this process (set before numpy loads OpenBLAS; subprocesses inherit it): on a
# shared two-core machine OpenBLAS's own threads contend, and one least-squares fit of the generic
# MobileNetV3 cost (test_mobilenetv3) takes ~40 s instead of ~2 s.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:  # numpy may already be loaded (a plugin): limit its BLAS at run time too
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
except ImportError:
    pass

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


@pytest.fixture(scope="session")
def search_space() -> dict:
    from nni_diffusionnag.integration import compat  # noqa: F401  (quiets NNI's import warnings)
    from nni.nas.hub.pytorch import NasBench201

    return {k: v.as_legacy_dict() for k, v in NasBench201().simplify().items()}


@pytest.fixture(autouse=True)
def reset_nni_trial_parameters():
    """NNI's sequential engine leaves ``nni.trial._params`` set after a run (NNI 3.0): reset it
    around every test, so no test sees another's trial parameters."""
    import nni.trial

    nni.trial._params = None
    yield
    nni.trial._params = None


@pytest.fixture(scope="session")
def ts_experiment(nb201_csv, tmp_path_factory):
    """The one NNI 'ts' experiment of the slow tests that need one (helpers.SharedTsRun): started by
    the first of them, stopped by the one marked ``stops_ts_experiment`` or, at the latest, here."""
    from helpers import SharedTsRun

    run = SharedTsRun(nb201_csv, tmp_path_factory.mktemp("ts-experiment"))
    try:
        yield run
    finally:
        run.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "stops_ts_experiment: stops the shared 'ts' experiment, so runs after "
                                       "every other test that uses it")


def pytest_collection_modifyitems(config, items):
    """The tests of the shared 'ts' experiment run one after another at the end of the session (its
    NNI manager is not left running under other tests), the one that stops it last."""
    def group(item) -> int:
        if "ts_experiment" not in getattr(item, "fixturenames", ()):
            return 0
        return 2 if item.get_closest_marker("stops_ts_experiment") else 1

    items[:] = sorted(items, key=group)  # stable: the order within each group is kept
