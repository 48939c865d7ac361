"""Streaming reader of Criteo Kaggle TSV files (label, I1-I13, C1-C26 hex), numpy-vectorised.

Keys are int64, never floats: ``key = field << 32 | int(hex, 16)`` for field 0..25 (collision
free, DESIGN §2a); an empty categorical field maps to the reserved key
``EMPTY_KEY_BIT | field << 32`` (bit 40 set: no hex value of 32 bits can produce it). Dense
features become ``log(x + 1)`` for x > -1, else -1 (an empty dense field counts as 0).

Bad input: a line with a field count other than 40, a label other than 0/1, a dense value that
is not an integer or a categorical value that is not 1-8 hex digits is *skipped and counted*
(``CriteoReader.skipped``); with ``strict=True`` it raises ``CriteoFormatError`` naming the file
and line instead. Empty lines are skipped silently (not counted).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
from collections.abc import Iterator

import numpy as np

from herald_tf.errors import InvalidArgumentError

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_COLUMNS = 1 + NUM_DENSE + NUM_SPARSE
EMPTY_KEY_BIT = 1 << 40


class CriteoFormatError(InvalidArgumentError):
    """A malformed line in strict mode."""


def make_keys(fields: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``field << 32 | value`` as int64 for 32-bit ``values``."""
    return (np.asarray(fields, dtype=np.int64) << 32) | np.asarray(values, dtype=np.int64)


def empty_key(field: int) -> int:
    """The reserved key of an empty categorical value of ``field``."""
    return EMPTY_KEY_BIT | (field << 32)


def dense_transform(x: np.ndarray) -> np.ndarray:
    """``log(x + 1)`` for x > -1, else -1, as float32."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, -1.0)
    ok = x > -1
    out[ok] = np.log1p(x[ok])
    return out.astype(np.float32)


@dataclasses.dataclass
class CriteoBatch:
    """Parsed rows: ``labels`` (n,) int8, ``dense`` (n, 13) float32, ``keys`` (n, 26) int64."""

    labels: np.ndarray
    dense: np.ndarray
    keys: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


_HEX = set("0123456789abcdefABCDEF")


def _is_int(s: str) -> bool:
    t = s[1:] if s[:1] == "-" else s
    return t.isdigit() and t.isascii()


def _parse_line(parts: list[str]) -> tuple[int, list[int], list[int]] | None:
    if len(parts) != NUM_COLUMNS or parts[0] not in ("0", "1"):
        return None
    dense = []
    for s in parts[1:1 + NUM_DENSE]:
        if s == "":
            dense.append(0)
        elif _is_int(s):
            dense.append(int(s))
        else:
            return None
    keys = []
    for f, s in enumerate(parts[1 + NUM_DENSE:]):
        if s == "":
            keys.append(EMPTY_KEY_BIT | (f << 32))
        elif len(s) <= 8 and set(s) <= _HEX:
            keys.append((f << 32) | int(s, 16))
        else:
            return None
    return int(parts[0]), dense, keys


class CriteoReader:
    """Iterates a Criteo TSV (plain or .gz) in batches of ``batch_rows`` parsed rows.

    Args:
      path: the file.
      batch_rows: rows per yielded :class:`CriteoBatch` (the last one may be shorter).
      strict: raise ``CriteoFormatError`` on a malformed line instead of skipping it.
    """

    def __init__(self, path: str | os.PathLike, batch_rows: int = 65536,
                 strict: bool = False) -> None:
        if batch_rows < 1:
            raise InvalidArgumentError(f"Expected batch_rows >= 1. Received: {batch_rows}")
        self.path = os.fspath(path)
        self.batch_rows = batch_rows
        self.strict = strict
        self.skipped = 0
        self.rows = 0

    def _open(self) -> io.TextIOBase:
        if self.path.endswith(".gz"):
            return io.TextIOWrapper(gzip.open(self.path, "rb"), encoding="utf-8",
                                    errors="replace", newline="\n")
        return open(self.path, encoding="utf-8", errors="replace", newline="\n")

    def __iter__(self) -> Iterator[CriteoBatch]:
        labels: list[int] = []
        dense: list[list[int]] = []
        keys: list[list[int]] = []
        with self._open() as f:
            for lineno, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if not line:
                    continue
                parsed = _parse_line(line.split("\t"))
                if parsed is None:
                    if self.strict:
                        raise CriteoFormatError(
                            f"Expected 40 tab-separated fields (label 0/1, 13 integers, 26 hex "
                            f"values). Received at {self.path}:{lineno}: {line[:120]!r}"
                        )
                    self.skipped += 1
                    continue
                labels.append(parsed[0])
                dense.append(parsed[1])
                keys.append(parsed[2])
                if len(labels) == self.batch_rows:
                    yield self._batch(labels, dense, keys)
                    labels, dense, keys = [], [], []
        if labels:
            yield self._batch(labels, dense, keys)

    def _batch(self, labels: list[int], dense: list[list[int]],
               keys: list[list[int]]) -> CriteoBatch:
        self.rows += len(labels)
        return CriteoBatch(
            labels=np.array(labels, dtype=np.int8),
            dense=dense_transform(np.array(dense, dtype=np.int64)),
            keys=np.array(keys, dtype=np.int64),
        )


def read_keys(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """All keys of a Criteo TSV as an (n, 26) int64 array (the first ``limit`` rows if given)."""
    parts = []
    total = 0
    for batch in CriteoReader(path):
        parts.append(batch.keys)
        total += len(batch)
        if limit is not None and total >= limit:
            break
    if not parts:
        return np.zeros((0, NUM_SPARSE), dtype=np.int64)
    keys = np.concatenate(parts)
    return keys[:limit] if limit is not None else keys
