"""Streaming reader of Avazu CTR CSV files, numpy-vectorised, and a synthetic Avazu-format writer.

Format: a header line ``id,click,hour,C1,banner_pos,site_id,...,C21`` (24 columns, no quoting)
then one sample per line. The reader checks the header exactly and raises
``AvazuFormatError`` on any other (Avazu's unlabelled ``test`` file, which has no ``click``
column, included).

Parsed rows come as :class:`~herald_tf.data.criteo.CriteoBatch` (``labels``, ``dense``,
``keys``), so code written for the Criteo reader takes them unchanged:

- ``labels``: ``click`` as int8 (0/1).
- ``dense``: Avazu has no numeric features: an empty ``(n, 0)`` float32 array.
- ``keys``: ``(n, 24)`` int64, never floats. Fields 0..21 are the 22 columns after ``click`` in
  file order (``hour``, ``C1``, ..., ``C21``); ``key = field << 32 | h(value)`` where ``h`` is the
  low 32 bits of FarmHash ``Fingerprint64`` of the value's bytes, i.e. exactly
  ``tf.strings.to_hash_bucket_fast(value, 2**32)`` (and the low 4 bytes of ``tf.fingerprint``):
  serving computes the same keys with stock TensorFlow (:func:`keys_tf`; DESIGN §2a). An empty
  value is hashed like any other string. Two values of one field collide when their hashes do
  (about n² / 2³³ pairs for n distinct values). ``id`` is not a feature.
- Two derived fields from ``hour`` (``YYMMDDHH``, year 20YY): field 22 = hour of day (0..23)
  and field 23 = weekday (Monday = 0 .. Sunday = 6), stored unhashed: ``key = field << 32 |
  value`` (collision-free). The raw ``hour`` string stays field 0.

Bad input: a line whose field count is not 24 (missing or extra fields), whose ``click`` is not
0/1, or whose ``hour`` is not 8 digits naming a real date and an hour 0..23 is *skipped and
counted* (``AvazuReader.skipped``); with ``strict=True`` it raises ``AvazuFormatError`` naming
the file and line. Empty lines are skipped silently (not counted). Categorical values are
arbitrary bytes (no validation beyond the comma split). Lines are parsed in chunks of
``chunk_bytes`` (~4 MB) with vectorised numpy operations; files are read as bytes, so the hash
sees exactly the file's bytes (a value's trailing NUL bytes are dropped by numpy's bytes type).
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from herald_tf.data._atomic import atomic_text_file
from herald_tf.data.criteo import CriteoBatch, rebatch
from herald_tf.errors import InvalidArgumentError

#: The header of Avazu's labelled ``train`` file.
AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
NUM_COLUMNS = len(AVAZU_COLUMNS)
#: What one line holds (after the header), for messages about lines that do not.
LINE_FORMAT = (f"{NUM_COLUMNS} comma-separated fields (id, click 0/1, hour YYMMDDHH, "
               f"{NUM_COLUMNS - 3} categorical values)")
#: Columns hashed into fields 0..21, in file order.
CATEGORICAL_COLUMNS = AVAZU_COLUMNS[2:]
#: Field names of the 24 key columns: the 22 hashed columns, then the two derived from ``hour``.
FIELD_NAMES = CATEGORICAL_COLUMNS + ("hour_of_day", "weekday")
NUM_SPARSE = len(FIELD_NAMES)
NUM_DENSE = 0
HOUR_OF_DAY_FIELD = len(CATEGORICAL_COLUMNS)
WEEKDAY_FIELD = HOUR_OF_DAY_FIELD + 1
HASH_BUCKETS = 1 << 32

_M64 = (1 << 64) - 1
_K0 = 0xC3A5C85C97CB3127
_K1 = 0xB492B66FBE98F273
_K2 = 0x9AE16A3B2F90404F


class AvazuFormatError(InvalidArgumentError):
    """A wrong header, or a malformed line in strict mode."""


# ----------------------------------------------------------------------------------------------
# FarmHash Fingerprint64 (farmhash "na" Hash64, what TensorFlow's Fingerprint64 computes).


def _rot(v: int, s: int) -> int:
    return ((v >> s) | (v << (64 - s))) & _M64


def _fetch(data: bytes, i: int, width: int = 8) -> int:
    return int.from_bytes(data[i:i + width], "little")


def _len16(u: int, v: int, mul: int) -> int:
    a = ((u ^ v) * mul) & _M64
    a ^= a >> 47
    b = ((v ^ a) * mul) & _M64
    b ^= b >> 47
    return (b * mul) & _M64


def _weak32(s: bytes, i: int, a: int, b: int) -> tuple[int, int]:
    w, x, y, z = (_fetch(s, i + 8 * j) for j in range(4))
    a = (a + w) & _M64
    b = _rot((b + a + z) & _M64, 21)
    c = a
    a = (a + x + y) & _M64
    b = (b + _rot(a, 44)) & _M64
    return (a + z) & _M64, (b + c) & _M64


def fingerprint64_py(data: bytes) -> int:
    """FarmHash ``Fingerprint64`` of ``data`` in pure Python (any length; the slow path)."""
    n = len(data)
    if n <= 64:
        return int(fingerprint64(np.array([data], dtype=f"S{max(n, 1)}"))[0])
    seed = 81
    x = seed
    y = (seed * _K1 + 113) & _M64
    z = (((y * _K2 + 113) & _M64) ^ (((y * _K2 + 113) & _M64) >> 47)) * _K2 & _M64
    v = (0, 0)
    w = (0, 0)
    x = (x * _K2 + _fetch(data, 0)) & _M64
    end = ((n - 1) // 64) * 64
    last64 = end + ((n - 1) & 63) - 63
    s = 0
    while True:
        x = _rot((x + y + v[0] + _fetch(data, s + 8)) & _M64, 37) * _K1 & _M64
        y = _rot((y + v[1] + _fetch(data, s + 48)) & _M64, 42) * _K1 & _M64
        x ^= w[1]
        y = (y + v[0] + _fetch(data, s + 40)) & _M64
        z = _rot((z + w[0]) & _M64, 33) * _K1 & _M64
        v = _weak32(data, s, v[1] * _K1 & _M64, (x + w[0]) & _M64)
        w = _weak32(data, s + 32, (z + w[1]) & _M64, (y + _fetch(data, s + 16)) & _M64)
        z, x = x, z
        s += 64
        if s == end:
            break
    mul = _K1 + ((z & 0xFF) << 1)
    s = last64
    w0 = (w[0] + ((n - 1) & 63)) & _M64
    v0 = (v[0] + w0) & _M64
    w0 = (w0 + v0) & _M64
    v = (v0, v[1])
    w = (w0, w[1])
    x = _rot((x + y + v[0] + _fetch(data, s + 8)) & _M64, 37) * mul & _M64
    y = _rot((y + v[1] + _fetch(data, s + 48)) & _M64, 42) * mul & _M64
    x ^= w[1] * 9 & _M64
    y = (y + v[0] * 9 + _fetch(data, s + 40)) & _M64
    z = _rot((z + w[0]) & _M64, 33) * mul & _M64
    v = _weak32(data, s, v[1] * mul & _M64, (x + w[0]) & _M64)
    w = _weak32(data, s + 32, (z + w[1]) & _M64, (y + _fetch(data, s + 16)) & _M64)
    z, x = x, z
    return _len16(
        (_len16(v[0], w[0], mul) + (y ^ (y >> 47)) * _K0 + z) & _M64,
        (_len16(v[1], w[1], mul) + x) & _M64,
        mul,
    )


def _u64(x: int) -> np.uint64:
    return np.uint64(x)


def _vrot(v: np.ndarray, s: int) -> np.ndarray:
    return (v >> _u64(s)) | (v << _u64(64 - s))


def _vshift_mix(v: np.ndarray) -> np.ndarray:
    return v ^ (v >> _u64(47))


def _vlen16(u: np.ndarray, v: np.ndarray, mul: np.ndarray) -> np.ndarray:
    a = _vshift_mix((u ^ v) * mul)
    b = _vshift_mix((v ^ a) * mul)
    return b * mul


def _vfetch(b: np.ndarray, at: np.ndarray, width: int = 8) -> np.ndarray:
    """Little-endian ``width``-byte words of the rows of ``b`` (n, W) uint8 at offsets ``at``."""
    cols = at[:, None] + np.arange(width, dtype=np.int64)
    words = np.ascontiguousarray(np.take_along_axis(b, cols, axis=1))
    return words.view("<u8" if width == 8 else "<u4")[:, 0].astype(np.uint64)


def fingerprint64(values: Any) -> np.ndarray:
    """FarmHash ``Fingerprint64`` of each byte string, as uint64 (what ``tf.fingerprint`` and
    ``tf.strings.to_hash_bucket_fast`` compute). Vectorised up to 64 bytes per value.

    Args:
      values: bytes strings (a numpy ``S`` array of any shape, or a sequence of ``bytes``).
    """
    arr = np.asarray(values)
    if arr.dtype.kind != "S":
        arr = arr.astype(bytes)
    shape = arr.shape
    flat = arr.reshape(-1)
    n = flat.shape[0]
    out = np.full(n, _K2, dtype=np.uint64)  # the hash of the empty string
    if n == 0:
        return out.reshape(shape)
    length = np.strings.str_len(flat).astype(np.int64)
    width = max(16, -(-flat.dtype.itemsize // 8) * 8)
    b = flat.astype(f"S{width}").view(np.uint8).reshape(n, width)
    lu = length.astype(np.uint64)
    k0, k1, k2 = _u64(_K0), _u64(_K1), _u64(_K2)
    with np.errstate(over="ignore"):
        mul_all = k2 + lu * _u64(2)
        sel = np.flatnonzero((length > 0) & (length < 4))
        if sel.size:
            ln, bb = length[sel], b[sel]
            rows = np.arange(sel.size)
            a = bb[rows, 0].astype(np.uint64)
            mid = bb[rows, ln >> 1].astype(np.uint64)
            c = bb[rows, ln - 1].astype(np.uint64)
            y = a + (mid << _u64(8))
            z = lu[sel] + (c << _u64(2))
            out[sel] = _vshift_mix(y * k2 ^ z * k0) * k2
        sel = np.flatnonzero((length >= 4) & (length < 8))
        if sel.size:
            ln, bb = length[sel], b[sel]
            a = _vfetch(bb, np.zeros_like(ln), 4)
            out[sel] = _vlen16(lu[sel] + (a << _u64(3)), _vfetch(bb, ln - 4, 4), mul_all[sel])
        sel = np.flatnonzero((length >= 8) & (length <= 16))
        if sel.size:
            ln, bb, mul = length[sel], b[sel], mul_all[sel]
            a = _vfetch(bb, np.zeros_like(ln)) + k2
            bw = _vfetch(bb, ln - 8)
            c = _vrot(bw, 37) * mul + a
            d = (_vrot(a, 25) + bw) * mul
            out[sel] = _vlen16(c, d, mul)
        sel = np.flatnonzero((length > 16) & (length <= 32))
        if sel.size:
            ln, bb, mul = length[sel], b[sel], mul_all[sel]
            a = _vfetch(bb, np.zeros_like(ln)) * k1
            bw = _vfetch(bb, np.full_like(ln, 8))
            c = _vfetch(bb, ln - 8) * mul
            d = _vfetch(bb, ln - 16) * k2
            out[sel] = _vlen16(_vrot(a + bw, 43) + _vrot(c, 30) + d,
                               a + _vrot(bw + k2, 18) + c, mul)
        sel = np.flatnonzero((length > 32) & (length <= 64))
        if sel.size:
            ln, bb, mul = length[sel], b[sel], mul_all[sel]
            at = np.zeros_like(ln)
            a = _vfetch(bb, at) * k2
            bw = _vfetch(bb, at + 8)
            c = _vfetch(bb, ln - 8) * mul
            d = _vfetch(bb, ln - 16) * k2
            y = _vrot(a + bw, 43) + _vrot(c, 30) + d
            z = _vlen16(y, a + _vrot(bw + k2, 18) + c, mul)
            e = _vfetch(bb, at + 16) * mul
            f = _vfetch(bb, at + 24)
            g = (y + _vfetch(bb, ln - 32)) * mul
            h = (z + _vfetch(bb, ln - 24)) * mul
            out[sel] = _vlen16(_vrot(e + f, 43) + _vrot(g, 30) + h, e + _vrot(f + a, 18) + g, mul)
    for i in np.flatnonzero(length > 64).tolist():
        out[i] = fingerprint64_py(bytes(flat[i]))
    return out.reshape(shape)


def hash32(values: Any) -> np.ndarray:
    """``Fingerprint64(value) mod 2**32`` as int64: ``tf.strings.to_hash_bucket_fast(v, 2**32)``."""
    return (fingerprint64(values) & _u64(0xFFFFFFFF)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Dates (one formula for numpy arrays and TensorFlow int64 tensors).


def days_from_civil(year: Any, month: Any, day: Any) -> Any:
    """Days since 1970-01-01 of a proleptic Gregorian date (year >= 0), with only ``+ - * // %``
    so it works on numpy int64 arrays and TensorFlow int64 tensors alike."""
    y = year - (12 - month) // 10  # January and February count in the previous year
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def weekday(days: Any) -> Any:
    """Monday = 0 .. Sunday = 6 of days since 1970-01-01 (a Thursday)."""
    return (days + 3) % 7


_DAYS_IN_MONTH = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def _hour_fields(hour: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hour of day, weekday, validity) of ``YYMMDDHH`` byte strings (year 20YY)."""
    ok = (np.strings.str_len(hour) == 8) & np.strings.isdigit(hour)
    h = np.where(ok, hour, b"00010100").astype(np.int64)
    year = 2000 + h // 1000000
    month = h // 10000 % 100
    day = h // 100 % 100
    hh = h % 100
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = _DAYS_IN_MONTH[np.clip(month, 0, 12)] - ((month == 2) & ~leap)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= dim) & (hh <= 23)
    wd = weekday(days_from_civil(year, np.where(ok, month, 1), np.where(ok, day, 1)))
    return hh, wd, ok


