"""NNI 3.0 compatibility fixes (nni_diffusionnag.integration.compat)."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_diffusionnag.integration import compat

compat.install()

import nni  # noqa: E402
from nni.nas.evaluator import Evaluator  # noqa: E402
from nni.nas.experiment import NasExperiment, NasExperimentConfig  # noqa: E402
from nni.nas.experiment.config import SimplifiedModelFormatConfig  # noqa: E402
from nni.nas.hub.pytorch import NasBench201  # noqa: E402
from nni.nas.strategy import Random  # noqa: E402
from nni.nas.utils import serializer as nni_serializer  # noqa: E402
from nni.runtime.tuner_command_channel.channel import TunerCommandChannel  # noqa: E402
from nni.runtime.tuner_command_channel.command_type import CommandType, RequestTrialJobs, Terminate  # noqa: E402

from helpers import BASE_ENV, light_job  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {"cell/0_1": "conv_3x3", "cell/0_2": "skip_connect", "cell/1_2": "none",
          "cell/0_3": "avg_pool_3x3", "cell/1_3": "conv_1x1", "cell/2_3": "conv_3x3"}


@nni.trace
class SampleLengthEvaluator(Evaluator):
    """Reports a number derived from the sample without building the model (fast, no data)."""

    def _execute(self, model):
        value = float(sum(len(v) for v in model.sample.values()))
        nni.report_final_result(value)
        return value


# --- install() ----------------------------------------------------------------------------------
def _our_filters():
    return [f for f in warnings.filters
            if f[0] == "ignore" and f[1] is not None and f[1].pattern == compat._NOT_A_MODULE_MESSAGE]


def test_install_is_idempotent():
    compat.install()
    receive = TunerCommandChannel.receive
    load, save = NasExperiment.load_checkpoint, NasExperiment.save_checkpoint
    serializer = nni_serializer.get_default_serializer()
    for _ in range(3):
        compat.install()
    assert compat.is_installed()
    assert TunerCommandChannel.receive is receive
    assert NasExperiment.load_checkpoint is load and NasExperiment.save_checkpoint is save
    assert nni_serializer.get_default_serializer() is serializer
    assert isinstance(serializer, compat.TrustedTorchSerializer)
    # Wrapped exactly once: the wrapper's original is NNI's own function.
    assert not getattr(receive.__wrapped__, compat._PATCH_MARKER, False)
    assert not getattr(load.__wrapped__, compat._PATCH_MARKER, False)
    assert len(_our_filters()) == 1


def test_install_reapplies_patches_idempotently_after_flag_reset(monkeypatch):
    # e.g. importlib.reload(compat): the flag is reset, but the patches must not stack.
    receive = TunerCommandChannel.receive
    monkeypatch.setattr(compat, "_installed", False)
    compat.install()
    assert TunerCommandChannel.receive is receive


def test_install_keeps_a_user_chosen_serializer(monkeypatch):
    monkeypatch.setattr(compat, "_installed", False)
    json_serializer = nni_serializer.JsonSerializer()
    monkeypatch.setattr(nni_serializer, "_default_serializer", json_serializer)
    compat.install()
    assert nni_serializer.get_default_serializer() is json_serializer


def test_not_a_module_warning_is_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compat.install()
        warnings.warn("<class 'torch.nn.parameter.Buffer'> is found to be not a nn.Module, which is unexpected.",
                      RuntimeWarning)
        warnings.warn("another runtime warning", RuntimeWarning)
    assert [str(w.message) for w in caught] == ["another runtime warning"]


# --- trusted serializer ---------------------------------------------------------------------------
def test_trusted_serializer_loads_numpy_random_state(tmp_path):
    rs = np.random.RandomState(7)
    rs.rand(3)
    checkpoint = {"version": 1, "strategy": {"random_state": rs.get_state(), "rng": rs,
                                             "dedup_history": ["a", "b"]}}
    path = tmp_path / "state.ckpt"
    nni_serializer.TorchSerializer().save(checkpoint, path)  # exactly what NNI writes

    if tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 6):
        # The bug being fixed: torch's weights_only default rejects the RandomState.
        with pytest.raises(pickle.UnpicklingError):
            nni_serializer.TorchSerializer().load(path)

    loaded = nni_serializer.get_default_serializer().load(path)
    restored = np.random.RandomState()
    restored.set_state(loaded["strategy"]["random_state"])
    assert restored.rand() == rs.rand()
    assert loaded["strategy"]["dedup_history"] == ["a", "b"]
    assert isinstance(loaded["strategy"]["rng"], np.random.RandomState)


def test_trusted_serializer_saves_atomically(tmp_path):
    serializer = compat.TrustedTorchSerializer()
    serializer.save({"x": 1}, tmp_path / "state.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.ckpt.torch"]
    assert serializer.load(tmp_path / "state.ckpt") == {"x": 1}


# --- resume never destroys a good checkpoint (sequential engine, no NNI manager) -------------------
def _sequential_config(workdir: Path, trials: int) -> NasExperimentConfig:
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = trials
    config.experiment_working_directory = str(workdir)
    return config


def _experiment(workdir: Path, exp_id: str, trials: int = 4) -> NasExperiment:
    return compat.DiffusionNAGExperiment(NasBench201(), SampleLengthEvaluator(), Random(seed=3),
                                         _sequential_config(workdir, trials), id=exp_id)


def test_resume_restores_state_and_failed_resume_keeps_checkpoint(tmp_path, monkeypatch):
    exp_id = "dnag_" + uuid.uuid4().hex[:12]
    exp = _experiment(tmp_path, exp_id)
    try:
        assert exp.run() is True
    finally:
        exp.stop()
    ckpt_dir = tmp_path / exp_id / "checkpoint"
    state_file = ckpt_dir / "state.ckpt.torch"
    history = nni_serializer.get_default_serializer().load(ckpt_dir / "state.ckpt")["strategy"]["dedup_history"]
    # 4 trained; NNI's Random also records the sample it draws before it sees the budget is spent.
    assert len(history) >= 4

    # 1. A resume that works (needs the trusted serializer on torch >= 2.6) restores the history.
    resumed = _experiment(tmp_path, exp_id)
    try:
        resumed.resume()
        assert set(history) <= set(resumed.strategy.state_dict()["dedup_history"])
    finally:
        resumed.stop()
    good_bytes = state_file.read_bytes()
    config_bytes = (ckpt_dir / "config.json").read_bytes()
    reloaded = nni_serializer.get_default_serializer().load(ckpt_dir / "state.ckpt")["strategy"]["dedup_history"]
    assert set(history) <= set(reloaded)

    # 2. A resume whose state cannot be read must not overwrite the checkpoint, neither in our
    #    stop() nor in the atexit stop() that NasExperiment.start() registered.
    class BrokenSerializer(compat.TrustedTorchSerializer):
        def load(self, path):
            raise pickle.UnpicklingError("simulated: weights_only load failed")

    monkeypatch.setattr(nni_serializer, "_default_serializer", BrokenSerializer())
    failing = _experiment(tmp_path, exp_id)
    try:
        with pytest.raises(pickle.UnpicklingError, match="simulated"):
            failing.resume()
    finally:
        failing.stop()
        failing.save_checkpoint()  # what the atexit hook would do
    assert state_file.read_bytes() == good_bytes
    assert (ckpt_dir / "config.json").read_bytes() == config_bytes
    assert (ckpt_dir / "state.ckpt.torch.bak").read_bytes() == good_bytes


# --- TunerCommandChannel.receive --------------------------------------------------------------------
class _FakeWsClient:
    """Stands in for WsChannelClient: returns scripted commands, then None (connection closed)."""

    def __init__(self, commands):
        self._commands = list(commands)

    def receive(self):
        return self._commands.pop(0) if self._commands else None


def _channel(commands) -> TunerCommandChannel:
    channel = TunerCommandChannel("ws://localhost:1/tuner")  # the constructor does not connect
    channel._channel = _FakeWsClient(commands)
    return channel


IMPORT_DATA = {"type": CommandType.ImportData.value,
               "content": json.dumps([{"parameter": {"a": 1}, "value": 0.5}])}


def test_receive_skips_unknown_commands():
    channel = _channel([
        IMPORT_DATA,
        {"type": CommandType.Ping.value, "content": ""},
        {"type": "ZZ", "content": ""},  # not even a CommandType
        {"type": CommandType.RequestTrialJobs.value, "content": "2"},
    ])
    assert channel.receive() == RequestTrialJobs(2)
    assert isinstance(channel.receive(), Terminate)  # connection closed


def test_original_receive_dies_on_import_data():
    # Documents the NNI bug the patch works around.
    channel = _channel([IMPORT_DATA])
    with pytest.raises(ValueError, match="Unknown command type"):
        TunerCommandChannel.receive.__wrapped__(channel)


def test_receive_still_raises_on_malformed_known_commands():
    channel = _channel([{"type": CommandType.RequestTrialJobs.value, "content": '"two"'}])
    with pytest.raises(TypeError):
        channel.receive()


def test_listener_thread_survives_import_data():
    channel = _channel([IMPORT_DATA, {"type": CommandType.RequestTrialJobs.value, "content": "3"},
                        {"type": CommandType.Terminate.value, "content": ""}])
    requested = []
    channel.on_request_trial_jobs(lambda command: requested.append(command.count))
    stop = threading.Event()
    listener = threading.Thread(target=channel.listen, args=(stop,), daemon=True)
    listener.start()
    listener.join(timeout=10)
    assert not listener.is_alive()
    assert requested == [3] and stop.is_set()


# --- mutation_summary -------------------------------------------------------------------------------
def test_experiment_models_dump_mutation_summary(tmp_path, monkeypatch):
    # The sequential engine leaves nni.trial._params set to its last model (sequential.py
    # _run_single_model restores the channel only), which makes mock_runtime refuse to run.
    monkeypatch.setattr(nni.trial, "_params", None)
    exp = compat.DiffusionNAGExperiment(NasBench201(), SampleLengthEvaluator(), Random(),
                                        _sequential_config(tmp_path, 1))
    space = exp.executable_model_factory(SimplifiedModelFormatConfig())
    assert isinstance(space, compat.MutationSummaryModelSpace)
    model = space.freeze(SAMPLE)
    assert isinstance(model, compat.MutationSummaryModelSpace)

    payload = nni.dump(model)
    data = json.loads(payload)
    assert data["mutation_summary"] == SAMPLE
    assert data["sample"] == SAMPLE
    assert data["__instance_type__"] == "path:nni_diffusionnag.integration.compat.MutationSummaryModelSpace"
    assert "mutation_summary" not in json.loads(nni.dump(space))  # not frozen: nothing to summarise

    loaded = nni.load(payload)
    assert type(loaded) is compat.MutationSummaryModelSpace
    assert loaded.sample == SAMPLE and loaded.status == model.status
    with Evaluator.mock_runtime(loaded):
        assert loaded.execute() == float(sum(len(v) for v in SAMPLE.values()))


@light_job
def trial_process_loads_the_model():
    # What a 'ts' trial does with its parameters: nni.load the payload in a fresh interpreter, in
    # the experiment's cwd, and build the network. The class must be importable by its path.
    space = compat.MutationSummaryModelSpace.from_model(NasBench201(), None)  # in the main thread
    payload = nni.dump(space.freeze(SAMPLE))
    code = (
        "import sys, warnings; warnings.simplefilter('ignore');"
        "import nni, torch; m = nni.load(sys.stdin.read());"
        "net = m.executable_model();"
        "print(type(m).__module__, type(m).__name__, tuple(net(torch.zeros(1, 3, 32, 32)).shape))"
    )
    return lambda: subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, text=True,
                                  cwd=REPO_ROOT, timeout=120, env=BASE_ENV)


@pytest.mark.background_job("trial_process_loads_the_model")
def test_trial_process_can_load_the_model(background_result):
    """The interpreter runs on the background subprocess worker (tests/helpers.py)."""
    result = background_result()
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["nni_diffusionnag.integration.compat", "MutationSummaryModelSpace", "(1,", "10)"]


def test_manager_still_initializing_is_waited_for_not_a_failed_start(monkeypatch):
    from nni.experiment import launcher, rest

    answers = iter([ConnectionError("refused")] * 3 + [ValueError("Expecting value: 'INITIALIZING'")] * 4 + [{}])

    def get(port, api, prefix=None):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = [0.0]
    monkeypatch.setattr(rest, "get", get)
    monkeypatch.setattr("time.sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    launcher._check_rest_server(8080)  # 7 failed answers in 3.5 s: NNI's own check gives up after 3
    assert clock[0] == 3.5 and next(answers, None) is None
    answers = iter([ValueError("Expecting value")] * 1000)
    with pytest.raises(ValueError, match="Expecting value"):  # a manager that never comes up still fails
        launcher._check_rest_server(8080)
    assert compat.MANAGER_START_TIMEOUT <= clock[0] - 3.5 <= compat.MANAGER_START_TIMEOUT + 0.5
    assert getattr(launcher._check_rest_server, compat._PATCH_MARKER)
