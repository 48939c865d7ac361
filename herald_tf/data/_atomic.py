"""Data files written whole or not at all: a temporary file in the same folder, then a rename.

``make`` treats an existing target as done, so a generator interrupted mid-write must not leave a
truncated file under the target's name; workers that share a folder may also write the same file
at once. :func:`atomic_text_file` writes to ``.<name>.<random>.tmp`` beside ``path`` and renames
it over ``path`` (atomic on POSIX within one file system) only when the writing finished; on any
error the temporary file is removed and ``path`` is left as it was (a killed writer leaves only
the hidden temporary file). :func:`fsync_path` flushes a file or a folder's entries, for
writers that publish by a rename of their own (PS checkpoints, kept parsed samples).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import TextIO


def _create_beside(path: str) -> tuple[int, str]:
    """A new, empty file next to ``path``: (descriptor, name). Made with mode 0666 so that the
    umask applies as with ``open`` (``tempfile.mkstemp`` would make it 0600)."""
    folder, name = os.path.split(path)
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"Expected a free temporary name beside {path}. Received: 100 taken")


@contextlib.contextmanager
def atomic_text_file(path: str | os.PathLike, encoding: str = "ascii") -> Iterator[TextIO]:
    """A text file (``newline="\\n"``) that replaces ``path`` when the ``with`` block ends
    without an error; otherwise it is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the rename must not publish data still in the page cache
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file, or a folder's entries (a rename in it), to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
