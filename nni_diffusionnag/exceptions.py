"""Errors raised by nni-diffusionnag. Every message says what went wrong and how to fix it."""

from __future__ import annotations

__all__ = ["DiffusionNAGError", "SpaceMismatchError", "CheckpointError", "UnsupportedSpaceError"]


class DiffusionNAGError(Exception):
    """Base class of this package's errors."""


class SpaceMismatchError(DiffusionNAGError):
    """A checkpoint (prior, surrogate, meta-predictor) was made for another search space."""


class CheckpointError(DiffusionNAGError):
    """A checkpoint file is missing, unreadable or of an unknown format."""


class UnsupportedSpaceError(DiffusionNAGError, ValueError):
    """A search space (or one of its mutables) cannot be encoded as an architecture graph."""
