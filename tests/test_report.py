"""``nni-diffusionnag report``: reading an NNI experiment's database (both parameter formats),
choosing and checking objectives, the front and hypervolume on known points, the predictions file,
and the page itself: self-contained, every figure decoded in headless Chromium (on small
experiment directories written here, and on the suite's shared 'ts' experiment; the nnictl-route
page is checked in tests/test_nnictl_routes.py, next to the experiment it reports on)."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from helpers import ARTIFACTS, LABELS, OPS, check_report_page, open_report_page
from nni_diffusionnag.cli import main
from nni_diffusionnag.report.analysis import (Objective, best_so_far, choose_objectives, match_predictions,
                                              pareto_front, spearman, top_trials)
from nni_diffusionnag.report.architectures import nb201_cell
from nni_diffusionnag.report.reading import PREDICTIONS_FILE, find_experiment, load_experiment, load_predictions

_SCHEMA = """
CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,
                            sequenceId integer, message text, environmentId text);
CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text, sequence integer, data text);
CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime integer, endTime integer,
                                logDir text, nextSequenceId integer, revision integer);
"""


def _nas_parameters(sample: dict) -> dict:
    """What the 'ts' engine stores as a trial's parameters: a dumped model (trimmed)."""
    return {"status": "frozen", "model_symbol": {"__nni_type__": "path:nni.nas.hub.pytorch.nasbench201.NasBench201"},
            "sample": sample, "mutation_summary": sample,
            "__instance_type__": "path:nni_diffusionnag.integration.compat.MutationSummaryModelSpace"}


def write_experiment(directory: Path, exp_id: str, trials: list, config: dict) -> Path:
    """An experiment directory holding an NNI database with the three tables the report reads.

    ``trials``: ``(trial_id, parameters, final metric or None, status, start, end)`` with times in
    ms; the parameters event is RUNNING (as NNI 3.0 writes it), the FINAL metric JSON-encoded
    twice, one second before the end."""
    (directory / "db").mkdir(parents=True)
    con = sqlite3.connect(directory / "db" / "nni.sqlite")
    con.executescript(_SCHEMA)
    event = "INSERT INTO TrialJobEvent VALUES (?,?,?,?,?,?,?,?)"
    for k, (trial_id, parameters, metric, status, start, end) in enumerate(trials):
        data = json.dumps({"parameter_id": k % 3, "parameter_source": "algorithm", "parameters": parameters,
                           "parameter_index": 0})  # ids repeat as after nnictl resume: trials are keyed by trial id
        con.execute(event, (start, trial_id, "WAITING", None, "", k, None, ""))
        con.execute(event, (start + 1, trial_id, "RUNNING", data, "", k, None, ""))
        if metric is not None:
            con.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)",
                        (end - 1000, trial_id, str(k % 3), "FINAL", 0, json.dumps(json.dumps(metric))))
        if status != "RUNNING":
            con.execute(event, (end, trial_id, status, None, "", k, None, ""))
    for revision, params in enumerate([{"experimentType": config.get("experimentType")}, config]):  # the latest counts
        con.execute("INSERT INTO ExperimentProfile VALUES (?,?,?,?,?,?,?,?)",
                    (json.dumps(params), exp_id, 0, 0, 0, str(directory.parent), 0, revision))
    con.commit()
    con.close()
    return directory


def _cell(*ops: str) -> dict:
    return dict(zip(LABELS, ops))


# The NAS route ('ts' engine): dumped models, dict metrics with a cost; the trials end out of
# their start order, one fails, one is still running.
NAS_TRIALS = [
    ("tA", _nas_parameters(_cell("conv_3x3", "none", "skip_connect", "conv_1x1", "none", "avg_pool_3x3")),
     {"default": 1.0, "latency_ms": 1.0, "note": "warm-up"}, "SUCCEEDED", 1000, 9000),
    ("tB", _nas_parameters(_cell(*OPS[:4], "none", "none")), {"default": 2.0, "latency_ms": 3.0, "note": "x"},
     "SUCCEEDED", 2000, 5000),
    ("tC", _nas_parameters(_cell(*["conv_3x3"] * 6)), {"default": 3.0, "latency_ms": 2.0, "note": "x"},
     "SUCCEEDED", 3000, 12000),
    ("tD", _nas_parameters(_cell(*["skip_connect"] * 6)), {"default": 2.0, "latency_ms": 2.5, "note": "x"},
     "SUCCEEDED", 4000, 15000),
    ("tE", _nas_parameters(_cell(*["none"] * 6)), None, "FAILED", 5000, 16000),
    ("tF", _nas_parameters(_cell(*["conv_1x1"] * 6)), None, "RUNNING", 6000, 0),
]
# The nnictl (tuner) route: the parameters are the sample itself, scalar metrics.
HPO_TRIALS = [
    ("h1", {"lr": 0.1, "width": 16, "activation": "relu"}, 0.5, "SUCCEEDED", 1000, 4000),
    ("h2", {"lr": 0.01, "width": 32.0, "activation": "tanh"}, 0.25, "SUCCEEDED", 2000, 6000),
    ("h3", {"lr": 0.001, "width": 64, "activation": "gelu"}, 0.75, "SUCCEEDED", 3000, 8000),
]
HPO_CONFIG = {"experimentType": "hpo", "experimentName": "tiny", "tuner": {"name": "TPE",
                                                                         "classArgs": {"optimize_mode": "minimize"}}}


