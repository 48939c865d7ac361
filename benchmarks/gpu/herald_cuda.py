"""ctypes binding of kernels/cuda/cuda_api.h for the GPU harness (tests and benchmark).

Pointers are passed as integers (CuPy ``.data.ptr`` or torch ``.data_ptr()``); streams as the
``cudaStream_t`` integer (CuPy ``Stream.ptr``, torch ``Stream.cuda_stream``). No TensorFlow.
"""

from __future__ import annotations

import ctypes
import enum
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIB = ROOT / "build" / "gpu" / "libherald_cuda.so"


class StatusCode(enum.IntEnum):
    OK = 0
    INVALID_ARGUMENT = 1
    OUT_OF_RANGE = 2
    INTERNAL = 3
    UNIMPLEMENTED = 4


class Combiner(enum.IntEnum):
    NONE = 0
    SUM = 1
    MEAN = 2
    SQRTN = 3


class Optimizer(enum.IntEnum):
    SGD = 0
    ADAGRAD = 1
    ADAM = 2


class Initializer(enum.IntEnum):
    UNIFORM = 0
    NORMAL = 1
    ZEROS = 2


class Status(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class OptimizerParams(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("learning_rate", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("epsilon", ctypes.c_float),
        ("initial_accumulator", ctypes.c_float),
    ]


class InitializerParams(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("seed", ctypes.c_uint64),
        ("a", ctypes.c_float),
        ("b", ctypes.c_float),
    ]


ALLOCATE = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
DEALLOCATE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p
)


class Allocator(ctypes.Structure):
    _fields_ = [("allocate", ALLOCATE), ("deallocate", DEALLOCATE), ("context", ctypes.c_void_p)]


class HeraldCudaError(Exception):
    """A non-OK status from the CUDA core."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{StatusCode(code).name}: {message}")
        self.code = StatusCode(code)
        self.message = message


P = ctypes.c_void_p
I64 = ctypes.c_int64
I32 = ctypes.c_int32

_SIGNATURES = {
    "herald_cuda_api_version": [],
    "herald_cuda_error_reset": [P, P, P],
    "herald_cuda_error_read": [P, P, P],
    "herald_cuda_lookup": [P, I64, I64, P, I64, P, I64, I32, P, P, P, P, P],
    "herald_cuda_unique_slots": [P, I64, I64, P, P, P, P, P, P, P],
    "herald_cuda_lookup_grad": [P, P, I64, P, I64, I32, I64, I64, P, P, P, P, P],
    "herald_cuda_dedup_grad": [P, I64, I64, P, P, I64, I32, I64, P, P, P, P, P, P, P, P],
    "herald_cuda_sparse_apply": [P, P, P, P, I64, I64, P, I64, P, P, P, P, P, P],
    "herald_cuda_dedup_apply": [P, P, P, P, I64, I64, P, I64, P, P, I64, I32, P, P, P, P, P, P, P],
    "herald_cuda_init_rows": [P, P, I64, I64, P, P, P],
    "herald_cuda_init_state": [P, I64, I64, P, P, P],
    "herald_cuda_gather_rows": [P, I64, I64, P, I64, P, P, P, P, P],
    "herald_cuda_scatter_rows": [P, I64, I64, P, I64, P, P, P, P, P],
}


class Library:
    """Loaded libherald_cuda.so; each method returns the status code and raises on error
    unless ``check=False``."""

    def __init__(self, path: str | os.PathLike | None = None):
        path = path or os.environ.get("HERALD_CUDA_LIB") or DEFAULT_LIB
        if not Path(path).exists():
            raise FileNotFoundError(
                f"{path} is missing: build it with benchmarks/gpu/build.sh on a host with nvcc"
            )
        self.lib = ctypes.CDLL(str(path))
        for name, args in _SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.argtypes = args
            fn.restype = ctypes.c_int

    def call(self, name: str, *args, check: bool = True) -> tuple[int, str]:
        status = Status()
        code = getattr(self.lib, name)(*args, ctypes.byref(status))
        message = status.message.decode()
        if code != status.code:
            raise AssertionError(f"{name}: returned {code} but status.code is {status.code}")
        if check and code != StatusCode.OK:
            raise HeraldCudaError(code, message)
        return code, message

    def raw(self, name: str, *args) -> int:
        return getattr(self.lib, name)(*args)

    def dedup_apply_rows(self, params: OptimizerParams, storage, state, versions, ids, grad_rows,
                         unique, num, summed, stream: int, allocator, record: int | None) -> None:
        """The benchmarks' fused dedup + apply: one gradient row per id (no combiner), torch
        tensors (``state`` None for SGD), the stream and allocator as raw pointers."""
        slots, dim = storage.shape
        self.call(
            "herald_cuda_dedup_apply",
            ctypes.addressof(params),
            storage.data_ptr(),
            state.data_ptr() if state is not None else None,
            versions.data_ptr(),
            slots,
            dim,
            ids.data_ptr(),
            ids.numel(),
            grad_rows.data_ptr(),
            None,
            ids.numel(),
            int(Combiner.NONE),
            unique.data_ptr(),
            num.data_ptr(),
            summed.data_ptr(),
            stream,
            allocator,
            record,
        )
