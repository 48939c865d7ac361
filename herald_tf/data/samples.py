"""A training run's samples: the first part trains, the last ``held_out_fraction`` is held out.

``read_samples`` parses a Criteo or Avazu file once, chunk by chunk, into three flat binary
files (keys, dense features, labels) and maps them into memory; the files are unlinked as soon
as they are mapped, so they vanish with the process, however it ends, unless they are kept:
then the processes of a host share one parse, and later runs reuse it. Training, evaluation and
schedule replays then slice the mapping: the process never holds the whole parsed file (the
kernel pages it in and drops it as needed), and each pass costs a read, not a parse (parsing
is the slow part: about 40k lines/s here). Generated samples use the same ``Samples`` over
in-memory arrays.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from herald_tf.data import avazu as avazu_format
from herald_tf.data import criteo as criteo_format
from herald_tf.data._atomic import fsync_path
from herald_tf.data.avazu import AvazuFormatError, AvazuReader
from herald_tf.data.criteo import CriteoBatch, CriteoFormatError, CriteoReader

Reader = CriteoReader | AvazuReader
_ARRAYS = (("keys", np.int64), ("dense", np.float32), ("labels", np.int8))
_RECORD = "samples.json"  # a parsed folder's count, widths and skipped lines
_FORMAT_VERSION = 1  # of the parsed files: a change makes kept folders of older ones unused


class Samples:
    """Samples split into a training part and a held-out tail (file or generation order).

    Args:
        batch: the samples (arrays in memory, or mapped from files by ``read_samples``).
        held_out_fraction: the tail held out for evaluation, in [0, 1).

    Attributes:
        num_train, num_held_out: samples of the training part and of the held-out tail.
        fields: categorical fields per sample (key columns).
        dense_width: numeric features per sample (0 for Avazu).
    """

    def __init__(self, batch: CriteoBatch, held_out_fraction: float) -> None:
        if not 0 <= held_out_fraction < 1:
            raise ValueError(f"Expected 0 <= held_out_fraction < 1. Received: {held_out_fraction}")
        self.data = batch
        self.num_held_out = int(len(batch) * held_out_fraction)
        self.num_train = len(batch) - self.num_held_out
        self.fields = batch.keys.shape[1]
        self.dense_width = batch.dense.shape[1]
        self._distinct: int | None = None

    def _copy(self, begin: int, end: int) -> CriteoBatch:
        s = self.data
        return CriteoBatch(labels=np.array(s.labels[begin:end]),
                           dense=np.array(s.dense[begin:end]), keys=np.array(s.keys[begin:end]))

    def train_batches(self, batch: int) -> Iterator[CriteoBatch]:
        """One epoch: ``num_train // batch`` batches of exactly ``batch`` training samples, in
        order (the remainder is not trained, as a fixed steps-per-epoch asks)."""
        for begin in range(0, self.num_train // batch * batch, batch):
            yield self._copy(begin, begin + batch)

    def held_out(self, batch: int) -> Iterator[CriteoBatch]:
        """The held-out samples in batches of ``batch`` (the last one may be shorter)."""
        end = len(self.data)
        for begin in range(self.num_train, end, batch):
            yield self._copy(begin, min(begin + batch, end))

    def distinct_train_keys(self, chunk: int = 1 << 16) -> int:
        """How many distinct keys the training part holds (counted once, then kept). Chunks'
        distinct keys are merged into a sorted set whenever they outgrow it, so memory stays
        near the distinct keys and the work O(n log n)."""
        if self._distinct is None:
            seen = np.zeros(0, np.int64)
            pending: list[np.ndarray] = []
            pending_size = 0
            for begin in range(0, self.num_train, chunk):
                pending.append(np.unique(self.data.keys[begin:min(begin + chunk,
                                                                     self.num_train)]))
                pending_size += pending[-1].size
                if pending_size > seen.size:
                    seen = np.unique(np.concatenate([seen, *pending]))
                    pending, pending_size = [], 0
            self._distinct = int(np.unique(np.concatenate([seen, *pending])).size)
        return self._distinct


def read_samples(reader: Reader, limit: int | None, held_out_fraction: float,
                 warn: Callable[[str], None], cache_dir: str | None = None,
                 keep: bool = False) -> Samples:
    """The first ``limit`` usable samples (all with None) of ``reader``'s file, parsed once into
    files under ``cache_dir`` (default: the data file's folder) and mapped into memory.

    By default each call parses its own copy and unlinks it once mapped. With ``keep`` the
    parsed samples stay in ``cache_dir`` (``herald-samples-<digest>``, named after the file's
    identity, size, modification time, the format and the parse options) and are shared: the
    processes of one host that read the same file take turns on a lock, the first parses and
    the others (and later runs) map its files. Lines the reader skipped are reported in one
    message through ``warn``. Raises the reader's format error for a file with no usable line
    (naming the file and the format expected), or at the first malformed line when the reader
    is strict; ``OSError`` naming ``cache_dir`` when the parsed samples cannot be written there,
    or naming a kept folder whose files do not match its record.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"Expected limit >= 1 or None. Received: {limit}")
    parent = cache_dir or os.path.dirname(os.path.abspath(reader.path))
    if not keep:
        folder = _new_folder(reader, parent)
        try:
            record = _parse_into(reader, limit, folder)
            batch = _map(folder, record)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # the mappings keep the data
    else:
        folder = os.path.join(parent, f"herald-samples-{_digest(reader, limit)}")
        with _parse_lock(folder + ".lock", reader, parent, warn):
            if os.path.exists(os.path.join(folder, _RECORD)):
                record = _read_record(folder)
            else:
                parsing = _new_folder(reader, parent, shared=True)
                try:
                    record = _parse_into(reader, limit, parsing)
                    _publish(parsing, folder)
                except BaseException:
                    shutil.rmtree(parsing, ignore_errors=True)
                    raise
            batch = _map(folder, record)
    if record["skipped"]:
        read = " among the lines read" if record["limited"] else ""
        warn(f"warning: {reader.path}: skipped {record['skipped']} malformed lines{read} "
             f"(expected {_expected(reader)}); --strict-data stops at the first one")
    return Samples(batch, held_out_fraction)