@pytest.fixture
def nas_dir(tmp_path) -> Path:
    return write_experiment(tmp_path / "exps" / "nasexp1", "nasexp1", NAS_TRIALS, {"experimentType": "nas"})


@pytest.fixture
def hpo_dir(tmp_path) -> Path:
    return write_experiment(tmp_path / "exps" / "hpoexp1", "hpoexp1", HPO_TRIALS, HPO_CONFIG)


def test_reads_trials_of_both_parameter_formats(nas_dir, hpo_dir):
    nas = load_experiment(nas_dir)
    assert (nas.experiment_id, nas.experiment_type, nas.optimize_mode) == ("nasexp1", "nas", None)
    assert [t.trial_id for t in nas.trials] == ["tA", "tB", "tC", "tD", "tE", "tF"]  # by first event
    assert [t.status for t in nas.trials] == ["SUCCEEDED"] * 4 + ["FAILED", "RUNNING"]
    assert nas.trials[2].sample == _cell(*["conv_3x3"] * 6)  # the dumped model's sample
    assert [t.trial_id for t in nas.finished()] == ["tB", "tA", "tC", "tD"]  # by end
    assert nas.trials[1].metric == {"default": 2.0, "latency_ms": 3.0, "note": "x"}
    assert nas.trials[4].metric is None and nas.trials[5].end is None
    assert nas.metric_keys() == ["default", "latency_ms", "note"]

    hpo = load_experiment(hpo_dir)
    assert (hpo.experiment_type, hpo.optimize_mode, hpo.name) == ("hpo", "minimize", "tiny")
    assert hpo.trials[0].sample == {"lr": 0.1, "width": 16, "activation": "relu"}  # the parameters themselves
    assert [t.metric for t in hpo.trials] == [{"default": 0.5}, {"default": 0.25}, {"default": 0.75}]


def test_a_trial_run_again_keeps_its_last_final_metric(tmp_path):
    """After a resume NNI may run a trial again under its id: its last result is the one shown."""
    d = write_experiment(tmp_path / "again", "again", HPO_TRIALS[:1], {"experimentType": "hpo"})
    con = sqlite3.connect(d / "db" / "nni.sqlite")
    con.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)", (20000, "h1", "0", "FINAL", 0, json.dumps("0.9")))
    con.execute("INSERT INTO MetricData VALUES (?,?,?,?,?,?)", (20001, "h1", "0", "PERIODICAL", 0, json.dumps("5")))
    con.commit()
    con.close()
    (trial,) = load_experiment(d).trials
    assert trial.metric == {"default": 0.9} and trial.end == 4000


def test_finds_an_experiment_by_directory_or_id(tmp_path, nas_dir):
    home = tmp_path / "home"
    assert find_experiment(str(nas_dir), home=home) == nas_dir
    default = write_experiment(home / "nni-experiments" / "byid", "byid", HPO_TRIALS, HPO_CONFIG)
    assert find_experiment("byid", home=home) == default  # NNI's default working directory
    registry = {"nasexp1": {"id": "nasexp1", "logDir": str(nas_dir.parent)}}
    (home / "nni-experiments" / ".experiment").write_text(json.dumps(registry))
    assert find_experiment("nasexp1", home=home) == nas_dir  # another working directory, from nnictl's registry

    with pytest.raises(FileNotFoundError) as err:
        find_experiment("nosuch", home=home)
    message = str(err.value)
    assert "\n" not in message and "'nosuch'" in message
    assert str(home / "nni-experiments" / "nosuch") in message and "does not list it" in message
    with pytest.raises(FileNotFoundError, match=f"no db/nni.sqlite in {tmp_path};"):
        find_experiment(str(tmp_path), home=home)  # a path: not looked up as an id


