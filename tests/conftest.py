import inspect
import os
import threading
import time
import warnings
from pathlib import Path

# One BLAS thread in this process (set before numpy loads OpenBLAS; subprocesses inherit it): on a
# shared two-core machine OpenBLAS's own threads contend, and one least-squares fit of the generic
# MobileNetV3 cost (test_mobilenetv3) takes ~40 s instead of ~2 s.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# OpenMP threads that wait sleep instead of spinning (set before torch loads libgomp; subprocesses
# inherit it): a test on two torch threads next to trial processes otherwise takes 30 s instead of 5,
# and starves an NNI dispatcher that has 10 s to connect.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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

    import torch

    space = NasBench201Space()
    torch.manual_seed(0)  # the network's initial weights: the same prior whichever test asks first
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


_JOBS: list = []  # the session's _BackgroundJobs, for the terminal summary


class _BackgroundJobs:
    """Runs the prepared background jobs (tests/helpers.py) on one worker thread, one at a time, so
    that an NNI dispatcher, which has 10 s to connect, never starts next to more than the main
    thread's test. While the shared 'ts' experiment's tests run in the main thread (they come first,
    and mostly wait for its trials), the worker takes the other Python-route 'ts' experiments, then
    plain subprocesses; once they are over, the nnictl experiments (the longest lane), then what is
    left. "subprocess" and "light" jobs start no NNI manager, so the main thread, when it has reached
    the background jobs' tests and waits, runs queued ones itself."""

    DURING_TS = ("ts", "subprocess", "light")  # lanes in the order the worker takes them
    AFTER_TS = ("nnictl", "ts", "subprocess", "light")
    IN_MAIN = ("light", "subprocess")  # what the main thread takes while it waits

    def __init__(self) -> None:
        self.outcomes: dict = {}  # name -> (ok, value or exception)
        self.done: dict = {}
        self.queue: list = []  # (lane, name, run)
        self.timeline: list = []  # (name, start, end, thread) in seconds since the session started
        self.cond = threading.Condition()
        self.ts_tests_over = False
        self.ts_over_at = None
        self.first_wait = None
        self.thread = threading.Thread(target=self._work, name="background-jobs", daemon=True)

    def add(self, lane: str, name: str, run) -> None:
        self.done[name] = threading.Event()
        self.queue.append((lane, name, run))

    def fail(self, name: str, exc: BaseException) -> None:
        self.outcomes[name] = (False, exc)
        self.done[name] = threading.Event()
        self.done[name].set()

    def start(self) -> None:
        self.thread.start()

    def mark_ts_tests_over(self) -> None:
        with self.cond:
            if not self.ts_tests_over:
                self.ts_tests_over, self.ts_over_at = True, time.monotonic() - _SESSION_START
                self.cond.notify_all()

    def _take(self, lanes) -> object:
        """The first queued job of the first of ``lanes`` that has one (call with ``cond`` held)."""
        for lane in lanes:
            for i, job in enumerate(self.queue):
                if job[0] == lane:
                    return self.queue.pop(i)
        return None

    def _run(self, name: str, run, where: str) -> None:
        import helpers

        start = time.monotonic()
        try:
            if helpers.CANCEL.is_set():
                raise RuntimeError("the session ended before this background job ran")
            self.outcomes[name] = (True, run())
        except BaseException as exc:  # assertions, skips, errors: raised again in the test
            self.outcomes[name] = (False, exc)
        finally:
            self.timeline.append((name, start - _SESSION_START, time.monotonic() - _SESSION_START, where))
            self.done[name].set()

    def _work(self) -> None:
        while True:
            with self.cond:
                while True:
                    if not self.queue:
                        return
                    job = self._take(self.AFTER_TS if self.ts_tests_over else self.DURING_TS)
                    if job is not None:
                        break
                    self.cond.wait(1.0)
            self._run(job[1], job[2], "worker")

    def result(self, name: str, timeout: float):
        if self.first_wait is None:
            self.first_wait = time.monotonic() - _SESSION_START
        if name not in self.done:
            raise RuntimeError(f"background job {name!r} was not started (no selected test names it)")
        deadline = time.monotonic() + timeout
        while not self.done[name].is_set():
            with self.cond:
                job = self._take(self.IN_MAIN)
            if job is not None:
                self._run(job[1], job[2], "main")
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"background job {name!r} did not finish in {timeout:.0f} s")
            self.done[name].wait(min(1.0, left))
        ok, value = self.outcomes[name]
        if not ok:
            raise value
        return value


