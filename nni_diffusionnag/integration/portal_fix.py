"""Fix for NNI 3.0's trial/parameter swap at ``trialConcurrency > 1`` (nni#5726, nni#5693).

NNI 3.0's local and remote training services run behind the v3 compatibility layer
``nni_node/training_service/v3/compat.js``. It pushes every new parameter set into one FIFO
(L79) and hands the head of that FIFO to whichever trial asks first (L198-199). With two or more
trials starting at once, a trial can therefore *run* another trial's parameters: the web portal
shows the parameters assigned to trial A next to the metric of the architecture that B's
parameters describe.

The fix binds each parameter set to the trial created for it: ``createTrialJob`` records the
parameters under the new trial's id (``allocatedParameters``, which NNI already uses for resumed
trials), and a request that arrives before ``createTrial`` has returned the id is answered as
soon as it has.

NNI installs ``nni_node`` read-only in site-packages, so the patched file lives in an *overlay*
copy: the small JavaScript directories are copied (about 1.5 MB), the big entries (``node``,
``node_modules``, ``static``) are symlinked, and ``compat.js`` is patched. The overlay is made once
per NNI version and patch in ``$NNI_DIFFUSIONNAG_CACHE`` (default
``~/.cache/nni-diffusionnag``). :func:`install` then points ``nni_node.__path__`` at it; both
launchers of NNI (``nni/experiment/launcher.py`` L158-160 and
``nni/tools/nnictl/legacy_launcher.py`` L58-67) start ``node main.js`` from
``nni_node.__path__[0]``, so every NNI manager started by this Python process uses the fixed
layer: ``NasExperiment`` / :class:`~nni_diffusionnag.integration.compat.DiffusionNAGExperiment` and ``nnictl``
when run through this module::

    python -m nni_diffusionnag.integration.portal_fix create --config config.yml   # = nnictl create ...

Plain ``nnictl`` does not import this package, so it keeps NNI's behaviour; use the command above
(or ``trialConcurrency: 1``) with the tuner route. Set ``NNI_DIFFUSIONNAG_PORTAL_FIX=0`` to
disable the fix.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["install", "overlay_dir", "is_active", "PatchError"]

_logger = logging.getLogger(__name__)

COMPAT_JS = Path("training_service", "v3", "compat.js")
# Entries of nni_node that are symlinked, not copied (large; never require() our patched file).
_LINKED = ("node", "node.exe", "node_modules", "static", "package-lock.json", "package-lock.lock")
_MARKER = "/* nni-diffusionnag: parameters bound to their trial */"

# (original, replacement) pairs applied to compat.js; each original must occur exactly once.
_EDITS: tuple[tuple[str, str], ...] = (
    # 1. createTrialJob: never push new parameters into the shared FIFO.
    (
        "        if (trialId === null) {\n"
        "            this.parameters.push(form.hyperParameters.value);\n"
        "        }\n"
        "        else {\n"
        "            this.allocatedParameters.set(trialId, form.hyperParameters.value);\n"
        "        }\n",
        "        " + _MARKER + "\n"
        "        if (trialId !== null) {\n"
        "            this.allocatedParameters.set(trialId, form.hyperParameters.value);\n"
        "        }\n",
    ),
    # 2. ... bind them to the trial as soon as its id is known (or answer its early request).
    (
        "        let trial;\n"
        "        if (this.trialJobs[trialId] === undefined) {\n",
        "        if (this.dnagEarlyRequests !== undefined && this.dnagEarlyRequests.has(trialId)) {\n"
        "            this.dnagEarlyRequests.delete(trialId);\n"
        "            this.allocatedParameters.delete(trialId);\n"
        "            await this.v3.sendParameter(trialId, form.hyperParameters.value);\n"
        "        }\n"
        "        else if (!this.allocatedParameters.has(trialId)) {\n"
        "            this.allocatedParameters.set(trialId, form.hyperParameters.value);\n"
        "        }\n"
        "        let trial;\n"
        "        if (this.trialJobs[trialId] === undefined) {\n",
    ),
    # 3. onRequestParameter: a trial that asks before createTrial() returned waits for its own.
    (
        "            else {\n"
        "                logger.error('No parameters available');\n"
        "            }\n",
        "            else {\n"
        "                if (this.dnagEarlyRequests === undefined) {\n"
        "                    this.dnagEarlyRequests = new Set();\n"
        "                }\n"
        "                this.dnagEarlyRequests.add(trialId);\n"
        "                logger.debug(`Trial ${trialId} asked for parameters before its creation returned`);\n"
        "            }\n",
    ),
)

_lock = threading.Lock()
_active: Path | None = None


class PatchError(RuntimeError):
    """The installed compat.js does not look like the one this fix was written for."""


def _nni_node_dir() -> Path:
    import nni_node

    return Path(nni_node.__file__).resolve().parent


def patch_source(text: str) -> str:
    """Return compat.js ``text`` with the fix applied (idempotent)."""
    if _MARKER in text:
        return text
    for old, new in _EDITS:
        count = text.count(old)
        if count != 1:
            raise PatchError(f"expected one occurrence of a patched block in {COMPAT_JS}, found {count}:\n{old}")
        text = text.replace(old, new)
    return text


def _patch_key(source: Path) -> str:
    import nni

    digest = hashlib.sha256((source / COMPAT_JS).read_bytes() + str(source).encode())
    for old, new in _EDITS:
        digest.update(old.encode() + b"\0" + new.encode())
    return f"nni_node-{nni.__version__}-{digest.hexdigest()[:12]}"


def _cache_root() -> Path:
    env = os.environ.get("NNI_DIFFUSIONNAG_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "nni-diffusionnag" if xdg else Path.home() / ".cache" / "nni-diffusionnag"


def overlay_dir(cache: Path | None = None) -> Path:
    """Create (once) and return the patched overlay of the installed ``nni_node``."""
    source = _nni_node_dir()
    root = Path(cache) if cache is not None else _cache_root()
    target = root / _patch_key(source)
    if (target / COMPAT_JS).is_file() and _MARKER in (target / COMPAT_JS).read_text():
        return target
    patched = patch_source((source / COMPAT_JS).read_text())  # fail before copying anything
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        for entry in source.iterdir():
            if entry.name == "__pycache__":
                continue
            dest = tmp / entry.name
            if entry.name in _LINKED:
                dest.symlink_to(entry)
            elif entry.is_dir():
                shutil.copytree(entry, dest, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(entry, dest)
        (tmp / COMPAT_JS).write_text(patched)
        try:
            os.replace(tmp, target)  # atomic; another process may have won the race
        except OSError:
            if not (target / COMPAT_JS).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _logger.info("Patched nni_node overlay (trial/parameter binding) created at %s", target)
    return target


def is_active() -> bool:
    """Whether NNI managers started by this process use the patched overlay."""
    return _active is not None


def install() -> bool:
    """Point ``nni_node`` at the patched overlay (idempotent). Returns whether the fix is active.

    Never raises: on failure it logs a warning that trials at ``trial_concurrency > 1`` may be
    shown with another trial's parameters.
    """
    global _active
    if os.environ.get("NNI_DIFFUSIONNAG_PORTAL_FIX", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    with _lock:
        if _active is not None:
            return True
        try:
            import nni_node

            overlay = overlay_dir()
            nni_node.__path__[:] = [str(overlay)]
            _active = overlay
        except Exception as err:  # noqa: BLE001 - the fix is optional, NNI still works without it
            _logger.warning(
                "Could not apply the NNI trial/parameter binding fix (%s). With trial_concurrency > 1, "
                "the web portal may show a trial with another trial's parameters (nni#5726); use "
                "trial_concurrency=1 if that matters.", err)
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``nnictl`` with the fix: ``python -m nni_diffusionnag.integration.portal_fix <nnictl arguments>``."""
    if not install():
        print("[nni-diffusionnag] warning: running nnictl without the trial/parameter binding fix", file=sys.stderr)
    from nni.tools.nnictl.nnictl import parse_args

    sys.argv = ["nnictl", *(sys.argv[1:] if argv is None else argv)]
    parse_args()
    return 0


if __name__ == "__main__":
    sys.exit(main())
