"""Read an NNI experiment straight from its directory: trials from ``db/nni.sqlite``, the search's
surrogate predictions from ``checkpoint/diffusionnag-predictions.jsonl`` (no NNI manager runs, NNI
is not imported).

The database is NNI's own (its manager writes it on both routes):

- ``TrialJobEvent(timestamp, trialJobId, event, data, ...)``: the status changes of every trial;
  the first event of a trial that carries ``data`` holds its parameters as JSON
  ``{"parameter_id": ..., "parameters": ...}``. On the NAS route ``parameters`` is a dumped model
  whose ``sample`` is the architecture ``{label: value}``; on the nnictl (tuner) route it is that
  dict itself.
- ``MetricData(timestamp, trialJobId, parameterId, type, sequence, data)``: rows of type ``FINAL``
  are final metrics, JSON encoded twice (NNI reads them with ``json.loads(json.loads(data))``): a
  number or a dict with ``'default'`` and other keys.
- ``ExperimentProfile(params, id, ..., revision)``: the experiment config as JSON, one row per
  revision; the tuner's (or advisor's) ``classArgs.optimize_mode`` is the only place an
  optimisation direction is recorded (a NAS strategy's is not).

Parameter ids are not unique keys: after ``nnictl resume`` NNI numbers parameters from 0 again
(seen in a resumed experiment's database), so trials are keyed by ``trialJobId``.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Trial", "ExperimentRecord", "Prediction", "PREDICTIONS_FILE", "find_experiment", "load_experiment",
           "load_predictions", "sample_key"]

_logger = logging.getLogger(__name__)

PREDICTIONS_FILE = Path("checkpoint") / "diffusionnag-predictions.jsonl"
# A trial's end: the last of these events (NNI's terminal trial statuses).
_TERMINAL = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")


@dataclass(frozen=True)
class Trial:
    """One NNI trial as the database records it.

    ``metric`` is the final metric as a dict (a scalar one becomes ``{'default': value}``), None
    without one; ``end`` is the time in ms of its last terminal event, else of its final metric
    (the order of trial end on the page).
    """

    trial_id: str
    status: str
    sample: Optional[Dict[str, Any]]
    metric: Optional[Dict[str, Any]]
    end: Optional[int]
    start: int

    def value(self, name: str) -> Optional[float]:
        """The finite number ``metric[name]``, else None (absent, not a number, NaN or inf)."""
        return _finite((self.metric or {}).get(name))


@dataclass(frozen=True)
class ExperimentRecord:
    """What the report reads of one experiment: its id, directory, type, trials (in order of their
    first event) and the optimize mode its profile records (None when it records none)."""

    experiment_id: str
    directory: Path
    experiment_type: str
    trials: List[Trial]
    optimize_mode: Optional[str] = None
    name: Optional[str] = None

    def finished(self) -> List[Trial]:
        """The trials with a final metric, in order of trial end."""
        done = [t for t in self.trials if t.metric is not None]
        return sorted(done, key=lambda t: (t.end if t.end is not None else t.start, t.start))

    def metric_keys(self) -> List[str]:
        """Every key of the final metrics, ``default`` first, then in order of appearance."""
        keys: Dict[str, None] = {}
        for t in self.finished():
            keys.update(dict.fromkeys(t.metric))
        return sorted(keys, key=lambda k: k != "default")  # stable: the others keep their order


@dataclass(frozen=True)
class Prediction:
    """What the search's surrogate predicted for one proposed architecture (units of ``default``)."""

    sample: Dict[str, Any]
    mean: float
    std: float = field(default=0.0)


def find_experiment(spec: str, home: Optional[Path] = None) -> Path:
    """The directory of an experiment given as a directory or as an id.

    ``spec`` is first taken as a directory; a bare name (no folder in it) is then looked up as an
    id: ``~/nni-experiments/<id>`` (NNI's default working directory), then nnictl's registry
    ``~/nni-experiments/.experiment``, whose ``logDir`` is the working directory the experiment
    was started with.

    Raises
    ------
    FileNotFoundError
        One line naming every place tried.
    """
    home = Path.home() if home is None else home
    given = Path(spec).expanduser()
    candidates = [given]
    registry = home / "nni-experiments" / ".experiment"
    registered = None
    if given.name == spec:  # a bare name may also be an id
        candidates.append(home / "nni-experiments" / spec)
        registered = _registered_dir(registry, spec)
        if registered is not None:
            candidates.append(registered)
    for path in candidates:
        if (path / "db" / "nni.sqlite").is_file():
            return path
    tried = ", ".join(dict.fromkeys(str(p.absolute()) for p in candidates))
    unlisted = f"; nnictl's registry {registry} does not list it" if given.name == spec and registered is None else ""
    raise FileNotFoundError(f"no NNI experiment {spec!r}: no db/nni.sqlite in {tried}{unlisted}; give an experiment "
                            "directory (<working directory>/<id>) or an experiment id")


def _registered_dir(registry: Path, exp_id: str) -> Optional[Path]:
    """``<logDir>/<id>`` from nnictl's experiment registry, None when it does not list ``exp_id``."""
    try:
        entry = json.loads(registry.read_text()).get(exp_id)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("logDir"), str):
        return None
    return Path(entry["logDir"]).expanduser() / exp_id