@pytest.fixture(scope="session", autouse=True)
def _background_jobs(request, tmp_path_factory):
    """Prepares, in the main thread, the background jobs that the selected tests name and starts
    the workers on them (see tests/helpers.py); at the end, cancels waits and joins them."""
    names = []
    for item in request.session.items:
        for marker in item.iter_markers("background_job"):
            if marker.args[0] not in names:
                names.append(marker.args[0])
    jobs = _BackgroundJobs()
    _JOBS[:] = [jobs]
    if names:
        import helpers

        for name in names:
            lane, prepare = helpers.BACKGROUND_JOBS[name]
            try:
                kwargs = {arg: tmp_path_factory.mktemp(name) if arg == "tmp_path" else request.getfixturevalue(arg)
                          for arg in inspect.signature(prepare).parameters}
                jobs.add(lane, name, prepare(**kwargs))
            except BaseException as exc:  # a skip or an error in the preparation: that test's outcome
                jobs.fail(name, exc)
        if not any(_group(item) < 2 for item in request.session.items):
            jobs.mark_ts_tests_over()
        jobs.start()
    try:
        yield jobs
    finally:
        if jobs.thread.is_alive():
            import helpers

            helpers.CANCEL.set()  # the session ended early: stop waiting, stop the experiments
            jobs.thread.join(600)


@pytest.fixture
def background_result(request, _background_jobs):
    """Call it for the outcome of the background job this test names with
    @pytest.mark.background_job(name): what the job returned, or its exception raised (an assertion
    of the job fails the test, a skip skips it)."""
    marker = request.node.get_closest_marker("background_job")
    assert marker is not None, "background_result needs @pytest.mark.background_job(name)"
    return lambda: _background_jobs.result(marker.args[0], timeout=1800)


_SESSION_START = time.monotonic()


def pytest_terminal_summary(terminalreporter):
    """Where the background lane spent the session (it runs beside the main thread, so its end can
    be the suite's critical path): each job's start and end, seconds from the session start."""
    jobs = _JOBS[0] if _JOBS else None
    if jobs is None or not jobs.timeline:
        return
    terminalreporter.section("background jobs (start-end, s)")
    for name, start, end, where in jobs.timeline:
        terminalreporter.write_line(f"{start:7.1f}-{end:7.1f}  {end - start:6.1f}  {where:6s}  {name}")
    if jobs.ts_over_at is not None:
        terminalreporter.write_line(f"the shared 'ts' experiment's tests were over at {jobs.ts_over_at:.1f} s")
    if jobs.first_wait is not None:
        terminalreporter.write_line(f"the main thread reached the background jobs' tests at {jobs.first_wait:.1f} s")


def pytest_configure(config):
    config.addinivalue_line("markers", "stops_ts_experiment: stops the shared 'ts' experiment, so runs after "
                                       "every other test that uses it")
    config.addinivalue_line("markers", "background_job(name): the test checks the outcome of the background job "
                                       "`name` (tests/helpers.py); it runs at the end of the session")


def pytest_collection_modifyitems(config, items):
    """The tests of the shared 'ts' experiment run first, one after another (its NNI manager is not
    left running under other tests), the one that stops it last; the tests of the background jobs,
    which run meanwhile, come at the end."""
    items[:] = sorted(items, key=_group)  # stable: the order within each group is kept


def _group(item) -> int:
    """0, 1: the shared 'ts' experiment's tests (1: the one that stops it); 2: the others; 3: the
    background jobs' tests."""
    if item.get_closest_marker("background_job"):
        return 3
    if "ts_experiment" not in getattr(item, "fixturenames", ()):
        return 2
    return 1 if item.get_closest_marker("stops_ts_experiment") else 0


def pytest_runtest_setup(item):
    if _group(item) >= 2 and _JOBS:  # the shared 'ts' experiment's tests are over: nnictl jobs may start
        _JOBS[0].mark_ts_tests_over()
