"""Reading and writing checkpoints that carry the signature of their search space."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from ..exceptions import CheckpointError
from ..space.base import SpaceSignature

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | os.PathLike, kind: str, signature: SpaceSignature, payload: Dict[str, Any]) -> None:
    """Write ``payload`` with its kind and space signature, atomically (a crash mid-write never
    destroys the previous checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": f"nni-diffusionnag/{kind}", "version": 1, "signature": signature.to_dict(), **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, kind: str, expected: SpaceSignature | None = None,
                    map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Load a checkpoint of ``kind``; if ``expected`` is given, raise
    :class:`~nni_diffusionnag.exceptions.SpaceMismatchError` unless the signatures agree."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {kind} checkpoint at '{path}'")
    try:
        # Our own files hold only tensors and plain containers, so the safe loader suffices.
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the path and the cause
        raise CheckpointError(f"cannot read '{path}' as a {kind} checkpoint: {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != f"nni-diffusionnag/{kind}":
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"'{path}' is not a {kind} checkpoint of nni-diffusionnag (format: {found})")
    if expected is not None:
        expected.check_matches(SpaceSignature.from_dict(ckpt["signature"]), what=f"{kind} checkpoint '{path.name}'")
    return ckpt