def test_objectives_by_default_and_named(nas_dir, hpo_dir):
    nas, hpo = load_experiment(nas_dir), load_experiment(hpo_dir)
    # default (NAS: no direction recorded, so maximised) plus every numeric key, as a cost; 'note' is text
    assert [(o.name, o.mode) for o in choose_objectives(nas)] == [("default", "maximize"), ("latency_ms", "minimize")]
    assert "--minimize" in choose_objectives(nas)[0].why
    assert choose_objectives(nas, minimize=True)[0].mode == "minimize"
    assert [(o.name, o.mode) for o in choose_objectives(hpo)] == [("default", "minimize")]  # the tuner's classArgs
    named = choose_objectives(nas, "default:min, latency_ms:MAX")
    assert [(o.name, o.mode) for o in named] == [("default", "minimize"), ("latency_ms", "maximize")]
    assert [o.mode for o in choose_objectives(nas, "latency_ms,default")] == ["minimize", "maximize"]

    with pytest.raises(ValueError) as err:
        choose_objectives(nas, "default:max,latency:min")
    assert "'latency'" in str(err.value) and "['default', 'latency_ms', 'note']" in str(err.value)
    with pytest.raises(ValueError, match="'note' is not reported as a number"):
        choose_objectives(nas, "note:max")
    with pytest.raises(ValueError, match="direction must be max or min"):
        choose_objectives(nas, "default:up")
    with pytest.raises(ValueError, match="named twice"):
        choose_objectives(nas, "default,default:min")
    with pytest.raises(ValueError, match="empty name"):
        choose_objectives(nas, "default,")


def test_front_and_hypervolume_on_known_points(nas_dir):
    """In order of end: B (2, 3), A (1, 1), C (3, 2), D (2, 2.5) as (default: max, latency_ms: min).
    C dominates B and D, A has the lowest latency: the front is A and C. The reference point is
    the worst of each moved 1% of the range (2) further: (0.98, 3.02)."""
    finished = load_experiment(nas_dir).finished()
    front = pareto_front(finished, [Objective("default", "maximize", ""), Objective("latency_ms", "minimize", "")])
    assert [t.trial_id for t in front.trials] == ["tB", "tA", "tC", "tD"]
    assert front.mask.tolist() == [False, True, True, False]
    np.testing.assert_allclose(front.ref, [0.98, 3.02])
    # B alone: 1.02 x 0.02; with A: + 0.02 x 2.0 (A's latency is below B's); C: 2.02 x 1.02 + 0.02 x 1.0
    np.testing.assert_allclose(front.curve, [0.0204, 0.0604, 2.0804, 2.0804])
    assert front.hypervolume == pytest.approx(2.0804) and front.skipped == 0
    assert best_so_far([2.0, 1.0, 3.0, 2.0], "maximize").tolist() == [2.0, 2.0, 3.0, 3.0]
    assert [t.trial_id for t in top_trials(finished, "maximize", 2)] == ["tC", "tB"]  # ties: the earlier end
    assert [t.trial_id for t in top_trials(finished, "minimize", 1)] == ["tA"]


def test_a_trial_without_an_objective_is_left_out_of_the_front(tmp_path):
    trials = [(f"t{k}", {"x": k}, metric, "SUCCEEDED", 1000 * k, 1000 * k + 500)
              for k, metric in enumerate([{"default": 1, "cost": 1}, {"default": 2}, {"default": 3, "cost": 2}], 1)]
    record = load_experiment(write_experiment(tmp_path / "gap", "gap", trials, {"experimentType": "hpo"}))
    assert [o.name for o in choose_objectives(record)] == ["default"]  # 'cost' is not in every final metric
    front = pareto_front(record.finished(), choose_objectives(record, "default:max,cost:min"))
    assert [t.trial_id for t in front.trials] == ["t1", "t3"] and front.positions.tolist() == [1, 3]
    assert front.skipped == 1 and front.mask.tolist() == [True, True]


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert spearman([1, 2], [3, 3]) is None and spearman([1], [2]) is None
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30), rng.integers(0, 5, 30)  # ties in both
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)