def _expected(reader: Reader) -> str:
    if isinstance(reader, AvazuReader):
        return f"Avazu CSV: the Avazu header, then lines of {avazu_format.LINE_FORMAT}"
    return f"Criteo Kaggle TSV: {criteo_format.LINE_FORMAT}"


def _new_folder(reader: Reader, parent: str, shared: bool = False) -> str:
    """A new hidden folder in ``parent``: private (0700), or as ``mkdir`` makes it when it is to
    be kept and shared (the umask applies)."""
    try:
        if not shared:
            return tempfile.mkdtemp(prefix=".herald-samples-", dir=parent)
        folder = os.path.join(parent, f".herald-samples-{secrets.token_hex(8)}")
        os.mkdir(folder)
        return folder
    except OSError as e:
        raise _unwritable(reader, parent, e) from e


def _unwritable(reader: Reader, parent: str, e: OSError) -> OSError:
    return OSError(f"Expected a writable folder for the parsed samples of {reader.path}. "
                   f"Received: {parent} ({e.strerror}); choose another with --data-cache-dir")


def _digest(reader: Reader, limit: int | None) -> str:
    """Names the parsed samples of this file as it is now, read with these options: a changed
    or replaced file (size, modification time, inode) gets a new name."""
    st = os.stat(reader.path)
    what = {"version": _FORMAT_VERSION, "format": type(reader).__name__,
            "path": os.path.realpath(reader.path), "device": st.st_dev, "inode": st.st_ino,
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "limit": limit,
            "strict": reader.strict}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


