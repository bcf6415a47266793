"""`nni-diffusionnag bench hpo` end to end on a tiny setting, and the objective's checks."""

import importlib.util
import json
import math

import numpy as np
import pytest

from nni_diffusionnag.bench import hpo
from nni_diffusionnag.bench.hpo import HPO_SPACE, objective, validate_params
from nni_diffusionnag.cli import main

# NNI's Anneal tuner needs hyperopt, which NNI itself does not install (extra 'anneal').
HAVE_HYPEROPT = importlib.util.find_spec("hyperopt") is not None
NNI_TUNERS = ["TPE", "Anneal", "Random"] if HAVE_HYPEROPT else ["TPE", "Random"]
needs_hyperopt = pytest.mark.skipif(not HAVE_HYPEROPT, reason="NNI's Anneal tuner needs hyperopt")


def _good_params():
    return {"lr": 0.01, "momentum": 0.9, "width": 128.0, "depth": 3, "dropout": 0.25, "activation": "relu",
            "batch_size": 64, "weight_decay": 1e-4, "init_gain_log2": 0.0}


def test_tiny_bench_through_the_cli(tmp_path, monkeypatch, capsys):
    sent = []
    real = hpo.objective

    def recording(params):
        sent.append(dict(params))
        return real(params)

    monkeypatch.setattr(hpo, "objective", recording)
    out = tmp_path / "hpo"
    assert main(["bench", "hpo", "--tuners", ",".join(NNI_TUNERS), "--seeds", "0-1", "--budget", "8",
                 "--output", str(out)]) == 0
    data = json.loads((out / "hpo.json").read_text())
    assert (out / "hpo.png").stat().st_size > 1000
    assert data["budget"] == 8 and data["seeds"] == [0, 1] and data["tuners"] == NNI_TUNERS
    assert data["search_space"] == HPO_SPACE and "cpu" in data["machine"]
    runs = 2 * len(NNI_TUNERS)
    assert len(data["runs"]) == runs and {(r["tuner"], r["seed"]) for r in data["runs"]} == \
        {(t, s) for t in NNI_TUNERS for s in (0, 1)}
    for run in data["runs"]:
        best = run["best_so_far"]
        assert len(best) == 8 and run["trials"] == 8 and run["stopped_early_at"] is None
        assert all(b2 >= b1 for b1, b2 in zip(best, best[1:])), run["tuner"]
        assert best[-1] == pytest.approx(max(run["values"]))
        assert len(run["seconds_per_trial"]) == 8 and all(s >= 0 for s in run["seconds_per_trial"])
        for params in run["params"]:
            validate_params(params)  # also checked by the objective while running
    assert len(sent) == runs * 8  # every value a tuner sent went through the validating objective
    for name in NNI_TUNERS:
        s = data["summary"][name]
        assert set(s) >= {"best@8", "seconds_per_trial", "stopped_early"} and "best@10" not in s
        assert 0 <= s["best@8"]["mean"] <= 100 and s["stopped_early"] == 0
    text = capsys.readouterr().out
    assert all(f"| {name} |" in text for name in NNI_TUNERS) and "best@10" in text


@needs_hyperopt
def test_anneal_is_seeded():
    """NNI's HyperoptTuner has no seed: the harness seeds its random state, so runs repeat."""
    a = hpo.run_one("Anneal", seed=3, budget=5)
    b = hpo.run_one("Anneal", seed=3, budget=5)
    assert a["params"] == b["params"]


def test_unknown_tuner_fails_before_any_run(tmp_path, monkeypatch, capsys):
    def no_run(*args, **kwargs):
        raise AssertionError("a run started")

    monkeypatch.setattr(hpo, "run_one", no_run)
    assert main(["bench", "hpo", "--tuners", "TPE,Bogus", "--seeds", "0-1", "--budget", "8",
                 "--output", str(tmp_path / "hpo")]) == 2
    err = capsys.readouterr().err
    assert "unknown tuners ['Bogus']; choose from ['TPE', 'Anneal', 'Random', 'DiffusionNAG']" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err  # one line
    assert not (tmp_path / "hpo").exists()


def test_no_more_trial_error_pads_the_curve(monkeypatch):
    import nni

    class Stops:
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def update_search_space(self, space):
            pass

        def generate_parameters(self, i):
            if i == 3:
                raise nni.NoMoreTrialError()
            return {**_good_params(), "lr": float(10 ** self.rng.uniform(-4, 0))}

        def receive_trial_result(self, *args):
            pass

        def trial_end(self, *args):
            pass

    monkeypatch.setitem(hpo.TUNERS, "Stops", lambda seed, device: Stops())
    run = hpo.run_one("Stops", seed=0, budget=6)
    assert run["trials"] == 3 and run["stopped_early_at"] == 3
    assert len(run["best_so_far"]) == 6 and run["best_so_far"][3:] == [run["best_so_far"][2]] * 3


def test_objective_rejects_illegal_values():
    assert 10 <= objective(_good_params()) <= 100
    bad = [("lr", 2.0), ("lr", 1e-5), ("momentum", -0.1), ("width", 24.0), ("width", 272.0), ("depth", 6),
           ("depth", 2.5), ("dropout", 0.7), ("activation", "elu"), ("batch_size", 48), ("batch_size", 64.0),
           ("weight_decay", 0.02), ("weight_decay", 1.5e-6), ("init_gain_log2", math.nan), ("depth", True)]
    for key, value in bad:
        with pytest.raises(ValueError, match=key):
            objective({**_good_params(), key: value})
    with pytest.raises(ValueError, match="missing"):
        objective({k: v for k, v in _good_params().items() if k != "lr"})
    with pytest.raises(ValueError, match="unexpected"):
        objective({**_good_params(), "epochs": 3})


def test_objective_structure():
    """The optimum of lr moves with batch size and momentum; sigmoid is clearly worse."""
    def best_lr(**kw):
        grid = 10 ** np.linspace(-4, 0, 401)
        return grid[np.argmax([objective({**_good_params(), **kw, "lr": float(lr)}) for lr in grid])]

    assert best_lr(batch_size=256, momentum=0.0) > 2 * best_lr(batch_size=16, momentum=0.0)
    assert best_lr(momentum=0.9) < best_lr(momentum=0.0) / 3
    assert objective({**_good_params(), "activation": "sigmoid"}) < objective(_good_params()) - 5
