"""``nni-diffusionnag report``: one self-contained HTML page on an NNI experiment, read straight from
its directory (no NNI manager, NNI not imported): progress, Pareto front and hypervolume, the
search's surrogate predictions against the results, the top architectures drawn as graphs, and a
table of every trial (docs/design.md, 'The report').

:mod:`.reading` reads the database and the predictions, :mod:`.analysis` computes the numbers,
:mod:`.figures` and :mod:`.architectures` draw them, :mod:`.page` writes the page, and
:mod:`.command` is the command line. Only :mod:`.reading` is imported with the package, so that
building the CLI parser does not load matplotlib; ``write_report`` is imported on first use.
"""

from .reading import ExperimentRecord, Trial, find_experiment, load_experiment

__all__ = ["ExperimentRecord", "Trial", "find_experiment", "load_experiment", "write_report"]


def __getattr__(name: str):
    if name == "write_report":  # PEP 562: matplotlib loads when the report is written, not before
        from .page import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
