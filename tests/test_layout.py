"""The data flow is the folder layout, and only the NNI adapters import NNI."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import nni_diffusionnag
import pytest

from helpers import BASE_ENV, ROOT, light_job

PACKAGE = Path(nni_diffusionnag.__file__).resolve().parent
# Consumers of the whole stack: the adapters themselves, the benchmarks against NNI's strategies, the CLI.
NNI_ALLOWED = ("nni_diffusionnag.integration", "nni_diffusionnag.bench", "nni_diffusionnag.cli")


def _modules() -> list:
    return sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="nni_diffusionnag."))


def _is_shim(name: str) -> bool:
    """A top-level module that only re-exports an adapter (import paths NNI stores)."""
    path = PACKAGE / (name.split(".", 1)[1].replace(".", "/") + ".py")
    if not path.is_file() or name.count(".") != 1:
        return False
    code = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith(("#", '"""'))]
    body = "\n".join(code)
    return "from .integration." in body and all(
        ln.startswith(("from .integration", "    ", "if __name__", "NNI stores", "paths inside", "Import path"))
        or ln.endswith('"""') or "." in ln and not ln.startswith("import") for ln in code)


def test_stages_are_folders():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert {"space", "diffusion", "nn", "properties", "prior", "transfer", "search", "integration"} <= folders


@light_job
def adapters_only_import_nni():
    names = [n for n in _modules() if not n.startswith(NNI_ALLOWED) and not _is_shim(n)]
    code = f"""
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "nni" or name.startswith("nni.") or name == "nni_node":
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
failed = []
for name in {names!r}:
    try:
        importlib.import_module(name)
    except ImportError as err:
        failed.append((name, str(err)))
print(failed)
"""
    return lambda: (names, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                          env=BASE_ENV, cwd=ROOT))


@pytest.mark.background_job("adapters_only_import_nni")
def test_only_the_adapters_import_nni(background_result):
    """Every other module imports with ``nni`` made unimportable (walked, not listed by hand). The
    interpreter runs on the background subprocess worker (tests/helpers.py)."""
    names, out = background_result()
    assert len(names) > 25, names  # the walk found the package
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout


def test_shims_resolve_the_paths_nni_stores():
    import nni_diffusionnag.compat as compat
    import nni_diffusionnag.evaluators as evaluators
    import nni_diffusionnag.tuner as tuner
    from nni_diffusionnag.integration import compat as real_compat, tuner as real_tuner

    assert tuner.DiffusionNAGTuner is real_tuner.DiffusionNAGTuner
    assert tuner.DiffusionNAGClassArgsValidator is real_tuner.DiffusionNAGClassArgsValidator
    assert compat.MutationSummaryModelSpace is real_compat.MutationSummaryModelSpace
    assert evaluators.TabularEvaluator.__name__ == "TabularEvaluator"
    meta = (PACKAGE / "meta.yml").read_text()
    assert "className: nni_diffusionnag.tuner.DiffusionNAGTuner" in meta


@light_job
def import_writes_nothing(tmp_path):
    env = {"HOME": str(tmp_path), "NNI_DIFFUSIONNAG_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "PATH": "/usr/bin:/bin"}
    code = ("import nni_diffusionnag, nni_diffusionnag.integration.strategy, nni_diffusionnag.integration.tuner, "
            "nni_diffusionnag.integration.compat as c; c.install()")
    return lambda: (tmp_path, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                             env=env, cwd=tmp_path))


@pytest.mark.background_job("import_writes_nothing")
def test_import_writes_nothing(background_result):
    """Importing the package and its adapters leaves the cache and home untouched. The interpreter
    runs on the background subprocess worker (tests/helpers.py)."""
    tmp_path, out = background_result()
    assert out.returncode == 0, out.stderr[-3000:]
    # matplotlib (imported by NNI's dependencies, not by us) builds its font cache on first import
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "matplotlib" not in p.parts]
    assert written == [], written
