"""The ``nni-diffusionnag report EXPERIMENT`` command: its arguments and what it runs (cli.py adds
the subcommand; matplotlib is imported only when it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_report_arguments", "run_report"]

HELP = ("one self-contained HTML page (+ PNGs) on an NNI experiment: progress, Pareto front, surrogate, "
        "top architectures")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: must be >= 1")
    return value


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="an experiment directory (<working directory>/<id>, holding db/nni.sqlite) or "
                                      "an experiment id (looked up under ~/nni-experiments)")
    p.add_argument("--objectives", default=None, metavar="NAME:max|min,...",
                   help="keys of the final metric to build the Pareto front of, e.g. default:max,latency_ms:min "
                        "(default: 'default' in the experiment's direction, plus every other numeric key, minimised)")
    p.add_argument("--minimize", action="store_true",
                   help="'default' is minimised (NAS experiments do not record their strategy's optimize_mode)")
    p.add_argument("--top", type=_positive, default=5, help="how many of the best architectures to draw (default 5)")
    p.add_argument("--output", default=None,
                   help="folder for report.html and the PNG files (default: ./nni-diffusionnag-report-<id>)")


def run_report(args: argparse.Namespace) -> int:
    from .page import write_report

    page = write_report(args.experiment, Path(args.output) if args.output else None, objectives=args.objectives,
                        minimize=args.minimize, top=args.top)
    print(f"report written to {page}")
    return 0