# ----------------------------------------------------------------------------------------------
# The reader.


def make_keys(values: np.ndarray, hours_of_day: np.ndarray, weekdays: np.ndarray) -> np.ndarray:
    """(n, 24) int64 keys from the (n, 22) categorical byte strings and the derived fields."""
    fields = np.arange(NUM_SPARSE, dtype=np.int64) << 32
    keys = np.empty((values.shape[0], NUM_SPARSE), dtype=np.int64)
    keys[:, :HOUR_OF_DAY_FIELD] = fields[:HOUR_OF_DAY_FIELD] | hash32(values)
    keys[:, HOUR_OF_DAY_FIELD] = fields[HOUR_OF_DAY_FIELD] | hours_of_day
    keys[:, WEEKDAY_FIELD] = fields[WEEKDAY_FIELD] | weekdays
    return keys


class AvazuReader:
    """Iterates an Avazu CSV (plain or .gz) in batches of ``batch_rows`` parsed rows.

    Args:
      path: the file.
      batch_rows: rows per yielded :class:`CriteoBatch` (the last one may be shorter).
      strict: raise ``AvazuFormatError`` on a malformed line instead of skipping it.
      chunk_bytes: bytes of lines parsed at a time (memory bound; results do not depend on it).
    """

    def __init__(self, path: str | os.PathLike, batch_rows: int = 65536, strict: bool = False,
                 chunk_bytes: int = 1 << 22) -> None:
        if batch_rows < 1 or chunk_bytes < 1:
            raise InvalidArgumentError(
                f"Expected batch_rows >= 1 and chunk_bytes >= 1. Received: "
                f"batch_rows={batch_rows}, chunk_bytes={chunk_bytes}"
            )
        self.path = os.fspath(path)
        self.batch_rows = batch_rows
        self.strict = strict
        self.chunk_bytes = chunk_bytes
        self.skipped = 0
        self.rows = 0

    def _open(self) -> io.BufferedIOBase:
        if self.path.endswith(".gz"):
            return gzip.open(self.path, "rb")
        return open(self.path, "rb")

    def _check_header(self, line: bytes) -> None:
        names = line.rstrip(b"\r\n").decode("utf-8", "replace").lstrip("\ufeff").split(",")
        if tuple(n.strip() for n in names) != AVAZU_COLUMNS:
            hint = (" (Avazu's unlabelled test file has no click column: it cannot be trained "
                    "on)" if "click" not in names else "")
            raise AvazuFormatError(
                f"Expected the Avazu header {','.join(AVAZU_COLUMNS)!r} at {self.path}:1. "
                f"Received: {line[:300]!r}{hint}"
            )

    def __iter__(self) -> Iterator[CriteoBatch]:
        for out in rebatch(self._chunks(), self.batch_rows):
            self.rows += len(out)
            yield out

    def _chunks(self) -> Iterator[CriteoBatch]:
        """The header checked, then the file parsed in chunks of ``chunk_bytes`` of lines."""
        with self._open() as f:
            header = f.readline()
            if not header.strip():
                raise AvazuFormatError(
                    f"Expected the Avazu header {','.join(AVAZU_COLUMNS)!r} at {self.path}:1. "
                    f"Received: an empty first line"
                )
            self._check_header(header)
            lineno = 1
            while lines := f.readlines(self.chunk_bytes):
                yield self._parse(lines, lineno)
                lineno += len(lines)

    def _parse(self, lines: list[bytes], first_lineno: int) -> CriteoBatch:
        """Parses a chunk of lines with numpy; malformed lines are skipped or raise."""
        stripped = [line.rstrip(b"\r\n") for line in lines]
        commas = np.fromiter((line.count(b",") for line in stripped), dtype=np.int64,
                             count=len(stripped))
        shaped = np.flatnonzero(commas == NUM_COLUMNS - 1).tolist()
        bad = [i for i in np.flatnonzero(commas != NUM_COLUMNS - 1).tolist() if stripped[i]]
        if shaped:
            flat = b",".join([stripped[i] for i in shaped]).split(b",")
            table = np.array(flat, dtype=bytes).reshape(len(shaped), NUM_COLUMNS)
            click = table[:, 1]
            hod, wd, ok = _hour_fields(table[:, 2])
            ok &= (click == b"0") | (click == b"1")
            table = table[ok]
            labels = (table[:, 1] == b"1").astype(np.int8)
            keys = make_keys(table[:, 2:], hod[ok], wd[ok])
            bad.extend(shaped[i] for i in np.flatnonzero(~ok).tolist())
        else:
            labels = np.zeros(0, np.int8)
            keys = np.zeros((0, NUM_SPARSE), np.int64)
        if bad:
            if self.strict:
                i = min(bad)
                raise AvazuFormatError(
                    f"Expected {LINE_FORMAT}. Received at {self.path}:{first_lineno + i + 1}: "
                    f"{stripped[i][:120]!r}"
                )
            self.skipped += len(bad)
        return CriteoBatch(labels=labels, dense=np.zeros((len(labels), 0), np.float32), keys=keys)


