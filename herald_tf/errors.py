"""herald_tf's exception types; C ABI status codes map onto them in ``_core``."""

from __future__ import annotations


class HeraldError(RuntimeError):
    """Base class of herald_tf errors."""


class InvalidArgumentError(HeraldError, ValueError):
    """A caller passed a bad shape, dtype, id or value; nothing was changed."""


class OutOfRangeError(InvalidArgumentError):
    """An id or slot lies outside the storage; nothing was changed."""


class LibraryNotFoundError(HeraldError, ImportError):
    """A native library of herald_tf is missing or was built for something else."""
