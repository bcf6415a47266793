"""`nnictl create` with the DiffusionNAG tuner at trialConcurrency 2 on the HPO example's space (every
legacy type) and on a search_space.json written from a user's own ModelSpace (NNI's NAS-Bench-201
space: tests/test_tuner.py). Every trial's parameters must lie inside the declared space. The three
experiments run on the background nnictl worker (tests/helpers.py, nnictl_job) while other tests run."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest

from nni_diffusionnag.integration.compat import free_port
from helpers import (ARTIFACTS, CANCEL, META, _dispatcher_log, _nnictl, _rest, check_report_page, nnictl_env,
                     nnictl_job, open_report_page, report_command)

ROOT = Path(__file__).resolve().parents[1]
HPO = ROOT / "examples" / "nnictl_hpo"

pytestmark = pytest.mark.slow

USER_SPACE = '''
import nni, torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableDropout, MutableLinear, Repeat


class UserNet(ModelSpace):
    def __init__(self):
        super().__init__()
        width = nni.choice("width", [8, 16, 32])
        self.inp = MutableLinear(64, width)
        self.blocks = Repeat(lambda i: LayerChoice([torch.nn.ReLU(), torch.nn.Tanh(), torch.nn.Identity()],
                                                   label=f"act{i}"), (1, 3), label="depth")
        self.drop = MutableDropout(nni.choice("dropout", [0.0, 0.1, 0.3]))
        self.out = MutableLinear(width, 10)

    def forward(self, x):
        return self.out(self.drop(self.blocks(self.inp(x))))
'''
USER_TRIAL = '''
import nni, torch
from nni.nas.nn.pytorch import model_context
from user_space import UserNet
params = nni.get_next_parameter()
with model_context(params):
    net = UserNet()
y = net(torch.zeros(2, 64))
assert y.shape == (2, 10)
nni.report_final_result(float(sum(p.numel() for p in net.parameters())) / 1000.0)
'''


def _inside(spec: dict, value) -> bool:
    kind, v = spec["_type"], spec["_value"]
    if kind == "choice":
        return value in v
    if kind == "randint":
        return isinstance(value, int) and v[0] <= value < v[1]
    ok = isinstance(value, (int, float)) and v[0] <= value <= v[1]
    if kind.startswith("q"):
        ok = ok and math.isclose(value / v[2], round(value / v[2]), abs_tol=1e-6)
    return ok


def _wait(port: int, trials: int, deadline: float) -> tuple:
    status, jobs = None, []
    while time.time() < deadline and not CANCEL.is_set():
        status = _rest(port, "check-status")["status"]
        jobs = _rest(port, "trial-jobs")
        if status in ("ERROR", "STOPPED") or (status == "DONE" and len(jobs) >= trials):
            break
        time.sleep(1)
    return status, jobs


def _run(tmp_path: Path, search_space: dict, trial_dir: Path, trial_command: str, class_args: dict,
         trials: int = 4, timeout: float = 240, resume_to: int = 0) -> tuple:
    (tmp_path / "home").mkdir()
    workdir = tmp_path / "experiments"
    env = nnictl_env(tmp_path)
    assert _nnictl("algo", "register", "--meta", str(META), env=env).returncode == 0
    (tmp_path / "search_space.json").write_text(json.dumps(search_space))
    config = {"searchSpaceFile": str(tmp_path / "search_space.json"), "trialCommand": trial_command,
              "trialCodeDirectory": str(trial_dir), "trialConcurrency": 2, "maxTrialNumber": trials,
              "experimentWorkingDirectory": str(workdir),
              "tuner": {"name": "DiffusionNAG", "classArgs": class_args},
              "trainingService": {"platform": "local", "useActiveGpu": False}}
    (tmp_path / "config.yml").write_text(json.dumps(config))
    port = free_port()
    t0 = time.time()
    created = _nnictl("create", "--config", str(tmp_path / "config.yml"), "--port", str(port), env=env, timeout=120)
    try:
        assert created.returncode == 0, created.stdout + created.stderr
        exp_id = _rest(port, "experiment")["id"]
        status, jobs = _wait(port, trials, t0 + timeout)
        log = _dispatcher_log(workdir, exp_id)
    finally:
        _nnictl("stop", "--port", str(port), env=env)
    if not resume_to or status != "DONE":
        return status, jobs, log
    port = free_port()  # nnictl resume: the tuner gets the finished trials back through import_data
    resumed = _nnictl("resume", exp_id, "--port", str(port), env=env, timeout=120)
    try:
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert _nnictl("update", "trialnum", exp_id, "--value", str(resume_to), env=env).returncode == 0
        status, jobs = _wait(port, resume_to, time.time() + timeout)
        log = _dispatcher_log(workdir, exp_id)
    finally:
        _nnictl("stop", "--port", str(port), env=env)
    return status, jobs, log


def _check(status: str, jobs: list, log: str, search_space: dict, trials: int) -> list:
    assert status == "DONE", f"{status}\n{log[-3000:]}"
    assert len(jobs) == trials and all(j["status"] == "SUCCEEDED" for j in jobs), jobs
    params = [json.loads(j["hyperParameters"][0])["parameters"] for j in jobs]
    for p in params:
        assert set(p) == set(search_space), p
        for label, value in p.items():
            assert _inside(search_space[label], value), (label, value)
    assert len({json.dumps(p, sort_keys=True) for p in params}) == trials  # never the same one twice
    assert "Traceback" not in log
    return params


@nnictl_job
def hpo_example_then_resume(tmp_path):
    space = json.loads((HPO / "search_space.json").read_text())
    return lambda: (space, *_run(tmp_path, space, HPO, f'"{sys.executable}" trial.py --epochs 1',
                                 {"optimize_mode": "maximize", "seed": 0, "warmup": 2, "batch_size": 2,
                                  "device": "cpu"}, trials=2, resume_to=4))


@pytest.mark.background_job("hpo_example_then_resume")
def test_hpo_example_then_resume(background_result):
    space, status, jobs, log = background_result()
    params = _check(status, jobs, log, space, 4)  # 2, then 2 new ones after nnictl resume: none re-trained
    assert "DiffusionNAGTuner: imported 2 records (0 skipped)" in log
    assert all(isinstance(p["depth"], int) and isinstance(p["width"], int) for p in params)
    assert "exact prior" in log or "exact-product" in log  # independent choices: nothing to train


@nnictl_job
def user_model_space_json(tmp_path):
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    (trial_dir / "user_space.py").write_text(USER_SPACE)
    (trial_dir / "trial.py").write_text(USER_TRIAL)
    sys.path.insert(0, str(trial_dir))  # in the main thread: the preparation of the job
    try:
        from user_space import UserNet

        space = json.loads(json.dumps({k: v.as_legacy_dict() for k, v in UserNet().simplify().items()}))
    finally:
        sys.path.remove(str(trial_dir))
        sys.modules.pop("user_space", None)

    def run():
        outcome = _run(tmp_path, space, trial_dir, f'"{sys.executable}" trial.py',
                       {"seed": 1, "warmup": 2, "batch_size": 2, "device": "cpu"}, trials=3)
        # then `nni-diffusionnag report ID` on the stopped experiment, which nnictl's registry in the
        # job's HOME places in its working directory (test_report_page_of_user_model_space_json)
        workdir = tmp_path / "experiments"
        ids = [p.name for p in workdir.iterdir() if p.is_dir() and not p.is_symlink()] if workdir.is_dir() else []
        report = (report_command(ids[0], "--output", str(tmp_path / "report"), env=nnictl_env(tmp_path))
                  if len(ids) == 1 else None)
        return (space, *outcome, (ids, report, tmp_path / "report" / "report.html"))

    return run


@pytest.mark.background_job("user_model_space_json")
def test_user_model_space_json(background_result):
    space, status, jobs, log, _ = background_result()
    _check(status, jobs, log, space, 3)


@pytest.mark.background_job("user_model_space_json")
def test_report_page_of_user_model_space_json(background_result, tmp_path):
    """`nni-diffusionnag report ID` on the nnictl experiment above (the tuner route: parameters are
    the sample, scalar metrics): the page opens in headless Chromium with every figure decoded."""
    *_, (ids, report, page) = background_result()
    assert len(ids) == 1 and report is not None, ids
    assert report.returncode == 0, report.stdout + report.stderr
    shown = open_report_page(page, tmp_path / "chrome", ARTIFACTS / "report-nnictl.png")
    check_report_page(shown, ids[0], ["progress", "predictions", "top-1", "top-2", "top-3"])
    assert len(shown["trials"]) == 3 and "One objective (default)" in shown["text"]
    assert "width=" in shown["text"] and "dropout=" in shown["text"]  # the tuner route's parameters, in the table


@nnictl_job
def bad_class_args(tmp_path):
    space = json.loads((HPO / "search_space.json").read_text())
    return lambda: _run(tmp_path, space, HPO, f'"{sys.executable}" trial.py --epochs 1', {"acquisition": "typo"},
                        timeout=60)


@pytest.mark.background_job("bad_class_args")
def test_bad_class_args_stop_before_any_trial(background_result):
    status, jobs, log = background_result()
    assert status == "ERROR" and jobs == [], (status, jobs)
    assert "acquisition='typo' is invalid; acquisition must be one of ['ucb', 'ei', 'mean', 'ts']" in log
