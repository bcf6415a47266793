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
    import torch

    assert "optimizer" in torch.load(path, weights_only=False)["training"]  # resumable: optimiser state kept
    assert main(common + ["--steps", "15", "--strip", "--no-resume"]) == 0
    assert "prior saved" in capsys.readouterr().out
    stripped = torch.load(path, weights_only=False)
    assert "optimizer" not in stripped and "training" not in stripped  # --strip: EMA weights only
    assert DiffusionPrior.load(path, NasBench201Space()).meta["train_steps"] == 15


def test_console_script_entry_point():
    res = subprocess.run([sys.executable, "-m", "nni_diffusionnag.cli", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "train-prior" in res.stdout and "generate" in res.stdout


def test_unknown_space_is_a_clear_error(capsys):
    assert main(["generate", "--space", "nb999", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert "nni-diffusionnag: error: unknown space 'nb999'; known spaces:" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="known spaces"):  # --debug: the exception itself
        main(["--debug", "generate", "--space", "nb999", "-n", "1"])


@pytest.mark.parametrize("argv, message", [
    (["generate", "-n", "0"], "argument -n: 0 is invalid: must be >= 1"),
    (["generate", "-n", "-5"], "argument -n: -5 is invalid: must be >= 1"),
    (["generate", "--device", "cuda"], "argument --device: --device='cuda' but this machine has no CUDA device"),
    (["bench", "search", "--table", "{csv}", "--strategies", "Random,Foo"],
     "bench search: unknown strategies ['Foo']; choose from"),
    (["bench", "search", "--table", "/no/table.csv"], "--table '/no/table.csv' is not a file"),
    (["bench", "search", "--table", "{csv}", "--strategies", "DiffusionNAG:local_fractoin=0"],
     "bench search: strategy 'DiffusionNAG:local_fractoin=0': DiffusionNAG: unknown argument(s) ['local_fractoin']"),
    (["bench", "search", "--table", "{csv}", "--strategies", "DiffusionNAG:surrogate.labels=ranks"],
     "surrogate labels 'ranks' is not one of ['rank', 'zscore']"),
    (["bench", "nbgraph", "--strategies", "Random,DiffusionNAG:warmupp=5"],
     "bench nbgraph: strategy 'DiffusionNAG:warmupp=5': DiffusionNAG: unknown argument(s) ['warmupp']"),
    (["bench", "nbgraph", "--strategies", "REA"], "bench nbgraph: unknown strategies ['REA']; choose from"),
    (["bench", "multiobjective", "--table", "{csv}", "--costs", "params", "--methods", "DiffusionNAG-MO:batch_sise=5"],
     "bench multiobjective: method 'DiffusionNAG-MO:batch_sise=5': DiffusionNAG: unknown argument(s) ['batch_sise']"),
    (["bench", "multiobjective", "--table", "{csv}", "--costs", "params", "--methods", "Random:warmup=5"],
     "only the DiffusionNAG methods take settings"),
    (["bench", "multiobjective", "--costs", "latency", "--methods", "DiffusionNAG-MO:dedup_key=no_such.key"],
     "bench multiobjective: method 'DiffusionNAG-MO:dedup_key=no_such.key': DiffusionNAG: cannot import dedup_key"),
    (["bench", "multiobjective", "--table", "{csv}", "--costs", "params", "--methods", "DiffusionNAG-MO:seed=3"],
     "['seed'] are set by the bench"),
    (["bench", "multiobjective", "--table", "{csv}", "--costs", "params", "--methods", "DiffusionNAG-MO:n_candidates=3"],
     "n_candidates=3 must be >= the batch size 5"),
])
def test_cli_checks_arguments_before_any_work(argv, message, capsys, tmp_path):
    argv = [a.replace("{csv}", str(tmp_path / "t.csv")) for a in argv]
    (tmp_path / "t.csv").write_text("arch,acc\n")
    try:
        rc = main(argv + ["--output", str(tmp_path / "out")] if argv[0] == "bench" else argv)
    except SystemExit as exit_:  # argparse's own errors
        rc = exit_.code
    assert rc == 2 and message in capsys.readouterr().err


def test_unwritable_output_is_found_before_sampling(capsys, monkeypatch):
    from nni_diffusionnag.prior import model

    monkeypatch.setattr(model.DiffusionPrior, "generate", lambda *a, **k: pytest.fail("sampled before checking"))
    assert main(["generate", "-n", "5", "--output", "/proc/no/such/samples.jsonl"]) == 2
    assert "cannot write the file '/proc/no/such/samples.jsonl'" in capsys.readouterr().err


def test_train_meta_reports_dropped_rows(tmp_path, caplog):
    from nni_diffusionnag.space import NasBench201Space
    from nni_diffusionnag.transfer.meta import read_task_csv

    space = NasBench201Space()
    archs = [space.types_to_arch(t) for t in space.enumerate_types()[:5]]
    rows = ["arch,acc", f"{archs[0]},90.1", f"{archs[1]},nan", f"{archs[2]},", f"{archs[3]},garbage", f"{archs[4]},inf"]
    (tmp_path / "task.csv").write_text("\n".join(rows) + "\n")
    types, values = read_task_csv(space, tmp_path / "task.csv", "acc")
    assert values.tolist() == [90.1] and len(types) == 1
    assert "dropped 4 of 5 rows whose 'acc' is not a finite number (rows [1, 2, 3, 4]" in caplog.text


def test_bench_speed_budget_is_the_number_of_results_the_surrogate_is_fitted_on(tmp_path, monkeypatch):
    from nni_diffusionnag.bench import speed

    seen = []
    fake = lambda output, spaces, device="cpu", n_results=20, **kw: seen.append((spaces, n_results)) or {}  # noqa: E731
    monkeypatch.setattr(speed, "run_speed_bench", fake)
    monkeypatch.setattr(speed, "summarize", lambda result: "")
    assert main(["bench", "speed", "--spaces", "nbgraph", "--budget", "7", "--output", str(tmp_path)]) == 0
    assert main(["bench", "speed", "--spaces", "nbgraph", "--output", str(tmp_path)]) == 0
    assert seen == [(["nbgraph"], 7), (["nbgraph"], 20)]
