"""A search killed with SIGKILL resumes with every finished result and trains none of them again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import BASE_ENV, _nnictl, nnictl_env, subprocess_job, ts_job

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    from pathlib import Path
    import nni
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.hub.pytorch import NasBench201
    from nni_diffusionnag import DiffusionNAG, DiffusionNAGExperiment

    action, workdir, kill_after = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    log = workdir / "evaluated.jsonl"

    def evaluate(model):
        sample = nni.get_current_parameter().sample
        done = sum(1 for _ in log.open()) if log.exists() else 0
        if done >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill while this trial runs
        score = sum({"conv_3x3": 3.0, "conv_1x1": 2.0, "skip_connect": 1.0}.get(v, 0.0) for v in sample.values())
        nni.report_final_result(score)
        with log.open("a") as f:
            f.write(json.dumps(sample, sort_keys=True) + "\\n")

    config = NasExperimentConfig("sequential", "simplified", "local")
    config.max_trial_number = 10
    config.experiment_working_directory = str(workdir / "exp")
    strategy = DiffusionNAG(seed=0, warmup=4, batch_size=2, n_candidates=20, device="cpu",
                            surrogate=dict(hidden=16, steps=30, ensemble=2), sampler=dict(num_steps=10))
    exp = DiffusionNAGExperiment(NasBench201(), FunctionalEvaluator(evaluate), strategy, config,
                                 id="durable" if action == "resume" else None)
    if action == "run":
        exp.id = "durable"
        exp.run()
    else:
        exp.resume()
    print("RESULTS", len(strategy.history()))
''')


@subprocess_job
def sigkill_then_resume(tmp_path):
    (tmp_path / "run.py").write_text(SCRIPT)
    env = dict(BASE_ENV, OMP_NUM_THREADS="1", HOME=str(tmp_path))

    def run():
        first = subprocess.run([sys.executable, "run.py", "run", str(tmp_path), "5"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
        before = (tmp_path / "evaluated.jsonl").read_text().splitlines() if first.returncode == -signal.SIGKILL else None
        second = subprocess.run([sys.executable, "run.py", "resume", str(tmp_path), "1000"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300) if before is not None else None
        return tmp_path, first, before, second

    return run


@pytest.mark.background_job("sigkill_then_resume")
def test_sigkill_then_resume_keeps_every_result(background_result):
    """The two runs are on the background subprocess worker (tests/helpers.py)."""
    tmp_path, first, before, second = background_result()
    assert first.returncode == -signal.SIGKILL, first.stdout[-2000:] + first.stderr[-3000:]
    assert len(before) == 5

    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "search state restored: 5 results" in second.stderr + second.stdout
    evaluated = (tmp_path / "evaluated.jsonl").read_text().splitlines()
    assert len(evaluated) == 10, evaluated  # the budget, with the 5 earlier results counted once
    assert len(set(evaluated)) == 10  # no architecture trained twice
    assert "RESULTS 10" in second.stdout


TS_EVALUATOR = textwrap.dedent('''
    import json, time
    from pathlib import Path
    import nni

    HERE = Path(__file__).parent

    def evaluate(model):
        sample = nni.get_current_parameter().sample
        with (HERE / "started.jsonl").open("a") as f:
            f.write(json.dumps(sample, sort_keys=True) + "\\n")
        started = (HERE / "started.jsonl").read_text().count("\\n")
        time.sleep(30 if started == 2 else 1)  # the 2nd trial still runs when the test stops its manager
        score = sum({"conv_3x3": 3.0, "conv_1x1": 2.0, "skip_connect": 1.0}.get(v, 0.0) for v in sample.values())
        with (HERE / "evaluated.jsonl").open("a") as f:
            f.write(json.dumps(sample, sort_keys=True) + "\\n")
        nni.report_final_result(score)
''')

TS_SCRIPT = textwrap.dedent('''
    import os, signal, sys, threading, time
    from pathlib import Path
    sys.path.insert(0, str(Path.cwd()))
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.hub.pytorch import NasBench201
    from nni_diffusionnag import DiffusionNAG, DiffusionNAGExperiment
    import evalmod

    action, port, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = NasExperimentConfig("ts", "simplified", "local")
    config.max_trial_number, config.trial_concurrency = 3, 1
    config.experiment_working_directory = str(Path.cwd() / "exp")
    config.training_service.use_active_gpu = False
    strategy = DiffusionNAG(seed=0, warmup=2, batch_size=2, n_candidates=20, device="cpu",
                            surrogate=dict(hidden=16, steps=30, ensemble=2), sampler=dict(num_steps=10))
    exp = DiffusionNAGExperiment(NasBench201(), FunctionalEvaluator(evalmod.evaluate), strategy, config,
                                 id="tsdurable")

    def kill_while_a_trial_runs():
        started = Path.cwd() / "started.jsonl"
        while len(strategy.history()) < kill_after or not started.exists() or \\
                sum(1 for _ in started.open()) <= kill_after:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)

    if action == "run":
        threading.Thread(target=kill_while_a_trial_runs, daemon=True).start()
        exp.run(port=port)
    else:
        exp.resume(port=port)
    print("RESULTS", len(strategy.history()), flush=True)
    exp.stop()
''')


@ts_job
def ts_sigkill_then_resume(tmp_path):
    from nni_diffusionnag.integration.compat import free_port

    (tmp_path / "evalmod.py").write_text(TS_EVALUATOR)
    (tmp_path / "run.py").write_text(TS_SCRIPT)
    env, port = nnictl_env(tmp_path), free_port()

    def python(name, *args, timeout):
        # output to a file, not a pipe: the NNI manager it starts inherits the pipe and outlives a
        # killed run, so a pipe would not close before the manager stops
        with (tmp_path / f"{name}.log").open("w") as out:
            proc = subprocess.run([sys.executable, "run.py", *args], cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout)
        return proc.returncode, (tmp_path / f"{name}.log").read_text()

    def run():
        try:
            first = python("first", "run", str(port), "1", timeout=300)
            if first[0] != -signal.SIGKILL:
                return tmp_path, first, None
            # the killed run's NNI manager is still up, its 2nd trial running: resume says what to do
            blocked = python("blocked", "resume", str(port), "1000", timeout=120)
            _nnictl("stop", "tsdurable", env=env)  # what it says; the manager requeues the running trial
            before = (tmp_path / "evaluated.jsonl").read_text().splitlines()
            second = python("second", "resume", str(port), "1000", timeout=300)
            return tmp_path, first, (blocked, before, second)
        finally:
            _nnictl("stop", "--all", env=env)

    return run


@pytest.mark.background_job("ts_sigkill_then_resume")
def test_ts_engine_sigkill_then_resume_keeps_every_result(background_result):
    """On the 'ts' engine the manager outlives the killed run and re-runs its interrupted trial on
    resume: the strategy adopts that trial (its metric arrives) instead of training it again."""
    tmp_path, (rc, log), runs = background_result()
    assert rc == -signal.SIGKILL, log[-5000:]
    (rc, blocked), before, (rc2, log) = runs
    assert rc != 0 and "nnictl stop tsdurable" in blocked, blocked[-3000:]
    assert len(before) == 1  # the 2nd trial was stopped before its result

    assert rc2 == 0, log[-5000:]
    assert "search state restored: 1 results" in log
    assert "1 trial(s) it runs again after the resume, adopted" in log
    evaluated = (tmp_path / "evaluated.jsonl").read_text().splitlines()
    assert len(evaluated) == 3 and len(set(evaluated)) == 3, evaluated  # the budget; none trained twice
    assert "RESULTS 3" in log  # the adopted trial's metric reached the strategy


def test_half_written_checkpoint_never_breaks_resume(tmp_path):
    """A checkpoint write killed half-way leaves the previous file (write to a temporary, rename)."""
    from nni_diffusionnag.integration.compat import TrustedTorchSerializer

    ser = TrustedTorchSerializer()
    path = tmp_path / "state.ckpt"
    ser.save({"history": [1, 2, 3]}, path)
    real = Path(str(path) + ser.suffix)
    good = real.read_bytes()

    import torch

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(good[: len(good) // 2])  # half of a file, then the process dies
        raise KeyboardInterrupt

    orig = torch.save
    torch.save = dying_save
    try:
        with pytest.raises(KeyboardInterrupt):
            ser.save({"history": [1, 2, 3, 4]}, path)
    finally:
        torch.save = orig
    assert real.read_bytes() == good and ser.load(path) == {"history": [1, 2, 3]}


def _experiment(tmp_path, engine: str):
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperimentConfig
    from nni.nas.hub.pytorch import NasBench201

    from nni_diffusionnag import DiffusionNAG, DiffusionNAGExperiment

    config = NasExperimentConfig(engine, "simplified", "local")
    config.experiment_working_directory = str(tmp_path / "exp")
    config.trial_concurrency, config.max_trial_number = 1, 4
    return DiffusionNAGExperiment(NasBench201(), FunctionalEvaluator(lambda m: None), DiffusionNAG(seed=0), config,
                                  id="old")


def test_resume_from_another_directory_says_where(tmp_path, monkeypatch):
    ckpt = tmp_path / "exp" / "old" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"trialCodeDirectory": str(tmp_path / "where-it-ran")}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match=r"resume experiment 'old' from .*where-it-ran, the directory it was started in"):
        _experiment(tmp_path, "sequential").resume()


def test_resume_with_a_manager_still_running_says_what_to_do(tmp_path, monkeypatch):
    import socket

    ckpt = tmp_path / "exp" / "old" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps({"trialCodeDirectory": str(tmp_path)}))
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:  # stands for the NNI manager that outlived the killed run
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"port {port} is in use.*`nnictl stop old`"):
            _experiment(tmp_path, "ts").resume(port=port)
