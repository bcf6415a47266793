"""Quality figures of generated architectures: validity, uniqueness, novelty, op frequencies."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..space.base import GraphSpace

__all__ = ["quality_report", "format_report"]


def quality_report(space: GraphSpace, types: np.ndarray, valid: np.ndarray,
                   train_types: Optional[np.ndarray] = None,
                   reference_freq: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Figures for a batch of generated graphs.

    Parameters
    ----------
    types
        ``[B, N]`` repaired node types (all members of the space).
    valid
        ``[B]`` strict validity before repair.
    train_types
        ``[M, N]`` the prior's training graphs, for novelty.
    reference_freq
        ``[N, V]`` per-node type frequencies of the space (default: ``space.reference_freq()``).

    Returns
    -------
    dict with ``n``, ``validity`` (strict, fraction), ``repaired`` (fraction that needed repair),
    ``uniqueness`` (unique / valid), ``novelty`` (valid unique not in ``train_types`` / valid
    unique), per-node ``freq`` ``[N][V]``, per-node total variation ``tv`` to the reference and
    ``max_tv`` over the nodes that have a choice.
    """
    types = np.asarray(types)
    valid = np.asarray(valid, dtype=bool)
    n = len(types)
    keys = [space.key(t) for t in types[valid]]
    uniq = set(keys)
    report: Dict[str, Any] = {
        "n": n,
        "validity": float(valid.mean()) if n else 0.0,
        "repaired": float(1 - valid.mean()) if n else 0.0,
        "uniqueness": len(uniq) / max(1, len(keys)),
    }
    if train_types is not None:
        seen = {space.key(t) for t in np.asarray(train_types)}
        report["novelty"] = len(uniq - seen) / max(1, len(uniq))
    legal = space.legal
    ref = reference_freq if reference_freq is not None else space.reference_freq()
    freq = np.stack([np.bincount(types[:, i], minlength=space.num_types) / max(1, n) for i in range(space.num_nodes)])
    tv = 0.5 * np.abs(freq - ref).sum(1)
    choice_nodes = legal.sum(1) > 1
    report["freq"] = freq.round(4).tolist()
    report["tv"] = tv.round(4).tolist()
    report["max_tv"] = float(tv[choice_nodes].max()) if choice_nodes.any() else 0.0
    return report


def format_report(report: Dict[str, Any], space: GraphSpace) -> str:
    """A few human-readable lines."""
    lines = [
        f"graphs: {report['n']}  validity (strict): {report['validity']:.1%}  needed repair: {report['repaired']:.1%}",
        f"uniqueness: {report['uniqueness']:.1%}" + (f"  novelty: {report['novelty']:.1%}" if "novelty" in report else ""),
        f"max total variation of per-node type frequencies vs the space: {report['max_tv']:.3f}",
    ]
    return "\n".join(lines)
