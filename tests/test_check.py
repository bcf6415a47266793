"""`nni-diffusionnag check CONFIG`: what `nnictl create` does not check in NNI 3.0, before it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_diffusionnag.cli import main
from nni_diffusionnag.integration.check import ConfigCheckError, check_config

from helpers import META

SPACE = {"lr": {"_type": "loguniform", "_value": [1e-3, 0.3]}, "act": {"_type": "choice", "_value": ["relu", "tanh"]}}


def _config(tmp_path: Path, tuner: dict, space: dict = SPACE) -> Path:
    (tmp_path / "search_space.json").write_text(json.dumps(space))
    config = {"searchSpaceFile": "search_space.json", "trialCommand": "python trial.py", "trialCodeDirectory": ".",
              "trialConcurrency": 1, "maxTrialNumber": 4, "tuner": tuner, "trainingService": {"platform": "local"}}
    path = tmp_path / "config.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


CLASS = {"codeDirectory": ".", "className": "nni_diffusionnag.tuner.DiffusionNAGTuner"}


@pytest.fixture(autouse=True)
def _own_nni_config(tmp_path, monkeypatch):
    monkeypatch.setenv("NNI_CONFIG_DIR", str(tmp_path / "nni-config"))  # an empty algorithm registry


def test_a_good_config_passes(tmp_path, capsys):
    path = _config(tmp_path, dict(CLASS, classArgs={"optimize_mode": "maximize", "seed": 0, "discretize": 4}))
    assert "OK" in check_config(path) and "2 decisions" in check_config(path)
    assert main(["check", str(path)]) == 0 and "OK" in capsys.readouterr().out


@pytest.mark.parametrize("class_args, space, match", [
    ({"warmpu": 3}, SPACE, r"unknown classArgs \['warmpu'\]"),
    ({"kappa": float("nan")}, SPACE, "kappa"),
    ({"acquisition": "typo"}, SPACE, "acquisition='typo' is invalid"),
    ({}, {"lr": {"_type": "logunifrom", "_value": [1e-3, 0.3]}}, "'lr' .* unknown _type 'logunifrom'"),
    ({"discretize": {"lrr": 4}}, SPACE, r"discretize names \['lrr'\]"),
])
def test_what_nnictl_create_accepts_and_the_dispatcher_refuses(tmp_path, capsys, class_args, space, match):
    path = _config(tmp_path, dict(CLASS, classArgs=class_args), space)
    with pytest.raises(ConfigCheckError, match=match):
        check_config(path)
    assert main(["check", str(path)]) == 2
    assert "config.yml" in capsys.readouterr().err


def test_the_tuner_must_be_diffusionnag_and_registered(tmp_path, monkeypatch):
    with pytest.raises(ConfigCheckError, match="the tuner 'TPE'"):
        check_config(_config(tmp_path, {"name": "TPE"}))
    path = _config(tmp_path, {"name": "DiffusionNAG", "classArgs": {"seed": 0}})
    with pytest.raises(ConfigCheckError, match="nnictl algo register --meta"):
        check_config(path)
    from nni.tools.nnictl.algo_management import read_reg_meta_list
    from nni.tools.package_utils.config_manager import register_algo_meta

    for meta in read_reg_meta_list(str(META)):  # what `nnictl algo register --meta` writes
        register_algo_meta(meta)
    assert "OK" in check_config(path)


def test_a_config_nni_cannot_read(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("trialCommand: python trial.py\ntuner: {name: DiffusionNAG}\n")  # no trainingService...
    with pytest.raises(ConfigCheckError, match="NNI cannot read this experiment config"):
        check_config(path)
    with pytest.raises(ConfigCheckError, match="no such experiment config file"):
        check_config(tmp_path / "missing.yml")
