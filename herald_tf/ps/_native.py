"""ctypes bindings of the parameter server's native pieces (kernels/ps/ps_api.h).

``KeyIndex`` maps int64 keys to dense row indices in C++ (numpy has no hash table); rows are
numbered in order of first insertion. It lives in the same shared library as the kernels
(``libherald_core.so``), loaded through ``herald_tf._core.load_core``. Not thread-safe: callers
serialise access to one index (the shard holds its lock).
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np

from herald_tf import _core
from herald_tf.config import OptimizerConfig
from herald_tf.errors import InvalidArgumentError, LibraryNotFoundError

PS_API_VERSION = 5

_I64P = ctypes.POINTER(ctypes.c_int64)
_U8P = ctypes.POINTER(ctypes.c_uint8)
_I64 = ctypes.c_int64
_STATUS = ctypes.POINTER(_core.Status)


class _Api:
    """The PS functions of the core library with their signatures declared on private handles."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        def fn(name: str, restype: type | None, *argtypes: type) -> ctypes._CFuncPtr:
            f = ctypes.CFUNCTYPE(restype, *argtypes)((name, lib))
            return f

        try:
            version = fn("herald_ps_api_version", ctypes.c_int)()
        except AttributeError as e:
            raise LibraryNotFoundError(
                f"libherald_core.so has no parameter-server functions ({e}); it was built without "
                "kernels/ps/*.cc. Rebuild it with `make build`."
            ) from e
        if version != PS_API_VERSION:
            raise LibraryNotFoundError(
                f"libherald_core.so implements PS API version {version}, herald_tf expects "
                f"{PS_API_VERSION}. Rebuild it with `make build`."
            )
        vp = ctypes.c_void_p
        self.create = fn("herald_ps_key_index_create", ctypes.c_int, _I64,
                         ctypes.POINTER(vp), _STATUS)
        self.destroy = fn("herald_ps_key_index_destroy", None, vp)
        self.size = fn("herald_ps_key_index_size", ctypes.c_int64, vp)
        self.lookup = fn("herald_ps_key_index_lookup", ctypes.c_int, vp, _I64P, _I64, _I64P,
                         _STATUS)
        self.lookup_or_insert = fn("herald_ps_key_index_lookup_or_insert", ctypes.c_int, vp,
                                   _I64P, _I64, _I64P, _U8P, _I64P, _STATUS)
        self.export = fn("herald_ps_key_index_export", ctypes.c_int, vp, _I64P, _I64, _STATUS)
        self.find_duplicate = fn("herald_ps_find_duplicate", ctypes.c_int, _I64P, _I64, _I64P,
                                 _I64P, _STATUS)
        self.find_non_finite = fn("herald_ps_find_non_finite", ctypes.c_int,
                                  ctypes.POINTER(ctypes.c_float), _I64, _I64P, _STATUS)
        f32p = ctypes.POINTER(ctypes.c_float)
        self.apply_rows = fn("herald_ps_apply_rows", ctypes.c_int,
                             ctypes.c_void_p, f32p, f32p, _I64P, _I64, _I64,
                             _I64P, _I64, f32p, _STATUS)
        self.partition = fn("herald_ps_partition", ctypes.c_int, _I64P, _I64, _I64, _I64P, _I64P,
                            _STATUS)
        self.gather_rows_checked = fn("herald_ps_gather_rows_checked", ctypes.c_int, f32p, _I64,
                                      _I64, _I64P, _I64, f32p, _I64P, _STATUS)
        self.recv_rows = fn("herald_ps_recv_rows", ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                            _I64, _I64, _I64P, _I64, _I64, ctypes.POINTER(ctypes.c_int), _STATUS)
        self.recv_floats_checked = fn("herald_ps_recv_floats_checked", ctypes.c_int,
                                      ctypes.c_int, f32p, _I64, _I64, _I64P,
                                      ctypes.POINTER(ctypes.c_int), _STATUS)
        self.lookup_distinct = fn("herald_ps_key_index_lookup_distinct", ctypes.c_int,
                                  ctypes.c_void_p, _I64P, _I64, _I64P, _I64P, _I64P, _STATUS)
        self.send_rows = fn("herald_ps_send_rows", ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                            _I64, _I64, _I64P, _I64, _I64, ctypes.POINTER(ctypes.c_int), _STATUS)


@functools.cache
def api() -> _Api:
    """The PS part of the core library (loaded once)."""
    return _Api(_core.load_core())


def _keys(keys: np.ndarray) -> np.ndarray:
    return _core.ids_array(keys, "keys")


def _p(a: np.ndarray, ctype: type) -> ctypes._Pointer:
    return a.ctypes.data_as(ctypes.POINTER(ctype))


