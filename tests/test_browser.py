"""Headless Chromium opens the web portal of a running DiffusionNAG experiment and checks that the
trials list shows our trials with their architecture (expanded rows) and final metrics.

Chromium is driven over the DevTools protocol with the ``websockets`` package NNI already depends
on (no chromedriver, nothing downloaded). The screenshot and the DOM are kept under
``test-artifacts/`` (CI keeps that folder).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from nni_diffusionnag.integration.compat import free_port
from helpers import check_jobs

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class DevTools:
    """Minimal Chrome DevTools protocol client (one page)."""

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

    def close(self) -> None:
        self._ws.close()


@pytest.fixture
def chromium(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; scripts/setup.sh installs it as root)")
    debug_port = free_port()
    procs = []

    def open_page(url: str) -> DevTools:
        proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1400,1400",
             f"--remote-debugging-port={debug_port}", "--remote-allow-origins=*", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return DevTools(pages[0]["webSocketDebuggerUrl"])
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port (exit code {proc.poll()})")
            time.sleep(0.5)

    yield open_page
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_portal_trials_list_shows_architectures_and_metrics(chromium, ts_experiment):
    """The portal of the shared 'ts' experiment (tests/conftest.py), still running after its trials."""
    exp, evaluator, jobs, trials = ts_experiment.exp, ts_experiment.evaluator, ts_experiment.jobs, ts_experiment.trials
    assert not ts_experiment.stopped
    check_jobs(jobs, evaluator, trials)
    page = chromium(f"http://localhost:{exp.port}/detail")
    try:
        page.wait_for(f"document.querySelectorAll('[data-automation-key=\"_expand\"]').length >= {trials}")
        page.js("""document.querySelectorAll('[data-automation-key="_expand"]').forEach(cell =>
                    (cell.querySelector('button, [role=button], i') || cell).click())""")
        time.sleep(2)
        text = page.js("document.body.innerText")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "portal-detail.txt").write_text(text)
        page("Emulation.setDeviceMetricsOverride", width=1400,
             height=int(page.js("document.documentElement.scrollHeight")) + 50, deviceScaleFactor=1, mobile=False)
        shot = page("Page.captureScreenshot", format="png")["data"]
        (ARTIFACTS / "portal.png").write_bytes(base64.b64decode(shot))
    finally:
        page.close()

    # The trials list: one block per trial, from its ID to the next trial's row.
    ids = [job.trialJobId for job in jobs]
    positions = sorted((text.index(i), i) for i in ids)  # every trial is listed
    for k, (start, trial_id) in enumerate(positions):
        block = text[start:positions[k + 1][0] if k + 1 < len(positions) else len(text)]
        job = next(j for j in jobs if j.trialJobId == trial_id)
        sample = job.hyperParameters[0].parameters["sample"]
        assert "SUCCEEDED" in block, block
        shown = re.search(r"([0-9.]+) \(FINAL\)", block)
        assert shown, f"no final metric shown for {trial_id}: {block}"
        assert float(shown.group(1)) == pytest.approx(evaluator.table.lookup(sample), abs=1e-4)
        for label, value in sample.items():  # the architecture, in the expanded row's parameters
            assert f'{label}:"{value}"' in block, f"{label}={value} not shown for {trial_id}: {block}"
