"""NNI's remote training service over SSH: trials of the DiffusionNAG tuner (nnictl route) run on
"another host" - Debian's openssh-server on a free localhost port with throw-away keys. The experiment
runs on the background nnictl worker (tests/helpers.py, nnictl_job) while other tests run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nni_diffusionnag.integration.compat import free_port
from helpers import FAST_TRIAL, META, _check_trials, _dispatcher_log, _nnictl, _rest, _wait_done, nnictl_env, nnictl_job

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def _need_sshd() -> None:
    for binary in (SSHD, Path(SSH_KEYGEN)):
        if not binary.is_file():
            pytest.skip(f"{binary} is missing (Debian package 'openssh-server'; scripts/setup.sh installs it as root)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root to accept logins (the test logs in as root)")


@contextlib.contextmanager
def sshd(tmp_path):
    """sshd on 127.0.0.1:<free port>, root login with a throw-away key only; yields (port, key, remote home)."""
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for name in ("host_key", "client_key"):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(d / name)], check=True)
    remote_home = tmp_path / "remote-home"  # the "remote" user's HOME: nni-experiments goes there, not to /root
    remote_home.mkdir()
    (d / "authorized_keys").write_text(f'environment="HOME={remote_home}" ' + (d / "client_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    (d / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitUserEnvironment yes
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.2)
        yield port, d / "client_key", remote_home
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@nnictl_job
def remote_training_service_over_ssh(tmp_path, tiny_prior_path, search_space):
    _need_sshd()
    (tmp_path / "home").mkdir()
    workdir = tmp_path / "experiments"
    env = nnictl_env(tmp_path)
    code = tmp_path / "code"
    code.mkdir()
    (code / "search_space.json").write_text(json.dumps(search_space))
    (code / "trial.py").write_text(FAST_TRIAL)

    def run() -> str:
        with sshd(tmp_path) as (ssh_port, key, remote_home):
            assert _nnictl("algo", "register", "--meta", str(META), env=env).returncode == 0
            config = {
                "experimentName": "dnag-remote-test",
                "searchSpaceFile": "search_space.json",
                "trialCommand": "python trial.py",  # python of pythonPath on the remote machine
                "trialCodeDirectory": ".",
                "trialConcurrency": 1,
                "maxTrialNumber": 3,
                "experimentWorkingDirectory": str(workdir),
                "tuner": {"name": "DiffusionNAG", "classArgs": {
                    "seed": 0, "warmup": 2, "batch_size": 1, "n_candidates": 20, "device": "cpu",
                    "prior": str(tiny_prior_path)}},
                "trainingService": {"platform": "remote", "reuseMode": False, "machineList": [{
                    "host": "127.0.0.1", "port": ssh_port, "user": "root", "sshKeyFile": str(key),
                    "pythonPath": str(Path(sys.executable).parent)}]},
            }
            (code / "config.yml").write_text(json.dumps(config))

            t0 = time.time()
            port = free_port()
            created = _nnictl("create", "--config", str(code / "config.yml"), "--port", str(port), env=env,
                              timeout=120)
            try:
                assert created.returncode == 0, created.stdout + created.stderr
                exp_id = _rest(port, "experiment")["id"]
                status = _wait_done(port, 3, t0 + 150)
                trials = _rest(port, "trial-jobs")
                log = _dispatcher_log(workdir, exp_id)
                manager_log = workdir / exp_id / "log" / "nnimanager.log"
                manager_log = manager_log.read_text()[-3000:] if manager_log.is_file() else ""
                assert status == "DONE", f"status {status} after {time.time() - t0:.0f} s\n{log[-2000:]}\n{manager_log}"
            finally:
                _nnictl("stop", "--port", str(port), env=env)
            report = f"remote over SSH: DONE in {time.time() - t0:.0f} s"
            _check_trials(trials, 3)
            assert (remote_home / "nni-experiments" / exp_id).is_dir()  # the trials really ran over SSH
        return report

    return run


@pytest.mark.slow
@pytest.mark.background_job("remote_training_service_over_ssh")
def test_remote_training_service_over_ssh(background_result):
    """The checks run in the job (remote_training_service_over_ssh, above): its assertions fail this test."""
    print("\n" + background_result())