class KeyIndex:
    """An int64 key → dense row index map (C++), rows numbered in order of first insertion."""

    def __init__(self, capacity_hint: int = 0) -> None:
        self._api = api()
        handle = ctypes.c_void_p()
        st = _core.Status()
        _core.check_status(self._api.create(int(capacity_hint), ctypes.byref(handle),
                                      ctypes.byref(st)), st)
        self._handle = handle

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._api.destroy(handle)
            self._handle = None

    def __len__(self) -> int:
        return int(self._api.size(self._handle))

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, -1 where absent; changes nothing."""
        keys = _keys(keys)
        rows = np.empty(keys.shape[0], dtype=np.int64)
        st = _core.Status()
        _core.check_status(self._api.lookup(self._handle, _p(keys, ctypes.c_int64), keys.shape[0],
                                      _p(rows, ctypes.c_int64), ctypes.byref(st)), st)
        return rows

    def lookup_distinct(self, keys: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """(row of each key or -1, the first repeated key as ``find_duplicate`` gives it or
        None), in one pass; changes nothing."""
        keys = _keys(keys)
        rows = np.empty(keys.shape[0], dtype=np.int64)
        dup = ctypes.c_int64(-1)
        first = ctypes.c_int64(-1)
        st = _core.Status()
        _core.check_status(self._api.lookup_distinct(
            self._handle, _p(keys, ctypes.c_int64), keys.shape[0], _p(rows, ctypes.c_int64),
            ctypes.byref(dup), ctypes.byref(first), ctypes.byref(st)), st)
        return rows, None if dup.value < 0 else (int(first.value), int(dup.value))

    def lookup_or_insert(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, is_new): absent keys get the next rows; is_new marks their first appearance."""
        keys = _keys(keys)
        n = keys.shape[0]
        rows = np.empty(n, dtype=np.int64)
        is_new = np.empty(n, dtype=np.uint8)
        num_new = ctypes.c_int64(0)
        st = _core.Status()
        _core.check_status(self._api.lookup_or_insert(
            self._handle, _p(keys, ctypes.c_int64), n, _p(rows, ctypes.c_int64),
            _p(is_new, ctypes.c_uint8), ctypes.byref(num_new), ctypes.byref(st)), st)
        return rows, is_new.view(np.bool_)

    def keys(self) -> np.ndarray:
        """Every key, in row order (row r holds keys()[r])."""
        n = len(self)
        out = np.empty(n, dtype=np.int64)
        st = _core.Status()
        _core.check_status(self._api.export(self._handle, _p(out, ctypes.c_int64), n,
                                      ctypes.byref(st)), st)
        return out


def find_duplicate(keys: np.ndarray) -> tuple[int, int] | None:
    """(earlier position, later position) of the first repeated key, or None if all distinct."""
    keys = _keys(keys)
    dup = ctypes.c_int64(-1)
    first = ctypes.c_int64(-1)
    st = _core.Status()
    code = api().find_duplicate(_p(keys, ctypes.c_int64), keys.shape[0], ctypes.byref(dup),
                                ctypes.byref(first), ctypes.byref(st))
    _core.check_status(code, st)
    return None if dup.value < 0 else (int(first.value), int(dup.value))


def find_non_finite(values: np.ndarray) -> int:
    """Flat position of the first NaN/Inf in a float32 array, or -1 if every value is finite."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float32:
        raise InvalidArgumentError(
            f"Expected a float32 array. Received: {getattr(values, 'dtype', type(values))}")
    values = np.ascontiguousarray(values)
    bad = ctypes.c_int64(-1)
    st = _core.Status()
    _core.check_status(api().find_non_finite(_p(values, ctypes.c_float), values.size,
                                       ctypes.byref(bad), ctypes.byref(st)), st)
    return int(bad.value)


def apply_rows(config: OptimizerConfig, values: np.ndarray, state: np.ndarray,
               versions: np.ndarray, rows: np.ndarray, grads: np.ndarray,
               learning_rate: float) -> None:
    """Applies validated gradients in place: ``grads[k]`` to row ``rows[k]`` (versions += 1).

    For gradients the PS checked on arrival: ``rows`` distinct, ``grads`` finite (not re-checked;
    ``_core.sparse_apply`` is the checking variant). ``values``/``state``/``versions`` are a
    table's C-contiguous storage; rows are range-checked before anything changes.
    """
    rows = _core.ids_array(rows, "rows")
    grads = np.ascontiguousarray(grads, dtype=np.float32)
    dim = values.shape[1]
    if grads.shape != (rows.shape[0], dim):
        raise InvalidArgumentError(f"Expected gradients of shape ({rows.shape[0]}, {dim}). "
                                   f"Received: {grads.shape}")
    params = _core.optimizer_params(config, learning_rate)
    st = _core.Status()
    width = state.shape[1] if state.ndim == 2 else 0
    _core.check_status(api().apply_rows(
        ctypes.byref(params), _p(values, ctypes.c_float),
        _p(state, ctypes.c_float) if width else None, _p(versions, ctypes.c_int64),
        values.shape[0], dim, _p(rows, ctypes.c_int64), rows.shape[0],
        _p(grads, ctypes.c_float), ctypes.byref(st)), st)


def partition(keys: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """``herald_tf.ps.sharding.split_by_shard`` in one C++ pass: each shard's key positions."""
    keys = _keys(keys)
    order = np.empty(keys.shape[0], dtype=np.int64)
    offsets = np.empty(num_shards + 1, dtype=np.int64)
    st = _core.Status()
    _core.check_status(api().partition(_p(keys, ctypes.c_int64), keys.shape[0], num_shards,
                                       _p(order, ctypes.c_int64), _p(offsets, ctypes.c_int64),
                                       ctypes.byref(st)), st)
    return [order[offsets[s]:offsets[s + 1]] for s in range(num_shards)]


