"""ctypes bindings of libherald_core.so, the framework-free C ABI (kernels/core/c_api.h).

Used by processes that do not run TensorFlow ops (the parameter server, the scheduler, tests):
they call the very kernels the TF ops call, so an optimizer update is the same code everywhere.
Arrays are numpy, C-contiguous, float32 rows and int64 ids; functions validate before writing
and raise ``InvalidArgumentError``/``OutOfRangeError`` with the library's message.
"""

from __future__ import annotations

import ctypes
import enum
import functools
import os
from collections.abc import Sequence

import numpy as np

from herald_tf import env
from herald_tf.config import InitializerConfig, OptimizerConfig
from herald_tf.errors import (
    HeraldError,
    InvalidArgumentError,
    LibraryNotFoundError,
    OutOfRangeError,
)

C_API_VERSION = 2
CORE_LIBRARY = "libherald_core.so"


@enum.unique
class StatusCode(enum.IntEnum):
    """Values of ``HeraldStatusCode`` (kernels/core/status.h)."""

    OK = 0
    INVALID_ARGUMENT = 1
    OUT_OF_RANGE = 2
    INTERNAL = 3
    UNIMPLEMENTED = 4


class Status(ctypes.Structure):
    """``HeraldStatus`` of kernels/core/status.h, filled by every C ABI call."""

    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class _OptimizerParams(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("learning_rate", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("epsilon", ctypes.c_float),
        ("initial_accumulator", ctypes.c_float),
    ]


class _InitializerParams(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("a", ctypes.c_float),
        ("b", ctypes.c_float),
    ]


_I64P = ctypes.POINTER(ctypes.c_int64)
_F32P = ctypes.POINTER(ctypes.c_float)
_I64 = ctypes.c_int64


@functools.cache
def load_core() -> ctypes.CDLL:
    """Loads libherald_core.so once; raises ``LibraryNotFoundError`` saying how to rebuild."""
    path = os.path.join(env.lib_dir(), CORE_LIBRARY)
    if not os.path.exists(path):
        raise LibraryNotFoundError(
            f"herald_tf's native library is missing: {path}. Build it with `make build` "
            "(or `pip install .`) from the herald_tf source tree."
        )
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise LibraryNotFoundError(
            f"herald_tf could not load {path}: {e}. Rebuild it with `make build`."
        ) from e
    version = lib.herald_c_api_version()
    if version != C_API_VERSION:
        raise LibraryNotFoundError(
            f"{path} implements C API version {version}, this herald_tf expects "
            f"{C_API_VERSION}. Rebuild it with `make build`."
        )
    _declare(lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    status = ctypes.POINTER(Status)
    runner = ctypes.c_void_p
    lib.herald_cpu_sparse_apply.argtypes = [
        ctypes.POINTER(_OptimizerParams), _F32P, _F32P, _I64P, _I64, _I64, _I64P, _I64, _F32P,
        runner, status,
    ]
    lib.herald_cpu_init_rows.argtypes = [
        ctypes.POINTER(_InitializerParams), _I64P, _I64, _I64, _F32P, status,
    ]
    lib.herald_cpu_init_state.argtypes = [ctypes.POINTER(_OptimizerParams), _I64, _I64, _F32P,
                                          status]
    lib.herald_cpu_gather_rows.argtypes = [_F32P, _I64, _I64, _I64P, _I64, _F32P, status]
    lib.herald_cpu_unique_slots.argtypes = [_I64P, _I64, _I64, _I64P, _I64P, _I64P, status]
    lib.herald_cpu_add_rows_by_index.argtypes = [_F32P, _I64P, _I64, _I64, _I64, _F32P, status]
    lib.herald_cpu_scatter_rows.argtypes = [_F32P, _I64, _I64, _I64P, _I64, _F32P, status]


def check_status(code: int, status: Status) -> None:
    """Raises the herald error of a C ABI status code (nothing for HERALD_OK)."""
    if code == StatusCode.OK:
        return
    message = status.message.decode("utf-8", "replace")
    if code == StatusCode.OUT_OF_RANGE:
        raise OutOfRangeError(message)
    if code == StatusCode.INVALID_ARGUMENT:
        raise InvalidArgumentError(message)
    raise HeraldError(f"{StatusCode(code).name}: {message}")


def _ptr(array: np.ndarray, ctype: type) -> ctypes._Pointer:
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def ids_array(keys: np.ndarray, what: str) -> np.ndarray:
    """``keys`` as a C-contiguous 1-D int64 array, or InvalidArgumentError naming ``what``."""
    keys = np.asarray(keys)
    if keys.dtype != np.int64 or keys.ndim != 1:
        raise InvalidArgumentError(
            f"Expected {what} to be a 1-D int64 array. Received: dtype={keys.dtype}, "
            f"shape={keys.shape}"
        )
    return np.ascontiguousarray(keys)


def _rows(array: np.ndarray, what: str, width: int | None = None) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype != np.float32 or array.ndim != 2:
        raise InvalidArgumentError(
            f"Expected {what} to be a 2-D float32 numpy array. Received: "
            f"{getattr(array, 'dtype', type(array))}, shape={getattr(array, 'shape', None)}"
        )
    if width is not None and array.shape[1] != width:
        raise InvalidArgumentError(
            f"Expected {what} with {width} columns. Received: shape={array.shape}"
        )
    return array


def optimizer_params(config: OptimizerConfig,
                     learning_rate: float | None = None) -> _OptimizerParams:
    """The C struct of an optimizer config, with this step's learning rate if given."""
    lr = config.learning_rate if learning_rate is None else learning_rate
    return _OptimizerParams(int(config.kind), lr, config.beta1, config.beta2, config.epsilon,
                            config.initial_accumulator)


def init_rows(config: InitializerConfig, seed: int, keys: np.ndarray, dim: int) -> np.ndarray:
    """Initial values of the rows for ``keys``: a (len(keys), dim) float32 array."""
    keys = ids_array(keys, "keys")
    out = np.empty((keys.shape[0], dim), dtype=np.float32)
    params = _InitializerParams(int(config.kind), seed, config.a, config.b)
    st = Status()
    check_status(load_core().herald_cpu_init_rows(ctypes.byref(params), _ptr(keys, ctypes.c_int64),
                                            keys.shape[0], dim, _ptr(out, ctypes.c_float),
                                            ctypes.byref(st)), st)
    return out


def init_state(config: OptimizerConfig, n: int, dim: int) -> np.ndarray:
    """Optimizer state of ``n`` new rows: (n, state width) float32 (width 0 for SGD)."""
    width = config.state_width_per_dim * dim
    out = np.empty((n, width), dtype=np.float32)
    if width == 0 or n == 0:
        return out
    params = optimizer_params(config)
    st = Status()
    check_status(load_core().herald_cpu_init_state(ctypes.byref(params), n, dim,
                                             _ptr(out, ctypes.c_float), ctypes.byref(st)), st)
    return out


def sparse_apply(
    config: OptimizerConfig,
    values: np.ndarray,
    state: np.ndarray,
    versions: np.ndarray,
    slots: np.ndarray,
    grads: np.ndarray,
    learning_rate: float | None = None,
) -> None:
    """Applies summed gradients ``grads[k]`` to rows ``slots[k]`` in place (versions += 1).

    ``values`` (rows, dim) float32, ``state`` (rows, state width) float32, ``versions`` (rows,)
    int64, ``slots`` distinct int64 row indices, ``grads`` (len(slots), dim) float32 and finite.
    On any bad input an ``InvalidArgumentError`` is raised and nothing is modified.
    """
    values = _rows(values, "values")
    dim = values.shape[1]
    slots = ids_array(slots, "slots")
    grads = _rows(np.ascontiguousarray(grads), "gradients", dim)
    if grads.shape[0] != slots.shape[0]:
        raise InvalidArgumentError(
            f"Expected one gradient row per slot. Received: {slots.shape[0]} slots, "
            f"{grads.shape[0]} gradient rows"
        )
    width = config.state_width_per_dim * dim
    if width:
        state = _rows(state, "optimizer state", width)
        if state.shape[0] != values.shape[0]:
            raise InvalidArgumentError(
                f"Expected optimizer state for {values.shape[0]} rows. Received: {state.shape}"
            )
    if versions.dtype != np.int64 or versions.shape != (values.shape[0],):
        raise InvalidArgumentError(
            f"Expected versions of shape ({values.shape[0]},) int64. Received: "
            f"{versions.dtype}{versions.shape}"
        )
    for name, a in (("values", values), ("versions", versions)) + (
        (("state", state),) if width else ()
    ):
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise InvalidArgumentError(f"Expected {name} to be C-contiguous and writeable.")
    params = optimizer_params(config, learning_rate)
    st = Status()
    state_ptr = _ptr(state, ctypes.c_float) if width else None
    check_status(load_core().herald_cpu_sparse_apply(
        ctypes.byref(params), _ptr(values, ctypes.c_float), state_ptr,
        _ptr(versions, ctypes.c_int64), values.shape[0], dim, _ptr(slots, ctypes.c_int64),
        slots.shape[0], _ptr(grads, ctypes.c_float), None, ctypes.byref(st)), st)


def unique_slots(slots: np.ndarray, num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(unique, inverse): ``slots`` without repeats in order of first appearance, and each
    slot's index in it (``slots == unique[inverse]``), by one hash pass (every slot in
    ``[0, num_slots)``)."""
    slots = ids_array(slots, "slots")
    unique = np.empty(slots.shape[0], dtype=np.int64)
    inverse = np.empty(slots.shape[0], dtype=np.int64)
    count = ctypes.c_int64(0)
    st = Status()
    check_status(load_core().herald_cpu_unique_slots(
        _ptr(slots, ctypes.c_int64), slots.shape[0], num_slots, _ptr(unique, ctypes.c_int64),
        _ptr(inverse, ctypes.c_int64), ctypes.byref(count), ctypes.byref(st)), st)
    return unique[:count.value], inverse


def sum_rows_by_index(parts: Sequence[np.ndarray], inverse: np.ndarray,
                      num_unique: int) -> np.ndarray:
    """``out[u]`` = the sum of the rows with ``inverse[i] == u``, where row ``i`` counts through
    the rows of ``parts`` in order, added from zero in that order: the deterministic sum of the
    lookup op's gradient, over several arrays without concatenating them."""
    inverse = ids_array(inverse, "inverse")
    parts = [_rows(np.ascontiguousarray(p), "rows") for p in parts]
    total = sum(p.shape[0] for p in parts)
    widths = sorted({p.shape[1] for p in parts})
    if total != inverse.shape[0] or len(widths) > 1:
        raise InvalidArgumentError(
            f"Expected one index per row and rows of one width. Received: {inverse.shape[0]} "
            f"indices for {total} rows of widths {widths}")
    out = np.zeros((num_unique, parts[0].shape[1] if parts else 0), dtype=np.float32)
    start = 0
    for p in parts:
        st = Status()
        check_status(load_core().herald_cpu_add_rows_by_index(
            _ptr(p, ctypes.c_float), _ptr(inverse[start:], ctypes.c_int64), p.shape[0],
            num_unique, p.shape[1], _ptr(out, ctypes.c_float), ctypes.byref(st)), st)
        start += p.shape[0]
    return out


def line_aligned_rows(n: int, width: int, zero: bool = False) -> np.ndarray:
    """An (n, width) float32 array starting on a 64-byte cache line (zero-filled if ``zero``).

    The row kernels write large outputs of such arrays straight to memory, bypassing the caches,
    when rows are whole lines (``kernels/core/scattered_rows.h``); TensorFlow takes it without
    a copy.
    """
    nbytes = n * width * 4
    buf = (np.zeros if zero else np.empty)(nbytes + 64, dtype=np.uint8)
    skip = -buf.ctypes.data % 64
    return buf[skip:skip + nbytes].view(np.float32).reshape(n, width)


def gather_rows(storage: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """``storage[slots]`` with range checks: a (len(slots), width) float32 array."""
    storage = _rows(storage, "storage")
    slots = ids_array(slots, "slots")
    out = line_aligned_rows(slots.shape[0], storage.shape[1])
    st = Status()
    check_status(load_core().herald_cpu_gather_rows(
        _ptr(np.ascontiguousarray(storage), ctypes.c_float), storage.shape[0], storage.shape[1],
        _ptr(slots, ctypes.c_int64), slots.shape[0], _ptr(out, ctypes.c_float),
        ctypes.byref(st)), st)
    return out


def scatter_rows(storage: np.ndarray, slots: np.ndarray, rows: np.ndarray) -> None:
    """``storage[slots] = rows`` in place; slots distinct and in range, else nothing changes."""
    storage = _rows(storage, "storage")
    if not storage.flags.c_contiguous or not storage.flags.writeable:
        raise InvalidArgumentError("Expected storage to be C-contiguous and writeable.")
    slots = ids_array(slots, "slots")
    rows = _rows(np.ascontiguousarray(rows), "rows", storage.shape[1])
    if rows.shape[0] != slots.shape[0]:
        raise InvalidArgumentError(
            f"Expected one row per slot. Received: {slots.shape[0]} slots, {rows.shape[0]} rows"
        )
    st = Status()
    check_status(load_core().herald_cpu_scatter_rows(
        _ptr(storage, ctypes.c_float), storage.shape[0], storage.shape[1],
        _ptr(slots, ctypes.c_int64), slots.shape[0], _ptr(rows, ctypes.c_float),
        ctypes.byref(st)), st)


def cuda_built() -> bool:
    """Whether the loaded core was built with the CUDA kernels."""
    return bool(load_core().herald_cuda_built())
