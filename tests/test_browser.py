"""Headless Chromium opens the web portal of a running DiffusionNAG experiment and checks that the
trials list shows our trials with their architecture (expanded rows) and final metrics.

Chromium is driven over the DevTools protocol (tests/helpers.py ``DevTools``, with the
``websockets`` package NNI already depends on: no chromedriver, nothing downloaded). The
screenshot and the DOM are kept under ``test-artifacts/`` (CI keeps that folder).
"""

from __future__ import annotations

import re
import time

import pytest

from helpers import ARTIFACTS, CHROMIUM, check_jobs, launch_chromium, stop_process


@pytest.fixture
def chromium(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'; scripts/setup.sh installs it as root)")
    procs = []

    def open_page(url: str):
        proc, page = launch_chromium(url, tmp_path / "chrome")
        procs.append(proc)
        return page

    yield open_page
    for proc in procs:
        stop_process(proc)


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
        page.screenshot(ARTIFACTS / "portal.png")
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