def load_experiment(directory: Path) -> ExperimentRecord:
    """Read the trials and profile of the experiment in ``directory`` (read-only: the database
    may belong to a running NNI manager)."""
    directory = Path(directory)
    db = directory / "db" / "nni.sqlite"
    if not db.is_file():
        raise FileNotFoundError(f"{db} is missing: {directory} is not an NNI experiment directory")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            events = con.execute("SELECT timestamp, trialJobId, event, data FROM TrialJobEvent "
                                 "ORDER BY timestamp, rowid").fetchall()
            finals = con.execute("SELECT timestamp, trialJobId, data FROM MetricData WHERE type = 'FINAL' "
                                 "ORDER BY timestamp, rowid").fetchall()
            profile = _profile(con)
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        raise ValueError(f"cannot read {db} as an NNI database: {err}") from None
    params = profile[0] if profile else {}
    exp_id = profile[1] if profile and profile[1] else directory.name
    trials = _trials(events, finals)
    _logger.info("experiment %s: %d trials (%d with a final metric) in %s", exp_id, len(trials),
                 sum(t.metric is not None for t in trials), directory)
    return ExperimentRecord(experiment_id=exp_id, directory=directory, trials=trials,
                            experiment_type=str(params.get("experimentType") or "unknown"),
                            optimize_mode=_optimize_mode(params), name=params.get("experimentName"))


def _profile(con: sqlite3.Connection) -> Optional[Tuple[dict, str]]:
    """(config, id) of the latest revision of the experiment profile, None without one."""
    try:
        row = con.execute("SELECT params, id FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:  # no such table: an experiment that never started
        return None
    if row is None:
        return None
    try:
        params = json.loads(row[0]) if row[0] else {}
    except ValueError:
        params = {}
    return (params if isinstance(params, dict) else {}), row[1]


def _optimize_mode(params: dict) -> Optional[str]:
    for role in ("tuner", "advisor"):
        mode = ((params.get(role) or {}).get("classArgs") or {}).get("optimize_mode")
        if isinstance(mode, str) and mode.lower() in ("maximize", "minimize"):
            return mode.lower()
    return None


def _trials(events: list, finals: list) -> List[Trial]:
    first: Dict[str, int] = {}
    status: Dict[str, str] = {}
    ended: Dict[str, int] = {}
    samples: Dict[str, Optional[dict]] = {}
    for timestamp, trial_id, event, data in events:
        first.setdefault(trial_id, timestamp)
        status[trial_id] = event
        if event in _TERMINAL:
            ended[trial_id] = timestamp
        if trial_id not in samples and data:
            samples[trial_id] = _sample(data, trial_id)
    metrics: Dict[str, Tuple[int, dict]] = {}
    for timestamp, trial_id, data in finals:  # a trial run again after a resume: its last result
        metric = _metric(data, trial_id)
        if metric is not None:
            metrics[trial_id] = (timestamp, metric)
            first.setdefault(trial_id, timestamp)
    trials = []
    for trial_id in sorted(first, key=first.get):
        metric = metrics.get(trial_id)
        end = ended.get(trial_id, metric[0] if metric else None)
        trials.append(Trial(trial_id=trial_id, status=status.get(trial_id, "UNKNOWN"), sample=samples.get(trial_id),
                            metric=metric[1] if metric else None, end=end, start=first[trial_id]))
    return trials


def _sample(data: str, trial_id: str) -> Optional[dict]:
    """The architecture ``{label: value}`` in a trial's parameters event, None if unreadable."""
    try:
        parameters = json.loads(data).get("parameters")
    except (ValueError, AttributeError):
        _logger.warning("trial %s: parameters are not JSON; its architecture is not shown", trial_id)
        return None
    if not isinstance(parameters, dict):
        return None
    if "__instance_type__" in parameters or "model_symbol" in parameters:  # a dumped NAS model
        for key in ("sample", "mutation_summary"):
            if isinstance(parameters.get(key), dict):
                return parameters[key]
        return None
    return parameters


def _metric(data: str, trial_id: str) -> Optional[dict]:
    try:
        value = json.loads(data)
        if isinstance(value, str):
            value = json.loads(value)
    except (TypeError, ValueError):
        _logger.warning("trial %s: final metric %r is not JSON; ignored", trial_id, data)
        return None
    if isinstance(value, dict):
        return value
    return {"default": value}


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def sample_key(sample: Dict[str, Any]) -> str:
    """A canonical key of an architecture: sorted labels, integral floats as ints (one writer's
    ``16.0`` is another's ``16``)."""
    def norm(value):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {str(k): norm(v) for k, v in value.items()}
        return value

    return json.dumps(norm(sample), sort_keys=True, default=str)


def load_predictions(directory: Path) -> Optional[List[Prediction]]:
    """The surrogate predictions the search wrote to ``checkpoint/diffusionnag-predictions.jsonl``
    (one ``{"sample": {...}, "mean": float, "std": float}`` per line); None when the file is absent.

    Lines that do not parse (the last one of a search still writing) are skipped with a warning.
    """
    path = Path(directory) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    out, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            mean, std = _finite(row["mean"]), _finite(row.get("std", 0.0))
            if not isinstance(row["sample"], dict) or mean is None:
                raise ValueError(line)
            out.append(Prediction(sample=row["sample"], mean=mean, std=abs(std or 0.0)))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
    if bad:
        _logger.warning("%s: %d line(s) are not {sample, mean, std} objects; skipped", path, bad)
    return out
