"""Meta-surrogate (transferable NAS): training, checkpoints, CLI, strategy integration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nni
from nni_diffusionnag.exceptions import SpaceMismatchError
from nni_diffusionnag.transfer.meta import load_meta, train_meta
from nni_diffusionnag.nn.surrogate import SurrogateConfig
from nni_diffusionnag.space import NasBench201Space

TINY = SurrogateConfig(hidden=16, num_layers=2, ensemble=2, steps=40, batch_size=64)



def _convs(types: np.ndarray) -> np.ndarray:
    return (np.asarray(types)[:, 1:-1] == 4).sum(1).astype(float)  # any fixed op code works


def test_train_meta_roundtrip_and_adapt(tmp_path):
    space = NasBench201Space()
    rng = np.random.default_rng(0)
    a, b = space.random_types(200, rng), space.random_types(200, rng)
    tasks = {"t1": (a, _convs(a)), "t2": (b, 100 + 10 * _convs(b))}  # different scales mix
    path = tmp_path / "meta.pt"
    meta = train_meta(space, tasks, TINY, output=path, progress=False)
    loaded = load_meta(path, space)
    assert loaded.tasks == ["t1", "t2"] and loaded.config == TINY
    x = space.random_types(16, rng)
    np.testing.assert_allclose(meta.predict(x)[0], loaded.predict(x)[0], rtol=1e-5, atol=1e-5)
    adapted = loaded.adapt(x[:4], _convs(x[:4]), steps=5)
    assert adapted is not loaded.surrogate and adapted.config.steps == 5


def test_meta_for_another_space_is_refused(tmp_path):
    space = NasBench201Space()
    types = space.random_types(50, np.random.default_rng(0))
    path = tmp_path / "meta.pt"
    train_meta(space, {"t": (types, _convs(types))}, TINY, output=path, progress=False)
    class Other(NasBench201Space):  # other decision labels: another space signature
        @property
        def signature_labels(self):
            return tuple("other/" + lab for lab in super().signature_labels)

    other = Other()
    with pytest.raises(SpaceMismatchError):
        load_meta(path, other)


def test_cli_train_meta(tmp_path, nb201_csv):
    from nni_diffusionnag.cli import main

    df = pd.read_csv(nb201_csv).sample(300, random_state=0)
    csv = tmp_path / "small.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "m.pt"
    assert main(["train-meta", "--task", f"c10={csv}:cifar10_test_acc", "--task", f"c100={csv}:cifar100_test_acc",
                 "--output", str(out), "--steps", "30", "--ensemble", "2", "--hidden", "16"]) == 0
    assert load_meta(out, NasBench201Space()).tasks == ["c10", "c100"]
    with pytest.raises(SystemExit, match="no column 'nope'"):
        main(["train-meta", "--task", f"c10={csv}:nope", "--output", str(out)])
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"arch": ["|foo~0|+|bar~0|baz~1|"], "acc": [1.0]}).to_csv(bad, index=False)
    with pytest.raises(SystemExit, match="unknown architecture"):
        main(["train-meta", "--task", f"x={bad}", "--output", str(out)])


def test_strategy_with_meta_predictor_starts_better(tmp_path, nb201_csv):
    """Meta-trained on CIFAR-10, searching CIFAR-100: the first 5 trained are better than without."""
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.hub.pytorch import NasBench201
    from nni.nas.space import SimplifiedModelSpace

    from nni_diffusionnag.integration.evaluators import TabularEvaluator
    from nni_diffusionnag.transfer.meta import read_task_csv
    from nni_diffusionnag.prior.model import SamplerConfig
    from nni_diffusionnag.integration.strategy import DiffusionNAG

    space = NasBench201Space()
    types, values = read_task_csv(space, nb201_csv, "cifar10_test_acc")
    path = tmp_path / "meta.pt"
    train_meta(space, {"c10": (types, values)}, SurrogateConfig(hidden=16, ensemble=3, steps=150, batch_size=256),
               output=path, progress=False)
    fast = dict(sampler=SamplerConfig(num_steps=10), n_candidates=40, device="cpu", batch_size=5,
                surrogate=SurrogateConfig(hidden=16, ensemble=3, steps=60))

    def first5(**kw):
        engine = SequentialExecutionEngine(max_model_count=5)
        model_space = SimplifiedModelSpace.from_model(NasBench201(), TabularEvaluator(str(nb201_csv), "cifar100_test_acc"))
        strategy = DiffusionNAG(seed=0, **fast, **kw)
        strategy(model_space, engine)
        nni.trial._params = None
        state = strategy.state_dict()  # keeps working with a meta-surrogate
        assert len(state["history"]) == 5
        return np.mean([h["metric"] for h in strategy.history()])

    with_meta, without = first5(meta_predictor=str(path)), first5(warmup=5)
    assert with_meta > without, (with_meta, without)


def test_cli_train_meta_with_datasets(tmp_path, nb201_csv):
    from nni_diffusionnag.cli import main
    from nni_diffusionnag.transfer.dataset_encoding import load_dataset_meta
    from nni_diffusionnag.integration.evaluators import load_digits_tensors

    df = pd.read_csv(nb201_csv).sample(200, random_state=1)
    csv = tmp_path / "small.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "dm.pt"
    assert main(["train-meta", "--task", f"even={csv}:cifar10_test_acc@digits:0,2,4,6,8",
                 "--task", f"odd={csv}:cifar100_test_acc@digits:1,3,5,7,9", "--output", str(out), "--steps", "20"]) == 0
    predictor = load_dataset_meta(out, NasBench201Space())
    x, y, _, _ = load_digits_tensors(32)
    assert predictor.encode((x, y)).shape == (predictor.model.config["task_dim"],)
    with pytest.raises(SystemExit, match="every task a dataset"):
        main(["train-meta", "--task", f"even={csv}:cifar10_test_acc@digits:0,2", "--task", f"b={csv}:cifar100_test_acc",
              "--output", str(out)])