def test_predictions_file(nas_dir):
    record = load_experiment(nas_dir)
    assert load_predictions(nas_dir) is None  # absent
    (nas_dir / "checkpoint").mkdir()
    rows = [{"sample": _cell(*["conv_3x3"] * 6), "mean": 2.5, "std": 0.5},
            {"sample": dict(reversed(list(_cell(*OPS[:4], "none", "none").items()))), "mean": 1.5, "std": 0.1},
            {"sample": _cell(*["conv_3x3"] * 6), "mean": 2.8, "std": 0.2}]  # predicted again: the last one counts
    lines = [json.dumps(r) for r in rows] + ['{"sample": {"cell/0_1": "conv']  # a line still being written
    (nas_dir / PREDICTIONS_FILE).write_text("\n".join(lines))
    predictions = load_predictions(nas_dir)
    assert [p.mean for p in predictions] == [2.5, 1.5, 2.8]
    pairs = match_predictions(record.finished(), predictions)
    assert [(t.trial_id, p.mean) for t, p in pairs] == [("tB", 1.5), ("tC", 2.8)]  # labels in any order


def test_nb201_cells_and_other_spaces():
    edges = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert nb201_cell(_cell(*OPS, "none")) == dict(zip(edges, [*OPS, "none"]))
    assert nb201_cell({"lr": 0.1}) is None
    assert nb201_cell({f"cell/{i}_{j}": "conv_3x3" for i, j in [*edges[:5], (1, 2)]}) is None  # an edge twice
    assert nb201_cell({**{k: "conv_3x3" for k in LABELS[:5]}, "other/2_3": "conv_3x3"}) is None  # two prefixes


