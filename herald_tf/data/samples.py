"""A training run's samples: the first part trains, the last ``held_out_fraction`` is held out.

``read_samples`` parses a Criteo or Avazu file once, chunk by chunk, into three flat binary
files (keys, dense features, labels) and maps them into memory; the files are unlinked as soon
as they are mapped, so they vanish with the process, however it ends. Training, evaluation and
schedule replays then slice the mapping: the process never holds the whole parsed file (the
kernel pages it in and drops it as needed), and each pass costs a read, not a parse (parsing
is the slow part: about 40k lines/s here). Generated samples use the same ``Samples`` over
in-memory arrays.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

from herald_tf.data import avazu as avazu_format
from herald_tf.data import criteo as criteo_format
from herald_tf.data.avazu import AvazuFormatError, AvazuReader
from herald_tf.data.criteo import CriteoBatch, CriteoFormatError, CriteoReader

Reader = CriteoReader | AvazuReader
_ARRAYS = (("keys", np.int64), ("dense", np.float32), ("labels", np.int8))


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
                 warn: Callable[[str], None], cache_dir: str | None = None) -> Samples:
    """The first ``limit`` usable samples (all with None) of ``reader``'s file, parsed once into
    files under ``cache_dir`` (default: the data file's folder) and mapped into memory.

    Lines the reader skipped are reported in one message through ``warn``. Raises the reader's
    format error for a file with no usable line (naming the file and the format expected), or
    at the first malformed line when the reader is strict; ``OSError`` naming ``cache_dir``
    when the parsed samples cannot be written there.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"Expected limit >= 1 or None. Received: {limit}")
    folder_parent = cache_dir or os.path.dirname(os.path.abspath(reader.path))
    try:
        folder = tempfile.mkdtemp(prefix=".herald-samples-", dir=folder_parent)
    except OSError as e:
        raise OSError(f"Expected a writable folder for the parsed samples of {reader.path}. "
                      f"Received: {folder_parent} ({e.strerror}); choose another with "
                      "--data-cache-dir") from e
    try:
        n, shape = _parse_into(reader, limit, folder)
        avazu = isinstance(reader, AvazuReader)
        expected = (f"Avazu CSV: the Avazu header, then lines of {avazu_format.LINE_FORMAT}"
                    if avazu else f"Criteo Kaggle TSV: {criteo_format.LINE_FORMAT}")
        if not n:
            raise (AvazuFormatError if avazu else CriteoFormatError)(
                f"Expected {expected}. Received: no usable line in {reader.path} "
                f"({reader.skipped} malformed lines skipped)")
        if reader.skipped:
            read = " among the lines read" if limit is not None and n >= limit else ""
            warn(f"warning: {reader.path}: skipped {reader.skipped} malformed lines{read} "
                 f"(expected {expected}); --strict-data stops at the first one")
        shapes = {"keys": (n, shape[0]), "dense": (n, shape[1]), "labels": (n,)}
        # (mmap cannot map an empty file: Avazu has no dense features)
        mapped = {name: np.memmap(os.path.join(folder, name), dtype, "r", 0, shapes[name])
                  if math.prod(shapes[name]) else np.zeros(shapes[name], dtype)
                  for name, dtype in _ARRAYS}
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the mappings keep the data
    return Samples(CriteoBatch(**mapped), held_out_fraction)


def _parse_into(reader: Reader, limit: int | None, folder: str) -> tuple[int, tuple[int, int]]:
    """Appends the first ``limit`` samples to one flat file per array; returns their count and
    the (key, dense) widths."""
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
    return n, shape
