"""Evaluators: NB201 table, TabularEvaluator in NNI experiments, digits training."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nni_diffusionnag.integration import compat  # noqa: F401  (installs the warnings filter first)
from nni_diffusionnag.integration.evaluators import NB201Table, TabularEvaluator, load_nb201_table, train_digits

import nni  # noqa: E402  (after our modules: they install the warnings filter first)
from nni.nas.evaluator import FunctionalEvaluator  # noqa: E402
from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.experiment import NasExperiment, NasExperimentConfig  # noqa: E402
from nni.nas.hub.pytorch import NasBench201  # noqa: E402
from nni.nas.space import ModelStatus, SimplifiedModelSpace  # noqa: E402
from nni.nas.strategy import Random  # noqa: E402



@pytest.fixture(scope="module")
def table_csv(nb201_csv) -> Path:
    return nb201_csv


def _first_rows(path: Path, n: int):
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return [next(reader) for _ in range(n)]


# --- NB201Table -------------------------------------------------------------------------------------
def test_table_reads_the_chosen_column(table_csv):
    c10 = NB201Table(table_csv, "cifar10_test_acc")
    c100 = NB201Table(table_csv, "cifar100_test_acc")
    assert len(c10) == len(c100) == 15625
    for row in _first_rows(table_csv, 3):
        assert c10[row["arch"]] == float(row["cifar10_test_acc"])
        assert c100[row["arch"]] == float(row["cifar100_test_acc"])
    assert "cifar10_test_acc" in c10.columns and "arch" in c10.columns


def test_table_lookup_by_nni_sample(table_csv):
    table = load_nb201_table(table_csv, "cifar10_test_acc")
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    sample = {"cell/0_1": "conv_3x3", "cell/0_2": "none", "cell/1_2": "skip_connect",
              "cell/0_3": "avg_pool_3x3", "cell/1_3": "conv_1x1", "cell/2_3": "conv_3x3"}
    assert table.arch_of(sample) == arch
    assert table.lookup(sample) == table.lookup(arch) == table[arch]


def test_table_is_cached_per_process(table_csv):
    assert load_nb201_table(table_csv, "cifar10_test_acc") is load_nb201_table(str(table_csv), "cifar10_test_acc")
    assert load_nb201_table(table_csv, "cifar10_test_acc") is not load_nb201_table(table_csv, "cifar100_test_acc")


def test_table_missing_column_lists_available_columns(table_csv):
    with pytest.raises(ValueError) as info:
        NB201Table(table_csv, "imagenet_acc")
    message = str(info.value)
    assert "'imagenet_acc'" in message and "cifar10_test_acc" in message and "cifar100_test_acc" in message


def test_table_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        NB201Table(tmp_path / "nope.csv", "cifar10_test_acc")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_nb201_table(tmp_path / "nope.csv", "cifar10_test_acc")
    with pytest.raises(FileNotFoundError):
        TabularEvaluator(tmp_path / "nope.csv", "cifar10_test_acc")


def test_table_rejects_bad_rows(tmp_path):
    arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    bad_value = tmp_path / "bad_value.csv"
    bad_value.write_text(f"arch,acc\n{arch},n/a\n")
    with pytest.raises(ValueError, match="not a number"):
        NB201Table(bad_value, "acc")
    duplicate = tmp_path / "duplicate.csv"
    duplicate.write_text(f"arch,acc\n{arch},1.0\n{arch},2.0\n")
    with pytest.raises(ValueError, match="appears twice"):
        NB201Table(duplicate, "acc")
    no_arch = tmp_path / "no_arch.csv"
    no_arch.write_text("name,acc\nx,1.0\n")
    with pytest.raises(ValueError, match="no 'arch' column"):
        NB201Table(no_arch, "acc")


def test_table_unknown_architecture_error(tmp_path):
    arch = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    path = tmp_path / "one.csv"
    path.write_text(f"arch,acc\n{arch},10.0\n")
    table = NB201Table(path, "acc")
    assert table[arch] == 10.0
    with pytest.raises(KeyError, match="not in"):
        table["|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"]


# --- TabularEvaluator -------------------------------------------------------------------------------
def test_tabular_evaluator_serialises_as_path_and_column(table_csv):
    evaluator = TabularEvaluator(str(table_csv), "cifar100_test_acc")
    payload = nni.dump(evaluator)
    assert json.loads(payload) == {"__symbol__": "path:nni_diffusionnag.integration.evaluators.TabularEvaluator",
                                   "__kwargs__": {"csv_path": str(table_csv), "column": "cifar100_test_acc"}}
    loaded = nni.load(payload)
    assert isinstance(loaded, TabularEvaluator) and loaded == evaluator
    assert loaded.table is evaluator.table  # per-process cache


def test_tabular_evaluator_in_sequential_experiment(table_csv, tmp_path):
    evaluator = TabularEvaluator(table_csv, "cifar10_test_acc")
    config = NasExperimentConfig("sequential", "simplified")
    config.max_trial_number = 20
    config.experiment_working_directory = str(tmp_path)
    exp = NasExperiment(NasBench201(), evaluator, Random(seed=0), config)
    try:
        assert exp.run() is True
        models = exp.export_top_models(top_k=100)
    finally:
        exp.stop()
    assert len(models) == 20
    assert len({json.dumps(m.sample, sort_keys=True) for m in models}) == 20  # Random dedups
    table = evaluator.table
    for model in models:
        assert model.status == ModelStatus.Trained
        assert model.metric == table.lookup(model.sample)
    metrics = [m.metric for m in models]
    assert metrics == sorted(metrics, reverse=True)


# --- train_digits -----------------------------------------------------------------------------------
def test_train_digits_learns_above_chance(monkeypatch):
    monkeypatch.setattr(nni.trial, "_params", None)  # see test_compat: the sequential engine leaks it
    torch.manual_seed(0)
    # A small NB201 network (8 stem channels, 1 cell per stage) on 16x16 images keeps this to
    # about a second on a CPU; the defaults (full NB201, 32x32) are exercised by the examples.
    space = SimplifiedModelSpace.from_model(
        NasBench201(stem_out_channels=8, num_modules_per_stack=1),
        FunctionalEvaluator(train_digits, epochs=1, image_size=16, max_train_samples=512,
                            num_threads=1, device="cpu", seed=0))
    model = space.random(random_state=np.random.RandomState(0))
    threads = torch.get_num_threads()
    engine = SequentialExecutionEngine()
    engine.submit_models(model)
    assert model.status == ModelStatus.Trained
    assert len(model.metrics.intermediates) == 1
    assert model.metric == model.metrics.intermediates[-1]
    assert model.metric > 20.0, f"val acc {model.metric}% is not above chance (10%)"
    assert torch.get_num_threads() == threads


def test_train_digits_returns_accuracy_and_checks_outputs():
    torch.manual_seed(0)
    net = NasBench201(stem_out_channels=8, num_modules_per_stack=1).random(random_state=np.random.RandomState(1))
    acc = train_digits(net, epochs=1, image_size=8, max_train_samples=64, max_val_samples=64, num_threads=1)
    assert 0.0 <= acc <= 100.0
    wrong = NasBench201(stem_out_channels=8, num_modules_per_stack=1, num_labels=5).random()
    with pytest.raises(ValueError, match="10 outputs"):
        train_digits(wrong, epochs=1, image_size=8, max_train_samples=32, num_threads=1)
    with pytest.raises(ValueError, match="optimizer"):
        train_digits(net, optimizer="lbfgs")


# --- a real 'ts' experiment -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.stops_ts_experiment
def test_tabular_evaluator_in_ts_experiment(ts_experiment):
    """NNI manager + local training service: each model runs in a trial process that re-creates
    the evaluator and the model from the payload; metrics return over the tuner channel. The shared
    'ts' experiment (tests/conftest.py); this test stops it, so it runs last of those using it."""
    exp, evaluator, trials = ts_experiment.exp, ts_experiment.evaluator, ts_experiment.trials
    assert isinstance(evaluator, TabularEvaluator) and trials <= 10
    models, jobs, status = ts_experiment.models, ts_experiment.jobs, ts_experiment.status
    ts_experiment.stop()

    assert status == "DONE"
    assert len(models) == trials
    for model in models:
        assert model.metric == evaluator.table.lookup(model.sample)
    assert len(jobs) == trials and all(job.status == "SUCCEEDED" for job in jobs)
    for job in jobs:  # what the web portal's hyper-parameter chart reads
        parameters = job.hyperParameters[0].parameters
        assert parameters["mutation_summary"] == parameters["sample"]
    # Stopped: manager process gone, listener thread joined.
    assert exp._proc is None and exp.port is None
    assert not exp._engine._channel_listen_thread.is_alive()


def _fake_cifar(root: Path, n: int = 20) -> None:
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = rng.integers(0, 10, n).tolist()
        data = np.zeros((n, 3 * 32 * 32), dtype=np.uint8)
        for i, lab in enumerate(labels):  # a learnable signal: brightness encodes the class
            data[i] = 20 * lab + rng.integers(0, 10, 3 * 32 * 32)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)


def test_cifar10_loader_and_training_on_a_fake_archive(tmp_path):
    from nni_diffusionnag.integration.evaluators import load_cifar10_tensors, train_cifar10

    _fake_cifar(tmp_path)
    x_train, y_train, x_test, y_test = load_cifar10_tensors(tmp_path)
    assert x_train.shape == (100, 3, 32, 32) and x_test.shape == (20, 3, 32, 32)
    assert y_train.dtype == torch.int64 and int(y_train.max()) <= 9
    model = NasBench201(num_modules_per_stack=1, stem_out_channels=8).freeze(
        {k: "conv_3x3" for k in NasBench201().simplify()})
    acc = train_cifar10(model, data_dir=str(tmp_path), epochs=1, batch_size=50, device="cpu")
    assert 0.0 <= acc <= 100.0


def test_cifar10_missing_gives_a_clear_error(tmp_path):
    from nni_diffusionnag.integration.evaluators import load_cifar10_tensors

    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar10_tensors(tmp_path / "nothing")
