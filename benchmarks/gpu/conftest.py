"""pytest fixtures of the GPU harness: the loaded library, one non-blocking CuPy stream that every
test runs on, and keeping argument arrays alive until a test's work is done."""

from __future__ import annotations

import cupy as cp
import pytest
from gpu_testing import _KEEP
from herald_cuda import Library


@pytest.fixture(scope="module")
def lib():
    return Library()


@pytest.fixture(scope="module")
def stream():
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        yield s
    s.synchronize()


@pytest.fixture(autouse=True)
def _keep_arrays_alive(stream):
    yield
    stream.synchronize()
    _KEEP.clear()
