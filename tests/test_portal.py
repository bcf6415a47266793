"""nni#5726, nni#5693: at trial_concurrency > 1 every trial must be shown with its own architecture.

Unpatched NNI 3.0 hands parameters to whichever trial asks first (compat.js L78-83, L193-199), so
the portal can show trial A's architecture next to the metric of B's. ``nni_diffusionnag.integration.portal_fix``
binds each parameter set to its trial; these tests check the patch itself and a real experiment.
"""

from __future__ import annotations


import pytest

from nni_diffusionnag.integration import compat, portal_fix
from helpers import SHARED_TS_TRIALS, check_jobs



def test_patch_applies_to_the_installed_compat_js_and_is_idempotent(tmp_path):
    source = (portal_fix._nni_node_dir() / portal_fix.COMPAT_JS).read_text()
    patched = portal_fix.patch_source(source)
    assert patched != source and "this.parameters.push(" not in patched
    assert portal_fix.patch_source(patched) == patched
    overlay = portal_fix.overlay_dir(tmp_path)
    assert (overlay / portal_fix.COMPAT_JS).read_text() == patched
    assert (overlay / "main.js").is_file() and not (overlay / "main.js").is_symlink()
    assert (overlay / "node").resolve() == (portal_fix._nni_node_dir() / "node").resolve()
    assert portal_fix.overlay_dir(tmp_path) == overlay  # made once
    with pytest.raises(portal_fix.PatchError):
        portal_fix.patch_source("something else")


def test_compat_install_activates_the_fix_when_an_experiment_starts(monkeypatch):
    import nni_node
    from nni.experiment import Experiment

    compat.install()
    started = []
    monkeypatch.setattr(compat, "_installed", False)
    monkeypatch.setattr(Experiment, "_start_nni_manager", lambda self, *a, **k: started.append(portal_fix.is_active()))
    compat._patch_experiment_start()
    Experiment._start_nni_manager(object(), 8080, False)
    assert started == [True] and portal_fix.is_active()
    assert (portal_fix.Path(nni_node.__path__[0]) / portal_fix.COMPAT_JS).read_text().count("dnagEarlyRequests") > 0


@pytest.mark.slow
def test_concurrent_trials_show_their_own_architecture(ts_experiment):
    """The shared 'ts' experiment (tests/conftest.py): SHARED_TS_TRIALS trials at concurrency 2."""
    assert ts_experiment.trials == SHARED_TS_TRIALS
    check_jobs(ts_experiment.jobs, ts_experiment.evaluator, SHARED_TS_TRIALS)
    assert portal_fix.is_active()