class _Resources(HTMLParser):
    """Every src/href of a page, and its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.urls, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href")]


def _page_figures(page: Path) -> dict:
    """{figure id: PNG bytes} of the data URIs embedded in a page."""
    text = page.read_text()
    return {m[1]: base64.b64decode(m[2])
            for m in re.finditer(r'<figure id="([\w-]+)"><img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)}


@pytest.fixture
def multi_dir(tmp_path) -> Path:
    """30 NB201 trials with three numeric objectives, a failed one, and predictions for most."""
    rng = np.random.default_rng(0)
    trials, predictions = [], []
    for k in range(30):
        sample = _cell(*rng.choice(OPS, 6))
        acc = sum({"conv_3x3": 3, "conv_1x1": 2, "skip_connect": 1}.get(v, 0) for v in sample.values()) + rng.random()
        latency = sum({"conv_3x3": 2.5, "conv_1x1": 1, "avg_pool_3x3": 0.5}.get(v, 0) for v in sample.values())
        params = 0.1 * sum(v.startswith("conv") for v in sample.values()) + 0.05 * rng.random()
        metric = {"default": acc, "latency_ms": latency + rng.random(), "params_m": params}
        trials.append((f"m{k:02d}", _nas_parameters(sample), metric, "SUCCEEDED", 1000 * k, 1000 * k + 900))
        if k >= 5:
            predictions.append({"sample": sample, "mean": acc + rng.normal(0, 1), "std": rng.uniform(0.2, 1)})
    trials.append(("mfail", _nas_parameters(_cell(*["none"] * 6)), None, "FAILED", 40000, 41000))
    d = write_experiment(tmp_path / "multi", "multiexp", trials, {"experimentType": "nas"})
    (d / "checkpoint").mkdir()
    (d / PREDICTIONS_FILE).write_text("".join(json.dumps(p) + "\n" for p in predictions))
    return d


def test_cli_writes_a_self_contained_page_and_its_pngs(multi_dir, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(multi_dir), "--output", str(out)]) == 0
    page = out / "report.html"
    assert str(page) in capsys.readouterr().out
    parser = _Resources()
    parser.feed(page.read_text())
    assert parser.urls and all(u.startswith("data:image/png;base64,") for u in parser.urls)
    assert not parser.tags & {"script", "link", "iframe", "object"}
    figures = _page_figures(page)
    names = ["progress", "front", "hypervolume", "predictions"] + [f"top-{k}" for k in range(1, 6)]
    assert list(figures) == names
    assert all((out / f"{name}.png").read_bytes() == data for name, data in figures.items())  # the same figures
    text = page.read_text()
    assert "<title>DiffusionNAG report: experiment multiexp</title>" in text
    assert "latency_ms</b>: minimised (taken as a cost)" in text and "params_m</b>: minimised" in text
    assert "25 of 30 finished trials matched" in text
    assert text.count("<tr") == 32  # the header and every trial, the failed one too


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, nas_dir):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert main(["report", "nosuch", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nni-diffusionnag: error: no NNI experiment 'nosuch'") and "\n" not in err
    assert str(tmp_path / "home" / "nni-experiments" / "nosuch") in err
    assert main(["report", str(nas_dir), "--objectives", "default:max,acc:max", "--output", str(tmp_path / "o")]) == 2
    assert "objective 'acc' is not reported" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the arguments are checked


def test_one_objective_and_no_predictions(hpo_dir, tmp_path):
    from nni_diffusionnag.report.page import write_report

    page = write_report(hpo_dir, tmp_path / "r")
    text = page.read_text()
    assert "One objective (<code>default</code>)" in text
    assert list(_page_figures(page)) == ["progress", "predictions", "top-1", "top-2", "top-3"]
    assert "no surrogate predictions" in text  # the figure is a note
    assert "minimised (the optimize_mode in the experiment&#x27;s config)" in text
    # the best (lowest) first: h2 (0.25), drawn as its decision chain
    assert text.index("architecture of trial h2") < text.index("architecture of trial h1")


def test_pages_with_nothing_to_plot_and_with_many_objectives(tmp_path):
    from nni_diffusionnag.report.page import write_report

    empty = write_experiment(tmp_path / "empty", "empty", [], {"experimentType": "nas"})
    page = write_report(empty, tmp_path / "r0")
    assert list(_page_figures(page)) == ["progress", "predictions"]  # notes: nothing has finished
    assert "No trial has a numeric <code>default</code> yet" in page.read_text()

    trials = [(f"x{k}", {"a": k}, {"default": k % 3, "o1": k % 2, "o2": -k, "o3": k % 4}, "SUCCEEDED", 1000 * k,
               1000 * k + 500) for k in range(6)]
    many = write_experiment(tmp_path / "many", "many", trials, {"experimentType": "hpo"})
    page = write_report(many, tmp_path / "r4")
    assert list(_page_figures(page))[:3] == ["progress", "front", "predictions"]  # four objectives: no curve
    assert "drawn for up to 3 objectives" in page.read_text()


@pytest.mark.slow
def test_page_of_three_objectives_in_chromium(multi_dir, tmp_path):
    from nni_diffusionnag.report.page import write_report

    page = write_report(multi_dir, tmp_path / "r")
    shown = open_report_page(page, tmp_path / "chrome", ARTIFACTS / "report-three-objectives.png")
    check_report_page(shown, "multiexp", ["progress", "front", "hypervolume", "predictions",
                                          *[f"top-{k}" for k in range(1, 6)]])
    assert len(shown["trials"]) == 31


@pytest.mark.slow
def test_report_of_the_shared_ts_experiment(ts_experiment, tmp_path):
    """The Python route: the suite's 'ts' experiment (tests/conftest.py), read from its directory
    while its NNI manager may still run. What the report reads agrees with NNI's own trial list."""
    from nni_diffusionnag.report.page import write_report

    exp = ts_experiment.exp
    directory = Path(exp.config.experiment_working_directory) / exp.id
    record = load_experiment(directory)
    jobs = {job.trialJobId: job for job in ts_experiment.jobs}
    assert sorted(t.trial_id for t in record.trials) == sorted(jobs)
    for trial in record.trials:
        job = jobs[trial.trial_id]
        assert trial.status == job.status and trial.sample == job.hyperParameters[0].parameters["sample"]
        assert trial.value("default") == pytest.approx(ts_experiment.evaluator.table.lookup(trial.sample))
    page = write_report(directory, tmp_path / "r")
    shown = open_report_page(page, tmp_path / "chrome", ARTIFACTS / "report-ts.png")
    tops = min(5, ts_experiment.trials)
    check_report_page(shown, exp.id, ["progress", "predictions", *[f"top-{k}" for k in range(1, tops + 1)]])
    assert sorted(shown["trials"]) == sorted(jobs)
    assert "One objective (default)" in shown["text"]
    # the guided proposals after the warm-up were predicted (search/core.py writes the file): a scatter
    assert (directory / PREDICTIONS_FILE).is_file()
    assert re.search(rf"[1-9]\d* of {ts_experiment.trials} finished trials matched", shown["text"]), shown["text"]
    assert all(nb201_cell(t.sample) for t in top_trials(record.finished(), "maximize", tops))  # drawn as cells