def gather_rows_checked(rows: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, int]:
    """(``rows[positions]``, flat index in it of the first NaN/Inf or -1), in one pass."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    positions = _core.ids_array(positions, "positions")
    out = np.empty((positions.shape[0], rows.shape[1]), dtype=np.float32)
    bad = ctypes.c_int64(-1)
    st = _core.Status()
    _core.check_status(api().gather_rows_checked(
        _p(rows, ctypes.c_float), rows.shape[0], rows.shape[1], _p(positions, ctypes.c_int64),
        positions.shape[0], _p(out, ctypes.c_float), ctypes.byref(bad), ctypes.byref(st)), st)
    return out, int(bad.value)


def _timeout_ms(timeout_s: float | None) -> int:
    """A socket timeout for the C++ loops: milliseconds, -1 for none."""
    return -1 if timeout_s is None else int(timeout_s * 1000)


def recv_rows(fd: int, out: np.ndarray, positions: np.ndarray, timeout_s: float | None) -> int:
    """Receives ``len(positions)`` rows from socket ``fd`` into ``out[positions]`` (staged in C++).

    ``out`` is C-contiguous; each row is ``out.strides[0]`` bytes on the wire. An ``out`` of
    4 MiB or more that starts on a cache line (``_core.line_aligned_rows``), with rows of whole
    lines, is written around the caches.
    Returns 0 when all arrived, -1 when the peer closed, else an errno (``errno.ETIMEDOUT`` after
    ``timeout_s`` without data); the connection is unusable after a non-zero result.
    """
    if not out.flags.c_contiguous or not out.flags.writeable or out.ndim < 1:
        raise InvalidArgumentError("Expected a C-contiguous writeable output array.")
    positions = _core.ids_array(positions, "positions")
    io_error = ctypes.c_int(0)
    st = _core.Status()
    _core.check_status(api().recv_rows(
        fd, out.ctypes.data, out.shape[0], out.strides[0] if out.shape[0] else 1,
        _p(positions, ctypes.c_int64), positions.shape[0], _timeout_ms(timeout_s),
        ctypes.byref(io_error), ctypes.byref(st)), st)
    return int(io_error.value)


def send_rows(fd: int, src: np.ndarray, positions: np.ndarray, timeout_s: float | None) -> int:
    """Sends rows ``src[positions]`` to socket ``fd`` in that order, gathered on the way (C++).

    ``src`` is C-contiguous; each row is ``src.strides[0]`` bytes on the wire. Returns 0 when all
    were sent, else an errno (``errno.ETIMEDOUT`` when the socket stayed full for ``timeout_s``);
    the connection is unusable after a non-zero result.
    """
    if not src.flags.c_contiguous or src.ndim < 1:
        raise InvalidArgumentError("Expected a C-contiguous source array.")
    positions = _core.ids_array(positions, "positions")
    io_error = ctypes.c_int(0)
    st = _core.Status()
    _core.check_status(api().send_rows(
        fd, src.ctypes.data, src.shape[0], src.strides[0] if src.shape[0] else 1,
        _p(positions, ctypes.c_int64), positions.shape[0], _timeout_ms(timeout_s),
        ctypes.byref(io_error), ctypes.byref(st)), st)
    return int(io_error.value)


def recv_floats_checked(fd: int, out: np.ndarray, timeout_s: float | None) -> tuple[int, int]:
    """Receives ``out.size`` float32s from socket ``fd`` into ``out`` (C-contiguous), checking
    them finite as they arrive: (I/O result as ``recv_rows``, flat index of the first NaN/Inf or
    -1)."""
    if out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidArgumentError("Expected a C-contiguous writeable float32 output array.")
    io_error = ctypes.c_int(0)
    bad = ctypes.c_int64(-1)
    st = _core.Status()
    _core.check_status(api().recv_floats_checked(
        fd, _p(out, ctypes.c_float), out.size, _timeout_ms(timeout_s), ctypes.byref(bad),
        ctypes.byref(io_error), ctypes.byref(st)), st)
    return int(io_error.value), int(bad.value)
