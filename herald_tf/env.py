"""Every ``HERALD_*`` environment variable herald_tf reads, read here and only here."""

from __future__ import annotations

import os

#: Directory holding libherald_core.so and _herald_ops.so (default: herald_tf/lib).
LIB_DIR_VAR = "HERALD_LIB_DIR"


def lib_dir() -> str:
    """Directory of the native libraries: ``$HERALD_LIB_DIR`` or the package's ``lib/``."""
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    return os.environ.get(LIB_DIR_VAR, default)