def read_keys(path: str | os.PathLike, limit: int | None = None) -> np.ndarray:
    """All keys of an Avazu CSV as an (n, 24) int64 array (the first ``limit`` rows if given)."""
    parts = []
    total = 0
    for batch in AvazuReader(path):
        parts.append(batch.keys)
        total += len(batch)
        if limit is not None and total >= limit:
            break
    if not parts:
        return np.zeros((0, NUM_SPARSE), dtype=np.int64)
    keys = np.concatenate(parts)
    return keys[:limit] if limit is not None else keys


# ----------------------------------------------------------------------------------------------
# Serving: the same keys with stock TensorFlow.


def keys_tf(values: Any) -> Any:
    """The reader's keys computed with stock TensorFlow ops only (for serving / export).

    Args:
      values: a ``[n, 22]`` string tensor of the columns ``hour`` .. ``C21`` (file order).

    Returns:
      ``[n, 24]`` int64 keys equal to :class:`AvazuReader`'s for valid rows.
    """
    import tensorflow as tf  # the data package stays TensorFlow-free otherwise

    values = tf.convert_to_tensor(values, tf.string)
    fields = tf.bitwise.left_shift(tf.range(NUM_SPARSE, dtype=tf.int64), tf.constant(32, tf.int64))
    hashed = tf.bitwise.bitwise_or(fields[:HOUR_OF_DAY_FIELD],
                                   tf.strings.to_hash_bucket_fast(values, HASH_BUCKETS))
    h = tf.strings.to_number(values[:, 0], tf.int64)
    year, month, day = 2000 + h // 1000000, h // 10000 % 100, h // 100 % 100
    hod = tf.bitwise.bitwise_or(fields[HOUR_OF_DAY_FIELD], h % 100)
    wd = tf.bitwise.bitwise_or(fields[WEEKDAY_FIELD],
                               weekday(days_from_civil(year, month, day)))
    return tf.concat([hashed, hod[:, None], wd[:, None]], axis=1)


