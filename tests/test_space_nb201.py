import numpy as np
import pytest

from helpers import BASE_ENV, ROOT, light_job
from nni_diffusionnag.space import NasBench201Space, SpaceSignature, get_space
from nni_diffusionnag.space.nasbench201 import EDGES, NNI_OPS


@pytest.fixture(scope="module")
def space():
    return NasBench201Space()


def test_round_trip_all_cells(space):
    all_types = space.enumerate_types()
    assert all_types.shape == (15625, 8)
    archs = set()
    for types in all_types:
        sample = space.types_to_sample(types)
        arch = space.types_to_arch(types)
        archs.add(arch)
        assert np.array_equal(space.sample_to_types(sample), types)
        assert np.array_equal(space.arch_to_types(arch), types)
        assert space.arch_to_sample(arch) == sample
    assert len(archs) == 15625


def test_table_strings_decode(space, nb201_csv):
    import csv

    with open(nb201_csv) as f:
        archs = [row["arch"] for row in csv.DictReader(f)]
    assert len(archs) == 15625
    assert {space.types_to_arch(space.arch_to_types(a)) for a in archs} == set(archs)


def test_labels_and_ops_match_nni_hub(space):
    from nni.nas.hub.pytorch import NasBench201

    simple = NasBench201().simplify()
    assert tuple(simple) == space.labels
    for label in space.labels:
        assert tuple(simple[label].values) == NNI_OPS
    rng = np.random.default_rng(0)
    for types in space.random_types(20, rng):
        assert NasBench201().contains(space.types_to_sample(types))


def test_adjacency_follows_cell_semantics(space):
    # Node a is the op on EDGES[a-1]. Op on i->j feeds ops on edges leaving j, by reading the cell:
    # node 1 = sum(e01), node 2 = sum(e02, e12), node 3 = sum(e03, e13, e23).
    expected = {("in", "e01"), ("in", "e02"), ("in", "e03"),
                ("e01", "e12"), ("e01", "e13"), ("e02", "e23"), ("e12", "e23"),
                ("e03", "out"), ("e13", "out"), ("e23", "out")}
    names = ["in"] + [f"e{i}{j}" for i, j in EDGES] + ["out"]
    got = {(names[a], names[b]) for a, b in zip(*np.nonzero(space.adjacency))}
    assert got == expected


def test_reachability_mask(space):
    mask = space.attention_mask()
    assert mask.diagonal().all() and (mask == mask.T).all()
    names = ["in"] + [f"e{i}{j}" for i, j in EDGES] + ["out"]
    e03, e12 = names.index("e03"), names.index("e12")
    assert not mask[e03, e12]  # e03 neither feeds nor is fed by e12
    assert mask[names.index("e01"), names.index("e23")]  # e01 -> e12 -> e23
    assert mask[0].all() and mask[-1].all()


def test_bad_input_errors(space):
    with pytest.raises(ValueError, match="lacks labels"):
        space.sample_to_types({"cell/0_1": "conv_3x3"})
    with pytest.raises(ValueError, match="unknown NB201 operation"):
        space.sample_to_types({lab: "conv_5x5" for lab in space.labels})
    with pytest.raises(ValueError, match="not a NAS-Bench-201 cell string"):
        space.arch_to_types("|foo~0|")
    with pytest.raises(ValueError, match="not a NAS-Bench-201 graph"):
        space.types_to_sample([0, 1, 2, 2, 2, 2, 2, 1])
    with pytest.raises(ValueError, match="known spaces"):
        get_space("nasbench999")


def test_signature_stable_and_sensitive(space):
    sig = space.signature()
    d = sig.to_dict()
    shuffled = SpaceSignature.from_dict(dict(reversed(list(d.items()))))
    assert shuffled.digest == sig.digest
    d2 = dict(d, node_types=list(d["node_types"])[::-1])
    assert SpaceSignature.from_dict(d2).digest != sig.digest


@light_job
def math_modules_without_nni():
    import subprocess
    import sys

    code = ("import sys; import nni_diffusionnag.space, nni_diffusionnag.diffusion.sampling, "
            "nni_diffusionnag.diffusion.guidance, nni_diffusionnag.nn.surrogate, nni_diffusionnag.prior.model, "
            "nni_diffusionnag.search.generator, nni_diffusionnag.prior.training, nni_diffusionnag.properties; "
            "print(sorted(m for m in sys.modules if m == 'nni' or m.startswith('nni.')))")
    return lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  timeout=300, env=BASE_ENV, cwd=ROOT).stdout


@pytest.mark.background_job("math_modules_without_nni")
def test_math_modules_do_not_import_nni(background_result):
    """Space encoding, diffusion, networks, prior and generator work without NNI (docs/design.md, 'Data flow and layout').
    The interpreter runs on the background subprocess worker (tests/helpers.py)."""
    out = background_result()
    assert out.strip() == "[]"