@contextlib.contextmanager
def _parse_lock(path: str, reader: Reader, parent: str,
                warn: Callable[[str], None]) -> Iterator[None]:
    """Holds the lock of one kept folder: the processes that read the same file wait here while
    one of them parses it (the kernel releases the lock of a process that dies)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise _unwritable(reader, parent, e) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            warn(f"{reader.path}: waiting for another process that parses it into "
                 f"{path[:-len('.lock')]}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _publish(parsing: str, folder: str) -> None:
    """Makes a finished parse the kept folder: its files reach the disk before the rename
    names them, so a crash leaves the folder whole or absent."""
    for name in os.listdir(parsing):
        fsync_path(os.path.join(parsing, name))
    os.rename(parsing, folder)
    fsync_path(os.path.dirname(folder))  # the rename itself


def _shapes(record: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    n = record["samples"]
    return {"keys": (n, record["fields"]), "dense": (n, record["dense_width"]), "labels": (n,)}


def _read_record(folder: str) -> dict[str, Any]:
    """The record of a kept folder, checked against its files."""
    def refuse(received: str) -> OSError:
        return OSError(f"Expected {folder} to hold parsed samples as its {_RECORD} records "
                       f"them. Received: {received}; remove the folder to parse the file again")

    try:
        with open(os.path.join(folder, _RECORD), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise refuse(f"an unreadable {_RECORD} ({e})") from e
    if not isinstance(record, dict) or record.get("version") != _FORMAT_VERSION or not all(
            isinstance(record.get(k), int) and record[k] >= 0
            for k in ("samples", "fields", "dense_width", "skipped")) or not isinstance(
            record.get("limited"), bool):
        raise refuse(f"{_RECORD} {record!r}")
    shapes = _shapes(record)
    for name, dtype in _ARRAYS:
        path = os.path.join(folder, name)
        size = os.path.getsize(path) if os.path.exists(path) else None
        expected = math.prod(shapes[name]) * np.dtype(dtype).itemsize
        if size != expected:
            raise refuse(f"'{name}' of {size} bytes, not {expected}")
    return record


def _map(folder: str, record: dict[str, Any]) -> CriteoBatch:
    shapes = _shapes(record)
    # (mmap cannot map an empty file: Avazu has no dense features)
    return CriteoBatch(**{name: np.memmap(os.path.join(folder, name), dtype, "r", 0,
                                          shapes[name])
                          if math.prod(shapes[name]) else np.zeros(shapes[name], dtype)
                          for name, dtype in _ARRAYS})


def _parse_into(reader: Reader, limit: int | None, folder: str) -> dict[str, Any]:
    """Appends the first ``limit`` samples to one flat file per array and writes their record
    (count, widths, lines skipped); refuses a file with no usable line."""
    n, shape = 0, (0, 0)
    files = {name: open(os.path.join(folder, name), "wb") for name, _ in _ARRAYS}
    try:
        for part in reader:
            take = len(part) if limit is None else min(len(part), limit - n)
            if take and not n:
                shape = (part.keys.shape[1], part.dense.shape[1])
            for name, dtype in _ARRAYS:
                np.ascontiguousarray(getattr(part, name)[:take], dtype).tofile(files[name])
            n += take
            if limit is not None and n >= limit:
                break
    finally:
        for f in files.values():
            f.close()
    if not n:
        raise (AvazuFormatError if isinstance(reader, AvazuReader) else CriteoFormatError)(
            f"Expected {_expected(reader)}. Received: no usable line in {reader.path} "
            f"({reader.skipped} malformed lines skipped)")
    record = {"version": _FORMAT_VERSION, "samples": n, "fields": shape[0],
              "dense_width": shape[1], "skipped": reader.skipped,
              "limited": limit is not None and n >= limit}
    with open(os.path.join(folder, _RECORD), "w", encoding="utf-8") as f:
        json.dump(record, f)
    return record
