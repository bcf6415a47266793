import json
import subprocess
import sys

import pytest

from nni_diffusionnag.cli import main
from nni_diffusionnag.space import NasBench201Space


def test_generate_writes_samples_and_quality(tiny_prior_path, tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    assert main(["generate", "--space", "nasbench201", "--prior", str(tiny_prior_path), "-n", "12",
                 "--steps", "5", "--output", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    space = NasBench201Space()
    assert len(rows) == 12
    for row in rows:
        assert set(row["sample"]) == set(space.labels)
        assert space.arch_to_sample(row["arch"]) == row["sample"]
    err = capsys.readouterr().err
    assert "validity (strict)" in err and "uniqueness" in err and "generated 12 graphs" in err


def test_train_prior_cli_resumes(tmp_path, capsys):
    path = tmp_path / "prior.pt"
    common = ["train-prior", "--space", "nasbench201", "--output", str(path), "--device", "cpu",
              "--batch-size", "16", "--checkpoint-every", "5"]
    assert main(common + ["--steps", "10"]) == 0
    assert main(common + ["--steps", "15"]) == 0  # continues from step 10
    from nni_diffusionnag.prior.model import DiffusionPrior

    assert DiffusionPrior.load(path, NasBench201Space()).meta["train_steps"] == 15
    assert main(common + ["--steps", "15", "--strip", "--no-resume"]) == 0
    assert "prior saved" in capsys.readouterr().out


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "nni_diffusionnag.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "train-prior" in res.stdout and "generate" in res.stdout


def test_unknown_space_is_a_clear_error():
    with pytest.raises(ValueError, match="known spaces"):
        main(["generate", "--space", "nb999", "-n", "1"])
