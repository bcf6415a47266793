"""The MobileNetV3 example runs end to end (small settings) and its FLOPs check agrees."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import BASE_ENV, subprocess_job

ROOT = Path(__file__).resolve().parents[1]


@subprocess_job
def mobilenetv3_flops_budget_example():
    env = {**BASE_ENV, "OMP_NUM_THREADS": "1"}
    return lambda: subprocess.run([sys.executable, str(ROOT / "examples" / "mobilenetv3_flops_budget.py"),
                                   "--measured", "3", "-n", "20", "--epochs", "1", "--train-samples", "64"],
                                  capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.background_job("mobilenetv3_flops_budget_example")
def test_mobilenetv3_flops_budget_example(background_result):
    """The example runs on the background subprocess worker (tests/helpers.py)."""
    out = background_result()
    assert out.returncode == 0, out.stderr[-2000:]
    within = re.search(r"generated 20 networks: ([\d.]+)% within 220 MFLOPs", out.stdout)
    assert within and float(within.group(1)) >= 95.0, out.stdout
    flops = re.search(r"FLOPs: exact model ([\d.]+) M, counted on the frozen model ([\d.]+) M", out.stdout)
    assert flops and flops.group(1) == flops.group(2) and float(flops.group(1)) <= 220, out.stdout
