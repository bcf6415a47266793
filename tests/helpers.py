"""Helpers shared by the test modules: NNI experiment configs and bounded runs, nnictl and its
REST API, the fake NB201 accuracy used by the tuner tests, and a FLOP counter."""

from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import nni
import torch
from nni.nas.evaluator import Evaluator

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "nnictl_nasbench201"
META = ROOT / "nni_diffusionnag" / "meta.yml"
NNICTL = Path(sys.executable).with_name("nnictl")
OPS = ["none", "skip_connect", "conv_1x1", "conv_3x3", "avg_pool_3x3"]
LABELS = ["cell/0_1", "cell/0_2", "cell/1_2", "cell/0_3", "cell/1_3", "cell/2_3"]


def _score(params: dict) -> float:
    """A fake accuracy: conv_3x3 edges count most."""
    return sum({"conv_3x3": 3.0, "conv_1x1": 2.0, "skip_connect": 1.0}.get(v, 0.0) for v in params.values())


def _valid(params: dict) -> bool:
    return list(params) == LABELS and all(v in OPS for v in params.values())


def _key(params: dict) -> tuple:
    return tuple(params[k] for k in LABELS)


def _nnictl(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    # cwd: the repository, whatever directory a test running meanwhile has chdir'd to (background jobs)
    return subprocess.run([str(NNICTL), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


# --- slow subprocesses in the background ---------------------------------------------------------
# An nnictl experiment mostly waits (manager and trial start-up, polling), and a test that only runs a
# fresh interpreter needs nothing of this process: such tests run theirs on a background worker
# (tests/conftest.py: one job at a time; while the shared 'ts' experiment runs, the Python-route
# 'ts' experiments and plain subprocesses, then the "nnictl" ones) while the other tests use the CPU,
# and check the outcome at the end of the session. A job is registered with @nnictl_job (nnictl
# starts an NNI manager, which starts a dispatcher process that has 10 s to connect), @ts_job (a
# Python-route 'ts' experiment in a subprocess: the manager's tuner is that running process, no
# dispatcher to start, so it may run beside the shared one), @subprocess_job or @light_job (no NNI
# manager; the main thread, once it waits for the jobs, runs queued ones of these two itself, light
# ones first): its function is the *preparation*, called in the main thread when the session starts,
# with the fixtures its arguments name (``tmp_path``: a fresh directory of its own); it writes
# files, computes whatever touches this process (NNI's label scopes, sys.path, the package walk) and
# may skip, then returns the function the worker calls: only subprocesses (nnictl, sshd, python) and
# REST calls, with an environment built from BASE_ENV, an explicit cwd, a timeout, and every NNI
# experiment stopped in a finally. The test marked @pytest.mark.background_job(name) calls its
# ``background_result`` fixture for what that function returned (or gets what it raised: its
# assertions fail the test, a skip skips it). CANCEL ends the waits early when the session ends
# before the jobs did.
BASE_ENV = dict(os.environ)  # as collected: never a test's monkeypatched environment
BACKGROUND_JOBS: dict = {}  # name -> (lane, preparation)
CANCEL = threading.Event()


def _background_job(lane: str):
    def register(prepare):
        other = BACKGROUND_JOBS.get(prepare.__name__)
        assert other is None or other[1].__module__ == prepare.__module__, f"two background jobs {prepare.__name__}"
        BACKGROUND_JOBS[prepare.__name__] = (lane, prepare)
        return prepare

    return register


nnictl_job = _background_job("nnictl")
ts_job = _background_job("ts")
subprocess_job = _background_job("subprocess")
light_job = _background_job("light")


def nnictl_env(tmp_path: Path) -> dict:
    """The environment of an nnictl run: its own HOME (experiment registry) and NNI config dir."""
    return dict(BASE_ENV, HOME=str(tmp_path / "home"), NNI_CONFIG_DIR=str(tmp_path / "nni-config"),
                OMP_NUM_THREADS="1")


FAST_TRIAL = '''
import nni
params = nni.get_next_parameter()
score = sum({"conv_3x3": 3.0, "conv_1x1": 2.0, "skip_connect": 1.0}.get(v, 0.0) for v in params.values())
nni.report_intermediate_result(score / 2)
nni.report_final_result({"default": score, "edges": len(params)})
'''


def _rest(port: int, path: str):
    with urllib.request.urlopen(f"http://localhost:{port}/api/v1/nni/{path}", timeout=10) as resp:
        return json.load(resp)


def _wait_done(port: int, trials: int, deadline: float) -> str:
    """Poll the REST API until the experiment is DONE with ``trials`` succeeded trials (or fails)."""
    status = None
    while time.time() < deadline and not CANCEL.is_set():
        status = _rest(port, "check-status")["status"]
        done = sum(t["status"] == "SUCCEEDED" for t in _rest(port, "trial-jobs"))
        if status in ("ERROR", "STOPPED") or (status == "DONE" and done >= trials):
            break
        time.sleep(1)
    return status


def _dispatcher_log(workdir: Path, exp_id: str) -> str:
    path = workdir / exp_id / "log" / "dispatcher.log"
    return path.read_text() if path.is_file() else ""


def _check_trials(trials: list, n: int) -> None:
    assert len(trials) == n and all(t["status"] == "SUCCEEDED" for t in trials), trials
    archs = []
    for t in trials:
        params = json.loads(t["hyperParameters"][0])["parameters"]
        metric = json.loads(json.loads(t["finalMetricData"][0]["data"]))
        assert _valid(params) and metric == {"default": _score(params), "edges": 6}
        archs.append(_key(params))
    assert len(set(archs)) == n  # never the same architecture twice, across the resume too


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


# The search settings the strategy tests use: a small surrogate and a short sampler (fast on one core).
def fast_strategy_settings() -> dict:
    from nni_diffusionnag.nn.surrogate import SurrogateConfig
    from nni_diffusionnag.prior.model import SamplerConfig

    return dict(surrogate=SurrogateConfig(hidden=16, steps=60, ensemble=3, gp_steps=30),
                sampler=SamplerConfig(num_steps=10), n_candidates=40, device="cpu")


SHARED_TS_TRIALS = 6  # a warm-up of 4, then one guided round of 2


class SharedTsRun:
    """One DiffusionNAGExperiment on NNI's 'ts' engine (local training service, a trial process per
    model) that several slow tests check (tests/conftest.py ``ts_experiment``): the DiffusionNAG
    strategy over the NB201 table, SHARED_TS_TRIALS trials at concurrency 2. It is left running after
    it finished, so the web portal can be opened (test_browser); what the tests read of it is taken
    right after the run; ``stop()`` stops it once (the last test of the group, then the finalizer)."""

    def __init__(self, nb201_csv, workdir) -> None:
        from nni.nas.hub.pytorch import NasBench201

        from nni_diffusionnag.integration import compat
        from nni_diffusionnag.integration.evaluators import TabularEvaluator
        from nni_diffusionnag.integration.strategy import DiffusionNAG

        self.trials = SHARED_TS_TRIALS
        self.evaluator = TabularEvaluator(str(nb201_csv), "cifar10_test_acc")
        self.strategy = DiffusionNAG(seed=0, warmup=4, batch_size=2, **fast_strategy_settings())
        config = ts_config(workdir, self.trials, concurrency=2)
        self.exp = compat.DiffusionNAGExperiment(NasBench201(), self.evaluator, self.strategy, config)
        self.stopped = False
        try:
            run_bounded(self.exp, seconds=300)
            self.status = self.exp.get_status()
            self.jobs = self.exp.list_trial_jobs()
            self.models = self.exp.export_top_models(top_k=10)
            self.top3 = self.exp.export_top_models(top_k=3, formatter="dict")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.exp.stop()


def check_jobs(jobs, evaluator, trials: int) -> None:
    assert len(jobs) == trials and all(job.status == "SUCCEEDED" for job in jobs), [j.status for j in jobs]
    mismatched = []
    for job in jobs:
        parameters = job.hyperParameters[0].parameters  # what the portal shows for this trial
        assert parameters["mutation_summary"] == parameters["sample"]
        metric = job.finalMetricData[0].data
        metric = json.loads(metric) if isinstance(metric, str) else metric
        metric = metric["default"] if isinstance(metric, dict) else float(metric)
        if abs(metric - evaluator.table.lookup(parameters["sample"])) > 1e-9:
            mismatched.append(job.trialJobId)
    assert not mismatched, f"trials shown with another trial's architecture: {mismatched}"



@nni.trace
class SampleLengthEvaluator(Evaluator):
    """A synthetic metric: the total length of the printed decision values (fast, deterministic)."""

    def _execute(self, model):
        value = float(sum(len(str(v)) for v in model.sample.values()))
        nni.report_final_result(value)
        return value


# --- headless Chromium over the DevTools protocol (test_browser: the web portal; test_report and
# test_nnictl_routes: the pages of `nni-diffusionnag report`) -------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and page texts (CI keeps the folder; never committed)


class DevTools:
    """Minimal Chrome DevTools protocol client (one page), over the ``websockets`` package NNI
    already depends on (no chromedriver, nothing downloaded)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=64 * 2**20, open_timeout=30).__enter__()
        self._id = 0

    def __call__(self, method: str, **params):
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=60))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        res = self("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.time() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.time() > deadline:
                raise TimeoutError(f"timed out waiting for {expression}")
            time.sleep(0.5)

    def screenshot(self, path: Path, width: int = 1400) -> None:
        """The whole page (the viewport stretched to its height) as a PNG file."""
        import base64

        self("Emulation.setDeviceMetricsOverride", width=width,
             height=int(self.js("document.documentElement.scrollHeight")) + 50, deviceScaleFactor=1, mobile=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self._ws.close()


def launch_chromium(url: str, profile: Path) -> tuple:
    """Headless Chromium showing ``url``: (its process, a DevTools client of the page). The caller
    stops the process (stop_process); skips the test when /usr/bin/chromium is missing."""
    import pytest

    from nni_diffusionnag.integration.compat import free_port

    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; scripts/setup.sh installs it as root)")
    debug_port = free_port()
    proc = subprocess.Popen(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1400",
         f"--remote-debugging-port={debug_port}", "--remote-allow-origins=*", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return proc, DevTools(pages[0]["webSocketDebuggerUrl"])
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port (exit code {proc.poll()})")
            time.sleep(0.5)
    except BaseException:
        stop_process(proc)
        raise


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# What a reader of a report page sees, once every image has been decoded (or failed to).
_REPORT_PAGE_JS = """(async () => {
  const images = [...document.images];
  const decoded = await Promise.all(images.map(i => i.decode().then(() => true, () => false)));
  return {
    title: document.title,
    headings: [...document.querySelectorAll('h1, h2')].map(h => h.textContent),
    images: images.map((i, k) => ({figure: i.closest('figure') && i.closest('figure').id,
                                   width: i.naturalWidth, decoded: decoded[k]})),
    external: [...document.querySelectorAll('[src], [href]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => !u.startsWith('data:')),
    resources: performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('data:')),
    trials: [...document.querySelectorAll('tbody tr')].map(r => r.cells[1].textContent),
    text: document.body.innerText,
  };
})()"""


def open_report_page(page: Path, profile: Path, screenshot: Path) -> dict:
    """Open a report page (``file://``) in headless Chromium and return what it shows: title,
    headings, every ``<img>`` (its figure's id, naturalWidth, decoded), any URL that is not a
    ``data:`` URI, the trial ids of the table, the text; a screenshot of it is left at ``screenshot``."""
    url = Path(page).resolve().as_uri()
    proc, tab = launch_chromium(url, profile)
    try:
        # the tab starts on about:blank, itself 'complete': wait for the page
        tab.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")
        shown = tab.js(_REPORT_PAGE_JS)
        tab.screenshot(screenshot)
        tab.close()
    finally:
        stop_process(proc)
    return shown


def check_report_page(shown: dict, exp_id: str, figures: list) -> None:
    """The page names the experiment in its title and every heading, shows exactly ``figures``
    (figure ids, in order), each image decoded with a width, and fetches nothing."""
    assert exp_id in shown["title"], shown["title"]
    assert shown["headings"] and all(exp_id in h for h in shown["headings"]), shown["headings"]
    assert [i["figure"] for i in shown["images"]] == figures, shown["images"]
    broken = [i for i in shown["images"] if not (i["decoded"] and i["width"] > 0)]
    assert not broken, broken
    assert shown["external"] == [] and shown["resources"] == [], (shown["external"], shown["resources"])


def report_command(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """``nni-diffusionnag report ARGS`` in a fresh interpreter (the background jobs' way)."""
    return subprocess.run([sys.executable, "-m", "nni_diffusionnag.cli", "report", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def ops_multiset(params):
    """A ``dedup_key`` named in classArgs as ``'helpers:ops_multiset'``: one key per multiset of operations."""
    return tuple(sorted(str(v) for v in params.values()))
