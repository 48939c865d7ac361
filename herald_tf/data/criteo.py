"""Streaming reader of Criteo Kaggle TSV files (label, I1-I13, C1-C26 hex), numpy-vectorised.

Keys are int64, never floats: ``key = field << 32 | int(hex, 16)`` for field 0..25 (collision
free, DESIGN §2a); an empty categorical field maps to the reserved key
``EMPTY_KEY_BIT | field << 32`` (bit 40 set: no hex value of 32 bits can produce it). Dense
features become ``log(x + 1)`` for x > -1, else -1 (an empty dense field counts as 0).

Bad input: a line with a field count other than 40, a label other than 0/1, a dense value that
is not an integer (an optional "-" and 1-18 ASCII digits) or a categorical value that is not
1-8 hex digits is *skipped and counted* (``CriteoReader.skipped``); with ``strict=True`` it raises
``CriteoFormatError`` naming the file and line instead. Empty lines are skipped silently (not
counted). Lines are parsed in chunks of ~4 MB with vectorised numpy string operations.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
from collections.abc import Iterable, Iterator

import numpy as np

from herald_tf.errors import InvalidArgumentError

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_COLUMNS = 1 + NUM_DENSE + NUM_SPARSE
#: What one line holds, for messages about lines that do not.
LINE_FORMAT = (f"{NUM_COLUMNS} tab-separated fields (label 0/1, {NUM_DENSE} integers, "
               f"{NUM_SPARSE} hex values)")
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
        for out in rebatch(self._chunks(), self.batch_rows):
            self.rows += len(out)
            yield out

    def _chunks(self) -> Iterator[CriteoBatch]:
        """The file parsed in chunks of about 4 MB of lines."""
        with self._open() as f:
            lineno = 0
            while lines := f.readlines(1 << 22):
                yield self._parse(lines, lineno)
                lineno += len(lines)

    def _parse(self, lines: list[str], first_lineno: int) -> CriteoBatch:
        """Parses a chunk of lines with numpy; malformed lines are skipped or raise."""
        stripped = [line.rstrip("\r\n") for line in lines]
        tabs = np.fromiter((line.count("\t") for line in stripped), dtype=np.int64,
                           count=len(stripped))
        shaped = np.flatnonzero(tabs == NUM_COLUMNS - 1).tolist()
        bad = [i for i in np.flatnonzero(tabs != NUM_COLUMNS - 1).tolist() if stripped[i]]
        if shaped:
            flat = "\t".join([stripped[i] for i in shaped]).split("\t")
            table = np.array(flat).reshape(len(shaped), NUM_COLUMNS)
            labels, dense, keys, ok = _parse_table(table)
        else:
            labels = np.zeros(0, np.int8)
            dense = np.zeros((0, NUM_DENSE), np.int64)
            keys = np.zeros((0, NUM_SPARSE), np.int64)
            ok = np.zeros(0, bool)
        bad.extend(shaped[i] for i in np.flatnonzero(~ok).tolist())
        if bad:
            if self.strict:
                i = min(bad)
                raise CriteoFormatError(
                    f"Expected {LINE_FORMAT}. Received at {self.path}:{first_lineno + i + 1}: "
                    f"{stripped[i][:120]!r}"
                )
            self.skipped += len(bad)
        return CriteoBatch(labels=labels[ok], dense=dense_transform(dense[ok]), keys=keys[ok])


def rebatch(chunks: Iterable[CriteoBatch], batch_rows: int) -> Iterator[CriteoBatch]:
    """Regroups parsed chunks (of any sizes) into batches of exactly ``batch_rows`` rows, in
    order; a last, shorter batch holds the remainder. Shared by the Criteo and Avazu readers."""
    pending: list[CriteoBatch] = []
    rows = 0
    for chunk in chunks:
        pending.append(chunk)
        rows += len(chunk)
        while rows >= batch_rows:
            out, pending = _take(pending, batch_rows)
            rows -= batch_rows
            yield out
    if rows:
        yield _take(pending, rows)[0]


def _take(parts: list[CriteoBatch], n: int) -> tuple[CriteoBatch, list[CriteoBatch]]:
    labels = np.concatenate([p.labels for p in parts])
    dense = np.concatenate([p.dense for p in parts])
    keys = np.concatenate([p.keys for p in parts])
    rest = CriteoBatch(labels=labels[n:], dense=dense[n:], keys=keys[n:])
    return CriteoBatch(labels=labels[:n], dense=dense[:n], keys=keys[:n]), [rest]


_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i


def _ascii_digits(a: np.ndarray) -> np.ndarray:
    """Whether each string is non-empty and all 0-9. ``np.strings.isdigit`` alone also takes
    other Unicode digits ("²", "٣") that ``int`` refuses, which would abort the whole read."""
    width = a.dtype.itemsize // 4
    points = np.ascontiguousarray(a).view(np.uint32).reshape(*a.shape, width)
    return np.strings.isdigit(a) & (points < 128).all(axis=-1)


def _parse_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n, 40) strings -> labels, raw dense int64, keys int64 and a validity mask (vectorised)."""
    n = table.shape[0]
    label = table[:, 0]
    ok = (label == "0") | (label == "1")
    labels = (label == "1").astype(np.int8)
    col = table[:, 1:1 + NUM_DENSE]
    body = np.where(np.strings.startswith(col, "-"), np.strings.slice(col, 1, None), col)
    good = (col == "") | (_ascii_digits(body) & (np.strings.str_len(body) <= 18))
    ok &= good.all(axis=1)
    dense = np.where(good & (col != ""), col, "0").astype(np.int64)
    cats = table[:, 1 + NUM_DENSE:]
    length = np.strings.str_len(cats)
    fits = length <= 8
    ok &= fits.all(axis=1)
    points = np.where(fits, cats, "").astype("<U8").view(np.uint32).reshape(n, NUM_SPARSE, 8)
    nib = _NIBBLE[np.minimum(points, 255)]
    nib[points > 255] = 255
    in_len = np.arange(8) < length[:, :, None].clip(0, 8)
    ok &= ~((nib == 255) & in_len).any(axis=(1, 2))
    values = np.zeros((n, NUM_SPARSE), dtype=np.int64)
    for j in range(8):
        take = in_len[:, :, j]
        values = np.where(take, (values << 4) | (nib[:, :, j] & 15), values)
    fields = np.arange(NUM_SPARSE, dtype=np.int64) << 32
    keys = np.where(length == 0, EMPTY_KEY_BIT | fields, fields | values)
    return labels, dense, keys, ok


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
