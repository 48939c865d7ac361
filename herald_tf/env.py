"""Every ``HERALD_*`` environment variable herald_tf reads, read here and only here."""

from __future__ import annotations

import os

#: Directory holding libherald_core.so and _herald_ops.so (default: herald_tf/lib).
LIB_DIR_VAR = "HERALD_LIB_DIR"


def lib_dir() -> str:
    """Directory of the native libraries: ``$HERALD_LIB_DIR`` or the package's ``lib/``."""
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib")
    return os.environ.get(LIB_DIR_VAR, default)

#: Cluster token of the parameter servers, when not given by --token / --token-file.
PS_TOKEN_VAR = "HERALD_PS_TOKEN"


def ps_token() -> str | None:
    """The cluster token from ``$HERALD_PS_TOKEN``, or None when unset or empty."""
    return os.environ.get(PS_TOKEN_VAR) or None