# ----------------------------------------------------------------------------------------------
# Synthetic Avazu-format data (tests, demos).

#: Distinct values per column of the synthetic writer (small; Avazu's real ones are far larger).
SYNTHETIC_CARDINALITIES = {
    "C1": 7, "banner_pos": 7, "site_id": 400, "site_domain": 300, "site_category": 20,
    "app_id": 500, "app_domain": 60, "app_category": 25, "device_id": 2000,
    "device_ip": 5000, "device_model": 800, "device_type": 5, "device_conn_type": 4,
    "C14": 300, "C15": 8, "C16": 9, "C17": 100, "C18": 4, "C19": 40, "C20": 50, "C21": 30,
}
_HEX_COLUMNS = frozenset({"site_id", "site_domain", "site_category", "app_id", "app_domain",
                          "app_category", "device_id", "device_ip", "device_model"})


def write_synthetic_avazu(path: str | os.PathLike, num_samples: int, seed: int = 0,
                          alpha: float = 1.1) -> None:
    """Writes a deterministic Avazu-format CSV (header + ``num_samples`` lines).

    Each column draws a popularity rank r with probability proportional to ``r ** -alpha`` among
    :data:`SYNTHETIC_CARDINALITIES`; hex columns write it as 8 hex digits of a mix of (column,
    rank), integer columns as an integer. ``hour`` runs through 2014-10-21 00h .. 2014-10-30 23h
    in file order (time-ordered, as Avazu's train file). ``click`` comes from a hidden logistic
    model of ``site_id``, ``app_id``, ``device_model`` and the hour of day, so it is learnable.
    The file is a pure function of ``(num_samples, seed, alpha)``; it appears whole or not at all
    (a temporary file beside it, then a rename).
    """
    if num_samples < 0:
        raise InvalidArgumentError(f"Expected num_samples >= 0. Received: {num_samples}")
    rng = np.random.default_rng([seed, 0xA7A2])
    columns: dict[str, list[str]] = {}
    logit = np.full(num_samples, -1.5)
    for j, (name, card) in enumerate(SYNTHETIC_CARDINALITIES.items()):
        p = np.arange(1, card + 1, dtype=np.float64) ** -alpha
        rank = rng.choice(card, size=num_samples, p=p / p.sum())
        if name in _HEX_COLUMNS:
            mixed = (rank.astype(np.uint64) * np.uint64(0x9E3779B1) + np.uint64(j * 7919 + seed))
            columns[name] = [format(v, "08x") for v in (mixed & np.uint64(0xFFFFFFFF)).tolist()]
        else:
            base = 1000 * (j + 1) if card > 10 else 0
            columns[name] = [str(base + r) for r in rank.tolist()]
        if name in ("site_id", "app_id", "device_model"):
            effect = np.random.default_rng([seed, j]).normal(0.0, 0.8, card)
            logit += effect[rank]
    slot = np.arange(num_samples, dtype=np.int64) * 240 // max(num_samples, 1)
    day, hh = 21 + slot // 24, slot % 24
    logit += 0.4 * np.cos(hh / 24 * 2 * np.pi)
    click = (rng.random(num_samples) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    ids = rng.integers(0, 1 << 63, size=num_samples, dtype=np.uint64)
    with atomic_text_file(path) as f:  # whole or not at all: workers may write it at once
        f.write(",".join(AVAZU_COLUMNS) + "\n")
        lines = []
        for i in range(num_samples):
            row = [str(int(ids[i])), str(int(click[i])), f"1410{int(day[i]):02d}{int(hh[i]):02d}"]
            row += [columns[name][i] for name in SYNTHETIC_CARDINALITIES]
            lines.append(",".join(row))
        if lines:
            f.write("\n".join(lines) + "\n")
