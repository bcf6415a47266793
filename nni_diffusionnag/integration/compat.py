"""Fixes that NNI 3.0 needs on this stack (torch >= 2.6, numpy 2, web portal of NNI 3.0).

NNI 3.0 (2023-09) is the last release and is unmaintained, so the fixes are carried here as
small, idempotent monkey patches applied by :func:`install`. Every NNI-facing module of this
package calls :func:`install` when it is imported; calling it again is a no-op (apart from
re-adding the warnings filter, which test runners such as pytest reset between tests).

What :func:`install` does, and why:

1. Ignores the harmless ``"... is found to be not a nn.Module"`` ``RuntimeWarning`` that
   ``nni/nas/nn/pytorch/layers.py`` (L94) emits for every new non-module class in ``torch.nn``
   (``Buffer``, ``LinearCrossEntropyOptions``) on each import.
2. Makes the default NAS checkpoint serializer a :class:`TrustedTorchSerializer`. NNI's
   ``TorchSerializer.load`` (``nni/nas/utils/serializer.py`` L145-148) calls ``torch.load`` with
   torch's default ``weights_only=True`` (torch >= 2.6), which cannot unpickle the numpy
   ``RandomState`` that every built-in strategy stores, so ``NasExperiment.resume()`` fails.
3. Guards ``NasExperiment.load_checkpoint``/``save_checkpoint`` so that a failed resume never
   overwrites the good checkpoint: after ``load_checkpoint`` raises (``experiment.py`` L410),
   ``stop()`` - called by the user or by the ``atexit`` hook registered in ``start()`` (L255) -
   runs ``save_checkpoint()`` (L278) and would write the fresh, empty strategy state over the
   file it just failed to read.
4. Lets ``TunerCommandChannel.receive`` skip commands it does not know (``ImportData``, which the
   NNI manager sends on resume, ``Ping``, ...). Unpatched, it raises ``ValueError`` (``channel.py``
   L204), which kills the engine's listener thread: no more trial requests arrive and the
   strategy waits forever.
5. Gives the NNI manager :data:`MANAGER_START_TIMEOUT` seconds to come up when an experiment is
   started from Python. ``launcher._check_rest_server`` (``nni/experiment/launcher.py`` L193-202)
   tries three times a second apart and counts any answer that is not JSON as a failure, but a
   manager that is still starting answers ``INITIALIZING`` as plain text; on a busy machine that
   phase lasts longer than 3 s and ``NasExperiment.run()`` fails with "Create experiment failed:
   Expecting value". ``nnictl`` has its own check, which waits 20 s and takes any answer.

In addition, :class:`DiffusionNAGExperiment` is a ``NasExperiment`` whose models dump
``mutation_summary`` (the sample) so that the hyper-parameter chart of NNI's web portal shows
the architecture choices again (NNI 3.0 regression, nni#5686).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = [
    "install",
    "is_installed",
    "TrustedTorchSerializer",
    "MutationSummaryModelSpace",
    "DiffusionNAGExperiment",
]

_logger = logging.getLogger(__name__)

# Regex for warnings.filterwarnings (matched against the start of the message).
_NOT_A_MODULE_MESSAGE = r".*is found to be not a nn\.Module"


def _install_warning_filter() -> None:
    # ``warnings.filterwarnings`` removes an identical filter before inserting it, so this is
    # idempotent. It must run before ``nni.nas.nn.pytorch`` is first imported (the warnings are
    # emitted at import time), hence also at the import of this module, below.
    warnings.filterwarnings("ignore", message=_NOT_A_MODULE_MESSAGE, category=RuntimeWarning)


_install_warning_filter()

import torch  # noqa: E402  (after the warnings filter on purpose)
from nni.nas.experiment import NasExperiment  # noqa: E402
from nni.nas.experiment.config import SimplifiedModelFormatConfig  # noqa: E402
from nni.nas.space import ExecutableModelSpace, SimplifiedModelSpace  # noqa: E402
from nni.nas.utils import serializer as _nni_serializer  # noqa: E402
from nni.nas.utils.serializer import TorchSerializer, _find_path_with_prefix  # noqa: E402
from nni.runtime.tuner_command_channel.channel import TunerCommandChannel  # noqa: E402

_install_lock = threading.Lock()
_installed = False

# Marker attribute set on our replacement functions, so that a second install() (even after
# ``importlib.reload`` of this module, which resets ``_installed``) never wraps a wrapper.
_PATCH_MARKER = "_nni_diffusionnag_patch"


def _patch_experiment_start() -> None:
    """Install the portal fix (:mod:`.portal_fix`, an overlay copy of NNI's node files on disk)
    when an experiment starts its manager, not when this package is imported."""
    from nni.experiment import Experiment

    original = Experiment._start_nni_manager

    def start_nni_manager(self: Any, *args: Any, **kwargs: Any) -> Any:
        from . import portal_fix

        portal_fix.install()
        return original(self, *args, **kwargs)

    # NasExperiment's own _start_nni_manager ends in this one (super()), HPO experiments call it directly
    Experiment._start_nni_manager = start_nni_manager


#: Seconds an experiment started from Python waits for its NNI manager's REST server (item 5).
MANAGER_START_TIMEOUT = 60.0


def _patch_rest_server_check() -> None:
    """Wait up to :data:`MANAGER_START_TIMEOUT` s for the manager to answer ``/check-status`` with
    JSON, instead of NNI's three tries a second apart (see item 5 of the module docstring)."""
    import time

    from nni.experiment import launcher, rest

    if getattr(launcher._check_rest_server, _PATCH_MARKER, False):
        return

    def check_rest_server(port: int, retry: int = 3, url_prefix: Optional[str] = None) -> None:
        deadline = time.monotonic() + MANAGER_START_TIMEOUT
        while True:
            try:
                rest.get(port, "/check-status", url_prefix)
                return
            except Exception:  # noqa: BLE001 - not up yet, or 'INITIALIZING' (not JSON): as NNI, retry
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    setattr(check_rest_server, _PATCH_MARKER, True)
    launcher._check_rest_server = check_rest_server


def is_installed() -> bool:
    """Whether :func:`install` has run in this process."""
    return _installed


def install() -> None:
    """Apply all NNI 3.0 compatibility fixes of this module (idempotent, thread-safe).

    Safe to call any number of times; the monkey patches are applied once per process. The
    warnings filter is re-added on every call because test runners reset ``warnings.filters``.
    """
    global _installed
    _install_warning_filter()
    with _install_lock:
        if _installed:
            return
        _install_trusted_serializer()
        _patch_checkpoint_guard()
        _patch_tuner_channel_receive()
        _patch_experiment_start()
        _patch_rest_server_check()
        _installed = True
        _logger.debug("NNI 3.0 compatibility fixes installed")


# ---------------------------------------------------------------------------------------------
# 2. Trusted torch serializer
# ---------------------------------------------------------------------------------------------
class TrustedTorchSerializer(TorchSerializer):
    """``TorchSerializer`` that can read NNI's own NAS checkpoints on torch >= 2.6.

    Strategy states hold numpy ``RandomState`` tuples (and, for custom strategies, arbitrary
    Python objects), which ``torch.load(weights_only=True)`` refuses. The checkpoint is the
    experiment's own file in its working directory, written by the same code that reads it, so
    loading it with ``weights_only=False`` trusts nothing that is not already trusted. Do not
    point it at checkpoints from untrusted sources (pickle can execute code).

    Saving is atomic (temporary file + ``os.replace``), so a crash while writing never leaves a
    truncated ``state.ckpt.torch`` in place of the previous good one.

    Parameters
    ----------
    map_location
        Passed to :func:`torch.load`.
    """

    def save(self, checkpoint: Any, path: Path) -> None:
        target = Path(str(path) + self.suffix)
        tmp = target.with_name(target.name + ".tmp")
        torch.save(checkpoint, str(tmp))
        os.replace(tmp, target)

    def load(self, path: Path) -> Any:
        found = _find_path_with_prefix(Path(path), self.suffix)
        return torch.load(str(found), map_location=self._map_location, weights_only=False)


def _install_trusted_serializer() -> None:
    # ``get_default_serializer()`` creates a plain TorchSerializer on first use. Replace only
    # that default (keeping its map_location); a serializer chosen by the user (JsonSerializer,
    # a custom one) is left alone.
    current = _nni_serializer.get_default_serializer()
    if type(current) is TorchSerializer:
        _nni_serializer.set_default_serializer(
            TrustedTorchSerializer(map_location=getattr(current, "_map_location", None)))
        _logger.debug("Default NAS checkpoint serializer set to TrustedTorchSerializer")


# ---------------------------------------------------------------------------------------------
# 3. A failed resume must not overwrite the good checkpoint
# ---------------------------------------------------------------------------------------------
# NasExperiment.resume() -> start() -> _start_engine_and_strategy() creates the engine and then
# calls load_checkpoint() a second time, now with ``self._engine`` set, to restore the strategy
# and engine state (experiment.py L219-220, L407-414). If that raises, start() propagates the
# error but has already registered ``atexit.register(self.stop)`` (L255); stop() then calls
# save_checkpoint() (L278), which writes ``self.state_dict()`` of the fresh strategy over the
# file that could not be read: the search history is gone. We record the failure on the
# experiment and make save_checkpoint() a no-op for it; the state file is also copied to
# ``state.ckpt.torch.bak`` before NNI touches it, as a second line of defence.
_RESUME_FAILED_ATTR = "_dnag_state_restore_failed"
_BACKUP_SUFFIX = ".bak"


def _state_file(experiment: NasExperiment) -> Path | None:
    """The existing ``state.ckpt*`` file of the experiment's current serializer, if any."""
    base = experiment._checkpoint_directory / "state.ckpt"
    suffix = getattr(_nni_serializer.get_default_serializer(), "suffix", "")
    candidate = Path(str(base) + suffix)
    return candidate if candidate.is_file() else None


def _patch_checkpoint_guard() -> None:
    if getattr(NasExperiment.load_checkpoint, _PATCH_MARKER, False):
        return
    original_load = NasExperiment.load_checkpoint
    original_save = NasExperiment.save_checkpoint

    def load_checkpoint(self: NasExperiment) -> None:
        if getattr(self, "_engine", None) is None:
            # First call of resume()/view(): only config.json is read; nothing to guard.
            return original_load(self)
        state_file = _state_file(self)
        if state_file is not None:
            try:
                shutil.copy2(state_file, state_file.with_name(state_file.name + _BACKUP_SUFFIX))
            except OSError as err:  # a failed backup must not prevent the resume itself
                _logger.warning("Could not back up %s before resuming: %s", state_file, err)
        try:
            original_load(self)
        except BaseException:
            setattr(self, _RESUME_FAILED_ATTR, True)
            _logger.error(
                "Restoring the experiment state from %s failed. The checkpoint is kept as it is: "
                "this experiment object will not save checkpoints.", self._checkpoint_directory)
            raise
        setattr(self, _RESUME_FAILED_ATTR, False)

    def save_checkpoint(self: NasExperiment) -> None:
        if getattr(self, _RESUME_FAILED_ATTR, False):
            _logger.warning(
                "Not saving a checkpoint to %s: restoring it failed, so this experiment's state is "
                "not the saved one and would overwrite it.", self._checkpoint_directory)
            return
        return original_save(self)

    for fn, orig in ((load_checkpoint, original_load), (save_checkpoint, original_save)):
        fn.__doc__ = orig.__doc__
        fn.__wrapped__ = orig  # type: ignore[attr-defined]
        setattr(fn, _PATCH_MARKER, True)
    NasExperiment.load_checkpoint = load_checkpoint  # type: ignore[method-assign]
    NasExperiment.save_checkpoint = save_checkpoint  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# 4. TunerCommandChannel.receive: skip unknown commands
# ---------------------------------------------------------------------------------------------
def _is_unknown_command_error(err: ValueError) -> bool:
    # receive() raises ``ValueError('Unknown command type: CommandType.ImportData')`` for known
    # enum members it does not handle (channel.py L204); _receive() raises
    # ``ValueError("'XY' is not a valid CommandType")`` for type codes outside the enum (L274).
    message = str(err)
    return message.startswith("Unknown command type") or "is not a valid CommandType" in message


def _patch_tuner_channel_receive() -> None:
    if getattr(TunerCommandChannel.receive, _PATCH_MARKER, False):
        return
    original_receive: Callable[[TunerCommandChannel], Any] = TunerCommandChannel.receive

    def receive(self: TunerCommandChannel) -> Any:
        # The offending command has already been consumed from the websocket when the error is
        # raised, so calling the original again simply reads the next command.
        while True:
            try:
                return original_receive(self)
            except ValueError as err:
                if not _is_unknown_command_error(err):
                    raise
                _logger.debug("Ignoring a tuner command that the NAS engine does not handle: %s", err)

    receive.__doc__ = original_receive.__doc__
    receive.__wrapped__ = original_receive  # type: ignore[attr-defined]
    setattr(receive, _PATCH_MARKER, True)
    TunerCommandChannel.receive = receive  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# Web portal: mutation_summary
# ---------------------------------------------------------------------------------------------
class MutationSummaryModelSpace(SimplifiedModelSpace):
    """``SimplifiedModelSpace`` whose dump also carries ``mutation_summary`` (= the sample).

    NNI 3.0's web portal still reads the 2.x key ``mutation_summary`` of a trial's parameters
    for ``retiarii``-tagged experiments; without it the hyper-parameter chart plots the keys of
    the 3.0 payload (``model_symbol``, ``__instance_type__``, ...) as ``[object Object]``.
    The class lives at module level so that trial processes can import it by its path
    (``nni_diffusionnag.integration.compat.MutationSummaryModelSpace``) when they load the payload.
    """

    def _dump(self) -> dict:
        rv = super()._dump()
        if self.sample is not None:
            # A plain dict copy: the portal needs {label: value}, nothing else.
            rv["mutation_summary"] = dict(self.sample)
        return rv

    @classmethod
    def _load(cls, **attrs: Any) -> SimplifiedModelSpace:
        # Derived from 'sample', which the parent restores; drop it explicitly rather than rely
        # on the parent ignoring unknown keys.
        attrs.pop("mutation_summary", None)
        return super()._load(**attrs)


class DiffusionNAGExperiment(NasExperiment):
    """``NasExperiment`` with the fixes of this module, for a search that survives what users meet.

    Takes the same arguments as :class:`nni.nas.experiment.NasExperiment`. On top of NNI:

    - **durable progress**: with a :class:`~nni_diffusionnag.DiffusionNAG` strategy, the
      experiment checkpoint (strategy and engine state) is written after every result, atomically,
      so a SIGKILL, an OOM kill or a lost node costs at most the trials that were running; NNI
      itself saves only at start and stop. ``resume()`` restores every finished result and trains
      none of them again;
    - **failures never end the search**: ``continue_on_failure`` is set on the sequential engine
      (NNI's default stops the whole search at the first evaluator that raises);
    - ``mutation_summary`` in trial payloads: with the ``'simplified'`` model format (the
      default), executable models are :class:`MutationSummaryModelSpace`, so the web portal shows
      the architecture choices.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        install()
        super().__init__(*args, **kwargs)
        engine = getattr(self.config, "execution_engine", None)
        if engine is not None and hasattr(engine, "continue_on_failure") and not engine.continue_on_failure:
            engine.continue_on_failure = True
            _logger.info("DiffusionNAGExperiment: continue_on_failure set, so a failing trial never ends the search")
        if hasattr(self.strategy, "persist"):
            self.strategy.persist = self._save_progress
        if hasattr(self.strategy, "prediction_log"):
            from ..search.core import PREDICTIONS_FILE

            self.strategy.prediction_log = self._checkpoint_directory / PREDICTIONS_FILE
        self._progress_lock = threading.Lock()

    def resume(self, port: int = 8080, wait_completion: bool = True, debug: bool = False) -> Any:
        """NNI's ``resume``, after checks that turn NNI's obscure failures into what to do."""
        self._check_resumable(port)
        return super().resume(port, wait_completion, debug)

    def _check_resumable(self, port: int) -> None:
        config_file = self._checkpoint_directory / "config.json"
        if not config_file.is_file():
            raise RuntimeError(f"DiffusionNAGExperiment: nothing to resume for id {self.id!r}: no {config_file} "
                               "(give the experiment_working_directory and id of the run to resume)")
        saved = json.loads(config_file.read_text()).get("trialCodeDirectory")
        if saved and Path(saved).resolve() != Path.cwd().resolve():
            # NNI requires NAS trials to run in the directory the experiment runs in
            raise RuntimeError(f"DiffusionNAGExperiment: resume experiment {self.id!r} from {saved}, the directory it "
                               f"was started in (now in {Path.cwd()}): NNI runs NAS trials in that directory")
        if self._nni_manager_required() and not _port_free(port):
            raise RuntimeError(
                f"DiffusionNAGExperiment: port {port} is in use. If the earlier run of experiment {self.id!r} was "
                f"killed, its NNI manager (and trials) may still be running: stop them with `nnictl stop {self.id}` "
                f"and resume again, or resume on another port")

    def _save_progress(self) -> None:
        if getattr(self, "_engine", None) is None or getattr(self, _RESUME_FAILED_ATTR, False):
            return
        with self._progress_lock:
            self.save_checkpoint()

    def executable_model_factory(self, config: Any) -> ExecutableModelSpace:
        from nni.nas.nn.pytorch import ModelSpace

        if isinstance(config, SimplifiedModelFormatConfig):
            if not isinstance(self.model_space, ModelSpace):
                # Same check (and message) as NasExperiment.executable_model_factory.
                raise TypeError("Model space must inherit ModelSpace and also be a PyTorch model.")
            return MutationSummaryModelSpace.from_model(self.model_space, self.evaluator)
        return super().executable_model_factory(config)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    """A localhost TCP port that nothing listens on now, for an experiment's web portal."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]
