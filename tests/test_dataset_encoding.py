"""Dataset-aware meta-predictor f(x_t, t, D): set encoder, training, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_diffusionnag.transfer.dataset_encoding import (
    RandomConvExtractor,
    SetEncoder,
    TaskConditionedSurrogate,
    encode_dataset,
    load_dataset_meta,
    train_dataset_meta,
)
from nni_diffusionnag.exceptions import SpaceMismatchError
from nni_diffusionnag.space import NasBench201Space
from nni_diffusionnag.space.nasbench201 import NODE_TYPES

import sklearn  # noqa: E402,F401  (the digits tasks; in the examples extra, which `scripts/setup.sh test` installs)

CONV3 = NODE_TYPES.index("nor_conv_3x3")
SKIP = NODE_TYPES.index("skip_connect")
# (classes, favours conv_3x3?) : mostly-even digit sets favour conv_3x3 count, the others skip count
TRAIN_TASKS = [((0, 2, 4, 6, 8), True), ((1, 3, 5, 7, 9), False), ((1, 3, 5, 7, 0), False)]
HELD_OUT = ((0, 2, 4, 8, 3), True)  # resembles the first training task


def _metric(types: np.ndarray, conv: bool, rng: np.random.Generator) -> np.ndarray:
    ops = np.asarray(types)[:, 1:-1]
    count = (ops == (CONV3 if conv else SKIP)).sum(1).astype(float)
    return count + 0.1 * rng.standard_normal(len(count))


@pytest.fixture(scope="module")
def digits():
    from nni_diffusionnag.integration.evaluators import load_digits_tensors

    x, y, _, _ = load_digits_tensors(32, seed=0)
    return x, y


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    space = NasBench201Space()
    ext = RandomConvExtractor(seed=0)
    rng = np.random.default_rng(0)
    tasks = []
    for i, (classes, conv) in enumerate(TRAIN_TASKS):
        types = space.random_types(300, rng)
        feats = encode_dataset(digits, ext, images_per_class=16, seed=i, classes=classes)
        tasks.append((types, _metric(types, conv, rng), feats))
    path = tmp_path_factory.mktemp("dm") / "dataset_meta.pt"
    meta = train_dataset_meta(space, tasks, steps=150, seed=0, extractor=ext, output=path)
    return space, ext, meta, path


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_held_out_task_uses_dataset_encoding(trained, digits):
    space, ext, meta, _ = trained
    rng = np.random.default_rng(123)
    types = space.random_types(300, rng)
    classes, conv = HELD_OUT
    truth = _metric(types, conv, rng)
    right = meta.predict(types, encode_dataset(digits, ext, images_per_class=16, seed=99, classes=classes))
    wrong = meta.predict(types, encode_dataset(digits, ext, images_per_class=16, seed=99, classes=TRAIN_TASKS[1][0]))
    c_right, c_wrong = _corr(right, truth), _corr(wrong, truth)
    print(f"held-out corr: right task {c_right:.3f}, wrong task {c_wrong:.3f}")
    assert c_right > 0.5
    assert c_right > c_wrong + 0.3


def test_checkpoint_roundtrip_and_encode(trained, digits):
    space, ext, meta, path = trained
    loaded = load_dataset_meta(path, space)
    types = space.random_types(16, np.random.default_rng(5))
    feats = encode_dataset(digits, ext, images_per_class=8, seed=3, classes=(0, 1, 2))
    np.testing.assert_allclose(meta.predict(types, feats), loaded.predict(types, feats), rtol=1e-5, atol=1e-5)
    # the default extractor is rebuilt from the checkpoint: encode() straight from a dataset
    ds = torch.utils.data.TensorDataset(*digits)
    vec = loaded.encode(ds, images_per_class=8, seed=3, classes=(0, 1, 2))
    np.testing.assert_allclose(vec.numpy(), meta.task_vector(feats).numpy(), rtol=1e-5, atol=1e-5)


def test_meta_for_another_space_is_refused(trained):
    _, _, _, path = trained

    class Other(NasBench201Space):
        @property
        def signature_labels(self):
            return tuple("other/" + lab for lab in super().signature_labels)

    with pytest.raises(SpaceMismatchError):
        load_dataset_meta(path, Other())


def test_encode_dataset_inputs(digits):
    x, y = digits
    ext = RandomConvExtractor(seed=0)
    a = encode_dataset((x, y), ext, images_per_class=4, seed=1, classes=(3, 5))
    assert a.shape == (2, 4, ext.out_dim)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:300], y[:300]), batch_size=64)
    b = encode_dataset(loader, ext, images_per_class=4, seed=1)
    assert b.shape == (10, 4, ext.out_dim)
    # any callable images -> features works as the extractor
    c = encode_dataset((x, y), lambda im: im.mean((2, 3)), images_per_class=3, classes=(0, 1))
    assert c.shape == (2, 3, 3)
    # order of images within a class does not change the task vector (set encoder invariance)
    enc = SetEncoder(ext.out_dim).eval()
    with torch.no_grad():
        v1 = enc(a)
        v2 = enc(a[:, torch.randperm(4)])
        v3 = enc(a.flip(0))
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v1, v3, atol=1e-5, rtol=1e-5)


def test_shape_errors(digits):
    x, y = digits
    ext = RandomConvExtractor(seed=0)
    with pytest.raises(ValueError, match="rank 4"):
        encode_dataset((x[:, 0], y), ext, images_per_class=2)
    with pytest.raises(ValueError, match="must be 32x32, got 16x16"):
        encode_dataset((torch.nn.functional.avg_pool2d(x, 2), y), ext, images_per_class=2)
    with pytest.raises(ValueError, match="3 channels"):
        encode_dataset((x[:, :1], y), ext, images_per_class=2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        encode_dataset((x, y), ext, images_per_class=2, classes=(4,))
    with pytest.raises(ValueError, match="class 11 has no images"):
        encode_dataset((x, y), ext, images_per_class=2, classes=(4, 11))
    enc = SetEncoder(64)
    with pytest.raises(ValueError, match=r"\[C classes, k images, 64\].*rank 2"):
        enc(torch.zeros(5, 64))
    with pytest.raises(ValueError, match="dimension 64.*got 10"):
        enc(torch.zeros(3, 4, 10))
    with pytest.raises(ValueError, match="at least 2 classes, got 1"):
        enc(torch.zeros(1, 4, 64))
    with pytest.raises(ValueError, match="at least 1 image"):
        enc(torch.zeros(3, 0, 64))
    space = NasBench201Space()
    model = TaskConditionedSurrogate(space.num_types, space.adjacency, feature_dim=64)
    with pytest.raises(ValueError, match="task must be"):
        model(torch.zeros(2, 8, space.num_types), torch.ones(2), torch.zeros(2, 7))


def test_strategy_guided_by_the_target_dataset(trained, digits):
    """End to end: DiffusionNAG(meta_predictor=..., dataset=...) on NB201 with a task whose metric
    (conv_3x3 count) the predictor can only know from the target's images (even digits)."""
    import nni
    from nni.nas.evaluator import Evaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.hub.pytorch import NasBench201
    from nni.nas.space import SimplifiedModelSpace

    from nni_diffusionnag.nn.surrogate import SurrogateConfig
    from nni_diffusionnag.prior.model import SamplerConfig
    from nni_diffusionnag.integration.strategy import DiffusionNAG

    @nni.trace
    class ConvCount(Evaluator):
        def _execute(self, model):
            nni.report_final_result(float(sum(v == "conv_3x3" for v in model.sample.values())))

    _, _, _, path = trained
    x, y = digits
    keep = torch.isin(y, torch.tensor([0, 2, 4, 8, 3]))  # the held-out task: resembles the even digits
    fast = dict(surrogate=SurrogateConfig(hidden=16, steps=40, ensemble=2), sampler=SamplerConfig(num_steps=20),
                n_candidates=60, batch_size=5, device="cpu", seed=0)
    first = {}
    for name, extra in (("dataset", dict(meta_predictor=str(path), dataset=(x[keep], y[keep]))), ("plain", dict(warmup=5))):
        strategy = DiffusionNAG(**fast, **extra)
        strategy(SimplifiedModelSpace.from_model(NasBench201(), ConvCount()), SequentialExecutionEngine(max_model_count=5))
        nni.trial._params = None
        first[name] = np.mean([r["metric"] for r in strategy.history()])
    assert first["dataset"] > first["plain"] + 1.0  # conv-heavy cells from the first batch on

    with pytest.raises(ValueError, match="needs meta_predictor"):
        DiffusionNAG(dataset=(x[keep], y[keep]))
    bad = DiffusionNAG(**fast, meta_predictor=str(path), dataset=(x[keep][:, :1], y[keep]))  # 1 channel, not 3
    with pytest.raises(ValueError, match="channel"):
        bad(SimplifiedModelSpace.from_model(NasBench201(), ConvCount()), SequentialExecutionEngine(max_model_count=1))
