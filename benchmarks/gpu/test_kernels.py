"""Checks every kernel of kernels/cuda/ against a numpy reference on fresh random inputs.

Run on a GPU host after benchmarks/gpu/build.sh:
    python3 -m pytest -q benchmarks/gpu/test_kernels.py
HERALD_TEST_SMALL=1 shrinks the sizes (for compute-sanitizer runs). Outputs are poisoned with NaN
before each call; gathers must match to 1e-6 relative, reductions and optimizers to 1e-5
(‖a − r‖∞ ≤ tol · max(‖r‖∞, 1e-3), DESIGN §2a), optimizers over ≥ 20 steps against float64.
"""

from __future__ import annotations

import ctypes
import os

import cupy as cp
import numpy as np
import pytest
from herald_cuda import (
    ALLOCATE,
    DEALLOCATE,
    Allocator,
    Combiner,
    Initializer,
    InitializerParams,
    Library,
    Optimizer,
    OptimizerParams,
    StatusCode,
)

SMALL = os.environ.get("HERALD_TEST_SMALL") == "1"
if SMALL:
    # Sanitizer runs: plain cudaMalloc per array, so memcheck sees the true bounds of each one.
    cp.cuda.set_allocator(None)
GATHER_TOL = 1e-6
REDUCE_TOL = 1e-5


def rel_err(a, r) -> float:
    a = np.asarray(a, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - r)) / max(np.max(np.abs(r)), 1e-3))


@pytest.fixture(scope="module")
def lib():
    return Library()


@pytest.fixture(scope="module")
def stream():
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        yield s
    s.synchronize()


class PyAllocator:
    """An injected allocator (CuPy memory) that counts its calls."""

    def __init__(self):
        self.live = {}
        self.allocations = 0

        def allocate(_ctx, nbytes, _stream):
            mem = cp.cuda.alloc(max(int(nbytes), 1))
            self.live[mem.ptr] = mem
            self.allocations += 1
            return mem.ptr

        def deallocate(_ctx, ptr, _nbytes, _stream):
            # CuPy frees stream-ordered on its current stream; the harness runs on one stream.
            self.live.pop(ptr)

        self._alloc = ALLOCATE(allocate)
        self._dealloc = DEALLOCATE(deallocate)
        self.struct = Allocator(self._alloc, self._dealloc, None)

    @property
    def ptr(self):
        return ctypes.addressof(self.struct)


_KEEP: list = []  # arrays whose pointers were handed out in the current test


@pytest.fixture(autouse=True)
def _keep_arrays_alive(stream):
    yield
    stream.synchronize()
    _KEEP.clear()


def ptr(a) -> int | None:
    """Device pointer of a CuPy array, kept alive until the test ends (a temporary such as
    ``ptr(cp.asarray(x))`` would otherwise be freed before the kernel reads it)."""
    if a is None:
        return None
    _KEEP.append(a)
    return a.data.ptr


def make_bags(rng, batch, max_len, ragged):
    if ragged:
        lengths = rng.integers(0, max_len + 1, size=batch)
        if batch > 2:
            lengths[rng.integers(0, batch)] = 0  # at least one empty bag
        splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return splits
    return None


def ref_lookup(storage, ids, splits, batch, combiner):
    s = storage.astype(np.float64)
    if combiner == Combiner.NONE:
        return s[ids]
    out = np.zeros((batch, storage.shape[1]))
    for b in range(batch):
        lo, hi = splits[b], splits[b + 1]
        if hi > lo:
            v = s[ids[lo:hi]].sum(axis=0)
            if combiner == Combiner.MEAN:
                v = v / (hi - lo)
            elif combiner == Combiner.SQRTN:
                v = v / np.sqrt(hi - lo)
            out[b] = v
    return out


def bag_scales(splits, combiner, n):
    scale = np.ones(n)
    source = np.arange(n)
    if combiner == Combiner.NONE:
        return source, scale
    for b in range(len(splits) - 1):
        lo, hi = splits[b], splits[b + 1]
        source[lo:hi] = b
        length = hi - lo
        if combiner == Combiner.MEAN:
            scale[lo:hi] = 1.0 / length if length else 0.0
        elif combiner == Combiner.SQRTN:
            scale[lo:hi] = 1.0 / np.sqrt(length) if length else 0.0
    return source, scale


def first_appearance_unique(ids):
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inv.reshape(-1)]


# ------------------------------------------------------------------------------------- lookup


@pytest.mark.parametrize("combiner", list(Combiner))
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dim,misalign", [(1, 0), (7, 0), (128, 0), (128, 1), (516, 0)])
def test_lookup_matches_numpy(lib, stream, combiner, ragged, dim, misalign):
    rng = np.random.default_rng()
    slots = int(rng.integers(50, 400))
    batch = 37 if SMALL else int(rng.integers(100, 700))
    if ragged:
        splits = make_bags(rng, batch, 70, True)
    else:
        hot = int(rng.integers(1, 40))
        splits = np.arange(batch + 1, dtype=np.int64) * hot
    n = int(splits[-1])
    ids = rng.integers(0, slots, size=n).astype(np.int64)  # many duplicates
    storage = rng.standard_normal((slots * dim + misalign,)).astype(np.float32)
    d_flat = cp.asarray(storage)
    d_storage = d_flat[misalign:]
    host_storage = storage[misalign:].reshape(slots, dim)
    rows_out = n if combiner == Combiner.NONE else batch
    out = cp.full((rows_out * dim + misalign,), np.nan, dtype=cp.float32)
    out_view = out[misalign:]
    d_ids = cp.asarray(ids)
    d_splits = cp.asarray(splits) if ragged else None
    lib.call(
        "herald_cuda_lookup",
        ptr(d_storage),
        slots,
        dim,
        ptr(d_ids),
        n,
        ptr(d_splits),
        batch,
        int(combiner),
        ptr(out_view),
        stream.ptr,
        None,
        None,
    )
    got = cp.asnumpy(out_view).reshape(rows_out, dim)
    ref = ref_lookup(host_storage, ids, splits, batch, combiner)
    tol = GATHER_TOL if combiner == Combiner.NONE else REDUCE_TOL
    assert rel_err(got, ref) <= tol


def test_lookup_empty_batch(lib, stream):
    storage = cp.asarray(np.random.default_rng().standard_normal((10, 8)).astype(np.float32))
    ids = cp.zeros((0,), dtype=cp.int64)
    out = cp.full((1, 8), np.nan, dtype=cp.float32)
    for combiner in (Combiner.SUM, Combiner.NONE):
        lib.call(
            "herald_cuda_lookup",
            ptr(storage),
            10,
            8,
            ptr(ids),
            0,
            None,
            0,
            int(combiner),
            ptr(out),
            stream.ptr,
            None,
            None,
        )
    splits = cp.zeros((4,), dtype=cp.int64)  # 3 empty bags
    out3 = cp.full((3, 8), np.nan, dtype=cp.float32)
    lib.call(
        "herald_cuda_lookup",
        ptr(storage),
        10,
        8,
        ptr(ids),
        0,
        ptr(splits),
        3,
        int(Combiner.MEAN),
        ptr(out3),
        stream.ptr,
        None,
        None,
    )
    assert np.all(cp.asnumpy(out3) == 0)


def test_lookup_rejects_bad_ids_without_writing(lib, stream):
    rng = np.random.default_rng()
    storage = cp.asarray(rng.standard_normal((20, 16)).astype(np.float32))
    for bad in (-1, 20):
        ids = rng.integers(0, 20, size=40).astype(np.int64)
        ids[17] = bad
        out = cp.full((4, 16), np.nan, dtype=cp.float32)
        code, msg = lib.call(
            "herald_cuda_lookup",
            ptr(storage),
            20,
            16,
            ptr(cp.asarray(ids)),
            40,
            None,
            4,
            int(Combiner.SUM),
            ptr(out),
            stream.ptr,
            None,
            None,
            check=False,
        )
        assert code == StatusCode.OUT_OF_RANGE and "position 17" in msg and str(bad) in msg
        assert np.all(np.isnan(cp.asnumpy(out)))


def test_lookup_rejects_bad_splits(lib, stream):
    storage = cp.asarray(np.ones((5, 4), dtype=np.float32))
    ids = cp.asarray(np.array([0, 1, 2, 3], dtype=np.int64))
    for splits in ([0, 3, 2, 4], [1, 2, 3, 4], [0, 1, 2, 3]):
        out = cp.full((3, 4), np.nan, dtype=cp.float32)
        code, msg = lib.call(
            "herald_cuda_lookup",
            ptr(storage),
            5,
            4,
            ptr(ids),
            4,
            ptr(cp.asarray(np.array(splits, dtype=np.int64))),
            3,
            int(Combiner.SUM),
            ptr(out),
            stream.ptr,
            None,
            None,
            check=False,
        )
        assert code == StatusCode.INVALID_ARGUMENT and "row_splits" in msg
        assert np.all(np.isnan(cp.asnumpy(out)))


def test_host_argument_errors(lib, stream):
    code, msg = lib.call(
        "herald_cuda_lookup", 0, 10, 0, 0, 0, None, 0, 1, 0, stream.ptr, None, None, check=False
    )
    assert code == StatusCode.INVALID_ARGUMENT and "dim" in msg
    code, msg = lib.call(
        "herald_cuda_lookup", 0, 10, 4, 0, 5, None, 2, 1, 0, stream.ptr, None, None, check=False
    )
    assert code == StatusCode.INVALID_ARGUMENT and "multiple of batch" in msg
    params = OptimizerParams(7, 0.1, 0.9, 0.999, 1e-4, 0.1)
    code, msg = lib.call(
        "herald_cuda_sparse_apply",
        ctypes.addressof(params),
        0,
        0,
        0,
        1,
        1,
        0,
        0,
        None,
        0,
        stream.ptr,
        None,
        None,
        check=False,
    )
    assert code == StatusCode.INVALID_ARGUMENT and "optimizer kind" in msg


# ------------------------------------------------------------------------------- dedup / grad


@pytest.mark.parametrize("n", [0, 1, 1000, 70000])
def test_unique_slots_first_appearance_order(lib, stream, n):
    if SMALL and n > 1000:
        n = 3000
    rng = np.random.default_rng()
    slots = int(rng.integers(1, 5000))
    ids = rng.integers(0, slots, size=n).astype(np.int64)
    d_ids = cp.asarray(ids)
    unique = cp.full((max(n, 1),), -7, dtype=cp.int64)
    inverse = cp.full((max(n, 1),), -7, dtype=cp.int64)
    num = cp.full((1,), -7, dtype=cp.int64)
    lib.call(
        "herald_cuda_unique_slots",
        ptr(d_ids),
        n,
        slots,
        ptr(unique),
        ptr(inverse),
        ptr(num),
        stream.ptr,
        None,
        None,
    )
    ref_u, ref_inv = first_appearance_unique(ids)
    u = int(num.get()[0])
    assert u == len(ref_u)
    np.testing.assert_array_equal(cp.asnumpy(unique)[:u], ref_u)
    np.testing.assert_array_equal(cp.asnumpy(inverse)[:n], ref_inv)


def test_unique_slots_64_bit_keys(lib, stream):
    """Slot ranges past 2^32 sort 64-bit keys (as the TF LookupGrad op, which has no storage)."""
    rng = np.random.default_rng()
    base = rng.integers(0, 2**40, size=300)
    ids = base[rng.integers(0, 300, size=5000)].astype(np.int64)
    unique = cp.empty((5000,), dtype=cp.int64)
    inverse = cp.empty((5000,), dtype=cp.int64)
    num = cp.empty((1,), dtype=cp.int64)
    lib.call(
        "herald_cuda_unique_slots",
        ptr(cp.asarray(ids)),
        5000,
        2**62,
        ptr(unique),
        ptr(inverse),
        ptr(num),
        stream.ptr,
        None,
        None,
    )
    ref_u, ref_inv = first_appearance_unique(ids)
    u = int(num.get()[0])
    np.testing.assert_array_equal(cp.asnumpy(unique)[:u], ref_u)
    np.testing.assert_array_equal(cp.asnumpy(inverse), ref_inv)


def ref_segment_sum(grad_out, inverse, splits, combiner, num_unique, n):
    source, scale = bag_scales(splits, combiner, n)
    out = np.zeros((num_unique, grad_out.shape[1]))
    np.add.at(out, inverse, grad_out.astype(np.float64)[source] * scale[:, None])
    return out


@pytest.mark.parametrize("combiner", list(Combiner))
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("dim", [3, 128])
def test_lookup_grad_and_dedup_grad(lib, stream, combiner, ragged, dim):
    rng = np.random.default_rng()
    batch = 50 if SMALL else int(rng.integers(200, 2000))
    if ragged or combiner == Combiner.NONE:
        splits = make_bags(rng, batch, 30, True)
    else:
        splits = np.arange(batch + 1, dtype=np.int64) * int(rng.integers(1, 30))
    n = int(splits[-1])
    slots = int(rng.integers(10, 3000))
    ids = rng.integers(0, slots, size=n).astype(np.int64)
    hot = rng.integers(0, slots)
    ids[rng.random(n) < 0.3] = hot  # one run far longer than a 64-id chunk
    rows = n if combiner == Combiner.NONE else batch
    grad_out = rng.standard_normal((rows, dim)).astype(np.float32)
    d_grad = cp.asarray(grad_out)
    d_ids = cp.asarray(ids)
    d_splits = cp.asarray(splits) if (ragged or combiner == Combiner.NONE) else None
    host_splits = splits
    ref_u, ref_inv = first_appearance_unique(ids)
    u = len(ref_u)
    ref = ref_segment_sum(grad_out, ref_inv, host_splits, combiner, u, n)

    # lookup_grad from an inverse, with two extra unique rows no id maps to (-> zeros)
    summed = cp.full((u + 2, dim), np.nan, dtype=cp.float32)
    lib.call(
        "herald_cuda_lookup_grad",
        ptr(d_grad),
        ptr(cp.asarray(ref_inv)),
        n,
        ptr(d_splits),
        batch,
        int(combiner),
        u + 2,
        dim,
        ptr(summed),
        stream.ptr,
        None,
        None,
    )
    got = cp.asnumpy(summed)
    assert rel_err(got[:u], ref) <= REDUCE_TOL
    assert np.all(got[u:] == 0)

    # fused dedup + grad, twice: bitwise reproducible
    results = []
    for _ in range(2):
        unique = cp.full((n,), -7, dtype=cp.int64)
        inverse = cp.full((n,), -7, dtype=cp.int64)
        num = cp.full((1,), -7, dtype=cp.int64)
        summed2 = cp.full((n, dim), np.nan, dtype=cp.float32)
        lib.call(
            "herald_cuda_dedup_grad",
            ptr(d_ids),
            n,
            slots,
            ptr(d_grad),
            ptr(d_splits),
            batch,
            int(combiner),
            dim,
            ptr(unique),
            ptr(inverse),
            ptr(num),
            ptr(summed2),
            stream.ptr,
            None,
            None,
        )
        assert int(num.get()[0]) == u
        np.testing.assert_array_equal(cp.asnumpy(unique)[:u], ref_u)
        np.testing.assert_array_equal(cp.asnumpy(inverse), ref_inv)
        s2 = cp.asnumpy(summed2)
        assert rel_err(s2[:u], ref) <= REDUCE_TOL
        assert np.all(np.isnan(s2[u:]))  # rows past num_unique untouched
        results.append(s2[:u].copy())
    assert np.array_equal(results[0].view(np.uint32), results[1].view(np.uint32))


@pytest.mark.parametrize("dim", [8, 128, 6])
def test_dedup_grad_hot_rows_span_super_chunks(lib, stream, dim):
    """Runs of thousands of ids (zipf's head) take the two-level combine; still exact order-free
    sums within 1e-5 and bitwise reproducible."""
    rng = np.random.default_rng()
    n = 40000
    ids = rng.integers(0, 1000, size=n).astype(np.int64)
    ids[rng.random(n) < 0.5] = 7
    ids[rng.random(n) < 0.15] = 3
    grads = rng.standard_normal((n, dim)).astype(np.float32)
    d_ids, d_grads = cp.asarray(ids), cp.asarray(grads)
    ref_u, ref_inv = first_appearance_unique(ids)
    ref = ref_segment_sum(grads, ref_inv, None, Combiner.NONE, len(ref_u), n)
    outs = []
    for _ in range(2):
        unique = cp.empty((n,), dtype=cp.int64)
        num = cp.empty((1,), dtype=cp.int64)
        summed = cp.full((n, dim), np.nan, dtype=cp.float32)
        lib.call(
            "herald_cuda_dedup_grad",
            ptr(d_ids),
            n,
            1000,
            ptr(d_grads),
            None,
            n,
            int(Combiner.NONE),
            dim,
            ptr(unique),
            None,
            ptr(num),
            ptr(summed),
            stream.ptr,
            None,
            None,
        )
        u = int(num.get()[0])
        assert u == len(ref_u)
        got = cp.asnumpy(summed)[:u]
        assert rel_err(got, ref) <= REDUCE_TOL
        outs.append(got)
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))


def test_dedup_grad_runs_near_chunk_length(lib, stream):
    """Runs of 1..130 ids (around the 64-id chunk: short runs finished by their first chunk,
    long ones combined from partials), in random order."""
    rng = np.random.default_rng()
    lengths = rng.integers(1, 131, size=400)
    lengths[::7] = rng.choice([63, 64, 65, 128, 129], size=len(lengths[::7]))
    ids = np.repeat(rng.permutation(5000)[: len(lengths)], lengths).astype(np.int64)
    ids = ids[rng.permutation(len(ids))]
    n, dim = len(ids), 16
    grads = rng.standard_normal((n, dim)).astype(np.float32)
    ref_u, ref_inv = first_appearance_unique(ids)
    ref = ref_segment_sum(grads, ref_inv, None, Combiner.NONE, len(ref_u), n)
    unique = cp.empty((n,), dtype=cp.int64)
    num = cp.empty((1,), dtype=cp.int64)
    summed = cp.full((n, dim), np.nan, dtype=cp.float32)
    lib.call(
        "herald_cuda_dedup_grad",
        ptr(cp.asarray(ids)),
        n,
        5000,
        ptr(cp.asarray(grads)),
        None,
        n,
        int(Combiner.NONE),
        dim,
        ptr(unique),
        None,
        ptr(num),
        ptr(summed),
        stream.ptr,
        None,
        None,
    )
    u = int(num.get()[0])
    assert u == len(ref_u)
    np.testing.assert_array_equal(cp.asnumpy(unique)[:u], ref_u)
    assert rel_err(cp.asnumpy(summed)[:u], ref) <= REDUCE_TOL
    summed2 = cp.full((u, dim), np.nan, dtype=cp.float32)
    lib.call(
        "herald_cuda_lookup_grad",
        ptr(cp.asarray(grads)),
        ptr(cp.asarray(ref_inv)),
        n,
        None,
        n,
        int(Combiner.NONE),
        u,
        dim,
        ptr(summed2),
        stream.ptr,
        None,
        None,
    )
    # (chunk boundaries of long rows depend on the sort key, slot or inverse: not bitwise)
    assert rel_err(cp.asnumpy(summed2), ref) <= REDUCE_TOL


def test_lookup_grad_rejects_bad_inverse(lib, stream):
    grad = cp.asarray(np.ones((6, 4), dtype=np.float32))
    inverse = cp.asarray(np.array([0, 1, 5, 1, 0, 2], dtype=np.int64))
    summed = cp.full((3, 4), np.nan, dtype=cp.float32)
    code, msg = lib.call(
        "herald_cuda_lookup_grad",
        ptr(grad),
        ptr(inverse),
        6,
        None,
        6,
        int(Combiner.NONE),
        3,
        4,
        ptr(summed),
        stream.ptr,
        None,
        None,
        check=False,
    )
    assert code == StatusCode.OUT_OF_RANGE and "position 2" in msg
    assert np.all(np.isnan(cp.asnumpy(summed)))


# ---------------------------------------------------------------------------------- optimizers


def ref_apply(kind, p, value, state, versions, slots_u, grads):
    lr, b1, b2, eps = p.learning_rate, p.beta1, p.beta2, p.epsilon
    for k, s in enumerate(slots_u):
        g = grads[k].astype(np.float64)
        if kind == Optimizer.SGD:
            value[s] -= lr * g
        elif kind == Optimizer.ADAGRAD:
            state[s] += g * g
            value[s] -= lr * g / (np.sqrt(state[s]) + eps)
        else:
            dim = value.shape[1]
            t = versions[s] + 1
            m = b1 * state[s, :dim] + (1 - b1) * g
            v = b2 * state[s, dim:] + (1 - b2) * g * g
            state[s, :dim], state[s, dim:] = m, v
            value[s] -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        versions[s] += 1


@pytest.mark.parametrize("kind", list(Optimizer))
@pytest.mark.parametrize("dim", [5, 12, 128, 132])
def test_sparse_apply_20_steps_vs_float64(lib, stream, kind, dim):
    rng = np.random.default_rng()
    slots = 300 if SMALL else 3000
    width = {Optimizer.SGD: 0, Optimizer.ADAGRAD: dim, Optimizer.ADAM: 2 * dim}[kind]
    p = OptimizerParams(int(kind), 0.05, 0.9, 0.999, 1e-4, 0.1)
    value = rng.standard_normal((slots, dim))
    state = np.full((slots, width), p.initial_accumulator if kind == Optimizer.ADAGRAD else 0.0)
    versions = np.zeros(slots, dtype=np.int64)
    d_value = cp.asarray(value.astype(np.float32))
    d_state = cp.zeros((slots, max(width, 1)), dtype=cp.float32)
    lib.call("herald_cuda_init_state", ctypes.addressof(p), slots, dim, ptr(d_state), stream.ptr)
    d_versions = cp.zeros((slots,), dtype=cp.int64)
    value = value.astype(np.float32).astype(np.float64)
    for step in range(22):
        u = int(rng.integers(1, slots // 3))
        slots_u = rng.choice(slots, size=u, replace=False).astype(np.int64)
        grads = (rng.standard_normal((u, dim)) * rng.choice([1e-3, 1.0, 30.0])).astype(np.float32)
        p.learning_rate = float(rng.choice([0.01, 0.05, 0.2]))
        use_device_count = step % 2 == 1
        d_slots = cp.asarray(np.concatenate([slots_u, [-5, slots + 9]]))  # junk past u_device
        d_grads = cp.asarray(np.concatenate([grads, np.full((2, dim), np.nan, np.float32)]))
        d_u = cp.asarray(np.array([u], dtype=np.int64))
        lib.call(
            "herald_cuda_sparse_apply",
            ctypes.addressof(p),
            ptr(d_value),
            ptr(d_state) if width else None,
            ptr(d_versions),
            slots,
            dim,
            ptr(d_slots),
            u + 2 if use_device_count else u,
            ptr(d_u) if use_device_count else None,
            ptr(d_grads),
            stream.ptr,
            None,
            None,
        )
        ref_apply(kind, p, value, state, versions, slots_u, grads)
    assert rel_err(cp.asnumpy(d_value), value) <= REDUCE_TOL
    if width:
        assert rel_err(cp.asnumpy(d_state), state) <= REDUCE_TOL
    np.testing.assert_array_equal(cp.asnumpy(d_versions), versions)


def _apply_args(p, d_value, d_state, d_versions, slots, dim, d_slots, u, d_grads, stream):
    return (
        ctypes.addressof(p),
        ptr(d_value),
        ptr(d_state),
        ptr(d_versions),
        slots,
        dim,
        ptr(d_slots),
        u,
        None,
        ptr(d_grads),
        stream.ptr,
    )


@pytest.mark.parametrize("defect", ["range", "duplicate", "nan", "inf"])
@pytest.mark.parametrize("dim", [8, 5])
def test_sparse_apply_invalid_changes_nothing(lib, stream, defect, dim):
    rng = np.random.default_rng()
    slots, u = 100, 30
    p = OptimizerParams(int(Optimizer.ADAM), 0.1, 0.9, 0.999, 1e-4, 0.0)
    d_value = cp.asarray(rng.standard_normal((slots, dim)).astype(np.float32))
    d_state = cp.asarray(rng.random((slots, 2 * dim)).astype(np.float32))
    d_versions = cp.asarray(rng.integers(0, 5, slots).astype(np.int64))
    before = [cp.asnumpy(a) for a in (d_value, d_state, d_versions)]
    slots_u = rng.choice(slots, size=u, replace=False).astype(np.int64)
    grads = rng.standard_normal((u, dim)).astype(np.float32)
    if defect == "range":
        slots_u[11] = slots
    elif defect == "duplicate":
        slots_u[20] = slots_u[3]
    else:
        grads[7, 2] = np.nan if defect == "nan" else np.inf
    code, msg = lib.call(
        "herald_cuda_sparse_apply",
        *_apply_args(
            p,
            d_value,
            d_state,
            d_versions,
            slots,
            dim,
            cp.asarray(slots_u),
            u,
            cp.asarray(grads),
            stream,
        ),
        None,
        None,
        check=False,
    )
    expected = StatusCode.OUT_OF_RANGE if defect == "range" else StatusCode.INVALID_ARGUMENT
    assert code == expected, msg
    if defect == "duplicate":
        assert f"slot {slots_u[3]}" in msg
    if defect in ("nan", "inf"):
        assert f"element {7 * dim + 2}" in msg
    for a, b in zip((d_value, d_state, d_versions), before):
        np.testing.assert_array_equal(cp.asnumpy(a), b)


def test_async_error_record_is_sticky(lib, stream):
    rng = np.random.default_rng()
    slots, dim = 50, 4
    p = OptimizerParams(int(Optimizer.SGD), 0.1, 0.9, 0.999, 1e-4, 0.0)
    d_value = cp.asarray(rng.standard_normal((slots, dim)).astype(np.float32))
    d_versions = cp.zeros((slots,), dtype=cp.int64)
    before = cp.asnumpy(d_value)
    record = cp.zeros((1,), dtype=cp.uint64)
    lib.call("herald_cuda_error_reset", ptr(record), stream.ptr)
    bad = cp.asarray(np.array([1, 2, 99], dtype=np.int64))
    good = cp.asarray(np.array([1, 2, 3], dtype=np.int64))
    grads = cp.asarray(np.ones((3, dim), dtype=np.float32))
    for ids in (bad, good):  # the second, valid call must write nothing either
        code, _ = lib.call(
            "herald_cuda_sparse_apply",
            ctypes.addressof(p),
            ptr(d_value),
            None,
            ptr(d_versions),
            slots,
            dim,
            ptr(ids),
            3,
            None,
            ptr(grads),
            stream.ptr,
            None,
            ptr(record),
        )
        assert code == StatusCode.OK  # asynchronous: reported through the record
    code, msg = lib.call("herald_cuda_error_read", ptr(record), stream.ptr, check=False)
    assert code == StatusCode.OUT_OF_RANGE and "position 2" in msg
    np.testing.assert_array_equal(cp.asnumpy(d_value), before)
    assert int(cp.asnumpy(d_versions).sum()) == 0
    lib.call("herald_cuda_error_reset", ptr(record), stream.ptr)
    lib.call(
        "herald_cuda_sparse_apply",
        ctypes.addressof(p),
        ptr(d_value),
        None,
        ptr(d_versions),
        slots,
        dim,
        ptr(good),
        3,
        None,
        ptr(grads),
        stream.ptr,
        None,
        ptr(record),
    )
    lib.call("herald_cuda_error_read", ptr(record), stream.ptr)
    np.testing.assert_allclose(cp.asnumpy(d_value)[1:4], before[1:4] - 0.1, rtol=1e-6)


def test_dedup_then_apply_pipeline_with_device_count(lib, stream):
    """dedup_grad's device num_unique drives sparse_apply with no host sync in between."""
    rng = np.random.default_rng()
    slots, dim, batch, hot = 5000, 128, 64 if SMALL else 512, 26
    n = batch * hot
    ids = rng.integers(0, slots, size=n).astype(np.int64)
    grad_out = rng.standard_normal((batch, dim)).astype(np.float32)
    value = rng.standard_normal((slots, dim)).astype(np.float32)
    d_value = cp.asarray(value)
    d_versions = cp.zeros((slots,), dtype=cp.int64)
    unique = cp.empty((n,), dtype=cp.int64)
    num = cp.empty((1,), dtype=cp.int64)
    summed = cp.empty((n, dim), dtype=cp.float32)
    alloc = PyAllocator()
    record = cp.zeros((1,), dtype=cp.uint64)
    lib.call("herald_cuda_error_reset", ptr(record), stream.ptr)
    lib.call(
        "herald_cuda_dedup_grad",
        ptr(cp.asarray(ids)),
        n,
        slots,
        ptr(cp.asarray(grad_out)),
        None,
        batch,
        int(Combiner.SUM),
        dim,
        ptr(unique),
        None,
        ptr(num),
        ptr(summed),
        stream.ptr,
        alloc.ptr,
        ptr(record),
    )
    p = OptimizerParams(int(Optimizer.SGD), 0.1, 0.9, 0.999, 1e-4, 0.0)
    lib.call(
        "herald_cuda_sparse_apply",
        ctypes.addressof(p),
        ptr(d_value),
        None,
        ptr(d_versions),
        slots,
        dim,
        ptr(unique),
        n,
        ptr(num),
        ptr(summed),
        stream.ptr,
        alloc.ptr,
        ptr(record),
    )
    lib.call("herald_cuda_error_read", ptr(record), stream.ptr)
    assert alloc.allocations == 2 and not alloc.live
    ref_u, ref_inv = first_appearance_unique(ids)
    g = ref_segment_sum(grad_out, ref_inv, np.arange(batch + 1) * hot, Combiner.SUM, len(ref_u), n)
    ref = value.astype(np.float64)
    ref[ref_u] -= 0.1 * g
    assert rel_err(cp.asnumpy(d_value), ref) <= REDUCE_TOL
    counts = np.zeros(slots, dtype=np.int64)
    counts[ref_u] = 1
    np.testing.assert_array_equal(cp.asnumpy(d_versions), counts)


@pytest.mark.parametrize("kind", list(Optimizer))
@pytest.mark.parametrize("ragged", [False, True])
def test_dedup_apply_matches_reference_and_unfused_path(lib, stream, kind, ragged):
    """The fused call equals dedup_grad + sparse_apply bit for bit, and float64 numpy to 1e-5."""
    rng = np.random.default_rng()
    slots, dim = 2000, 128 if not ragged else 12
    batch = 40 if SMALL else 300
    width = {Optimizer.SGD: 0, Optimizer.ADAGRAD: dim, Optimizer.ADAM: 2 * dim}[kind]
    p = OptimizerParams(int(kind), 0.05, 0.9, 0.999, 1e-4, 0.1)
    value = rng.standard_normal((slots, dim)).astype(np.float32)
    d_values = [cp.asarray(value), cp.asarray(value)]
    d_states = [
        cp.full(
            (slots, max(width, 1)), p.initial_accumulator if width == dim else 0.0, dtype=cp.float32
        )
        for _ in range(2)
    ]
    d_versions = [cp.zeros((slots,), dtype=cp.int64) for _ in range(2)]
    ref_value = value.astype(np.float64)
    ref_state = np.full((slots, width), p.initial_accumulator if kind == Optimizer.ADAGRAD else 0.0)
    ref_versions = np.zeros(slots, dtype=np.int64)
    combiner = Combiner.MEAN if ragged else Combiner.SUM
    for _step in range(20):
        if ragged:
            splits = make_bags(rng, batch, 20, True)
        else:
            splits = np.arange(batch + 1, dtype=np.int64) * 7
        n = int(splits[-1])
        ids = rng.integers(0, slots, size=n).astype(np.int64)
        ids[rng.random(n) < 0.2] = 5
        grad_out = rng.standard_normal((batch, dim)).astype(np.float32)
        d_ids, d_grad = cp.asarray(ids), cp.asarray(grad_out)
        d_splits = cp.asarray(splits) if ragged else None
        outs = []
        for path in range(2):
            unique = cp.full((max(n, 1),), -1, dtype=cp.int64)
            num = cp.zeros((1,), dtype=cp.int64)
            summed = cp.full((max(n, 1), dim), np.nan, dtype=cp.float32)
            state_ptr = ptr(d_states[path]) if width else None
            if path == 0:
                lib.call(
                    "herald_cuda_dedup_apply",
                    ctypes.addressof(p),
                    ptr(d_values[0]),
                    state_ptr,
                    ptr(d_versions[0]),
                    slots,
                    dim,
                    ptr(d_ids),
                    n,
                    ptr(d_grad),
                    ptr(d_splits),
                    batch,
                    int(combiner),
                    ptr(unique),
                    ptr(num),
                    ptr(summed),
                    stream.ptr,
                    None,
                    None,
                )
            else:
                lib.call(
                    "herald_cuda_dedup_grad",
                    ptr(d_ids),
                    n,
                    slots,
                    ptr(d_grad),
                    ptr(d_splits),
                    batch,
                    int(combiner),
                    dim,
                    ptr(unique),
                    None,
                    ptr(num),
                    ptr(summed),
                    stream.ptr,
                    None,
                    None,
                )
                lib.call(
                    "herald_cuda_sparse_apply",
                    ctypes.addressof(p),
                    ptr(d_values[1]),
                    state_ptr,
                    ptr(d_versions[1]),
                    slots,
                    dim,
                    ptr(unique),
                    max(n, 1),
                    ptr(num),
                    ptr(summed),
                    stream.ptr,
                    None,
                    None,
                )
            outs.append(int(num.get()[0]))
        assert outs[0] == outs[1]
        ref_u, ref_inv = first_appearance_unique(ids)
        g = ref_segment_sum(grad_out, ref_inv, splits, combiner, len(ref_u), n)
        ref_apply(kind, p, ref_value, ref_state, ref_versions, ref_u, g.astype(np.float32))
    assert np.array_equal(
        cp.asnumpy(d_values[0]).view(np.uint32), cp.asnumpy(d_values[1]).view(np.uint32)
    )
    np.testing.assert_array_equal(cp.asnumpy(d_versions[0]), ref_versions)
    assert rel_err(cp.asnumpy(d_values[0]), ref_value) <= REDUCE_TOL
    if width:
        assert rel_err(cp.asnumpy(d_states[0]), ref_state) <= REDUCE_TOL


def test_dedup_apply_nonfinite_changes_nothing(lib, stream):
    rng = np.random.default_rng()
    slots, dim, batch = 500, 8, 64
    ids = rng.integers(0, slots, size=batch * 3).astype(np.int64)
    ids[:100] = 9  # a run spanning several chunks: its sum is checked by the combine pass
    grad = rng.standard_normal((batch, dim)).astype(np.float32)
    for bad_row in (0, 50):
        g = grad.copy()
        g[bad_row, 3] = np.inf
        p = OptimizerParams(int(Optimizer.ADAGRAD), 0.1, 0.9, 0.999, 1e-4, 0.1)
        d_value = cp.asarray(rng.standard_normal((slots, dim)).astype(np.float32))
        d_state = cp.full((slots, dim), 0.1, dtype=cp.float32)
        d_versions = cp.zeros((slots,), dtype=cp.int64)
        before = [cp.asnumpy(a) for a in (d_value, d_state, d_versions)]
        unique = cp.empty((batch * 3,), dtype=cp.int64)
        num = cp.empty((1,), dtype=cp.int64)
        summed = cp.empty((batch * 3, dim), dtype=cp.float32)
        code, msg = lib.call(
            "herald_cuda_dedup_apply",
            ctypes.addressof(p),
            ptr(d_value),
            ptr(d_state),
            ptr(d_versions),
            slots,
            dim,
            ptr(cp.asarray(ids)),
            batch * 3,
            ptr(cp.asarray(g)),
            None,
            batch,
            int(Combiner.SUM),
            ptr(unique),
            ptr(num),
            ptr(summed),
            stream.ptr,
            None,
            None,
            check=False,
        )
        assert code == StatusCode.INVALID_ARGUMENT and "finite" in msg
        for a, b in zip((d_value, d_state, d_versions), before):
            np.testing.assert_array_equal(cp.asnumpy(a), b)


@pytest.mark.parametrize("bad", [-3, 500])
def test_dedup_apply_and_unique_reject_bad_ids(lib, stream, bad):
    rng = np.random.default_rng()
    slots, dim, n = 500, 8, 300
    ids = rng.integers(0, slots, size=n).astype(np.int64)
    ids[123] = bad
    p = OptimizerParams(int(Optimizer.SGD), 0.1, 0.9, 0.999, 1e-4, 0.1)
    d_value = cp.asarray(rng.standard_normal((slots, dim)).astype(np.float32))
    d_versions = cp.zeros((slots,), dtype=cp.int64)
    before = cp.asnumpy(d_value)
    unique = cp.full((n,), -1, dtype=cp.int64)
    num = cp.full((1,), -1, dtype=cp.int64)
    summed = cp.full((n, dim), np.nan, dtype=cp.float32)
    code, msg = lib.call(
        "herald_cuda_dedup_apply",
        ctypes.addressof(p),
        ptr(d_value),
        None,
        ptr(d_versions),
        slots,
        dim,
        ptr(cp.asarray(ids)),
        n,
        ptr(cp.asarray(rng.standard_normal((n, dim)).astype(np.float32))),
        None,
        n,
        int(Combiner.NONE),
        ptr(unique),
        ptr(num),
        ptr(summed),
        stream.ptr,
        None,
        None,
        check=False,
    )
    assert code == StatusCode.OUT_OF_RANGE and "position 123" in msg and str(bad) in msg
    np.testing.assert_array_equal(cp.asnumpy(d_value), before)
    assert int(cp.asnumpy(d_versions).sum()) == 0
    assert np.all(cp.asnumpy(unique) == -1) and int(num.get()[0]) == -1
    assert np.all(np.isnan(cp.asnumpy(summed)))
    code, msg = lib.call(
        "herald_cuda_unique_slots",
        ptr(cp.asarray(ids)),
        n,
        slots,
        ptr(unique),
        None,
        ptr(num),
        stream.ptr,
        None,
        None,
        check=False,
    )
    assert code == StatusCode.OUT_OF_RANGE and "position 123" in msg


# ------------------------------------------------------------------------------ rows, init


@pytest.mark.parametrize("width", [1, 6, 128, 384])
def test_gather_scatter_rows(lib, stream, width):
    rng = np.random.default_rng()
    slots = 700
    storage = rng.standard_normal((slots, width)).astype(np.float32)
    d_storage = cp.asarray(storage)
    ids = rng.integers(0, slots, size=333).astype(np.int64)
    out = cp.full((333, width), np.nan, dtype=cp.float32)
    lib.call(
        "herald_cuda_gather_rows",
        ptr(d_storage),
        slots,
        width,
        ptr(cp.asarray(ids)),
        333,
        ptr(out),
        stream.ptr,
        None,
        None,
    )
    assert rel_err(cp.asnumpy(out), storage[ids]) <= GATHER_TOL
    dest = rng.choice(slots, size=200, replace=False).astype(np.int64)
    rows = rng.standard_normal((200, width)).astype(np.float32)
    lib.call(
        "herald_cuda_scatter_rows",
        ptr(d_storage),
        slots,
        width,
        ptr(cp.asarray(dest)),
        200,
        ptr(cp.asarray(rows)),
        stream.ptr,
        PyAllocator().ptr,
        None,
    )
    storage[dest] = rows
    np.testing.assert_array_equal(cp.asnumpy(d_storage), storage)
    before = cp.asnumpy(d_storage)
    dup = dest.copy()
    dup[150] = dup[10]
    code, msg = lib.call(
        "herald_cuda_scatter_rows",
        ptr(d_storage),
        slots,
        width,
        ptr(cp.asarray(dup)),
        200,
        ptr(cp.asarray(rows * 2)),
        stream.ptr,
        None,
        None,
        check=False,
    )
    assert code == StatusCode.INVALID_ARGUMENT and f"slot {dup[10]}" in msg
    np.testing.assert_array_equal(cp.asnumpy(d_storage), before)


def _mix64(x):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ref_init(kind, seed, a, b, keys, dim):
    with np.errstate(over="ignore"):
        k = keys.astype(np.uint64)[:, None]
        base = _mix64(k ^ _mix64(np.uint64(seed)))

        def unit(counter):
            bits = _mix64(base ^ ((counter + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)))
            return (bits >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)

        j = np.arange(dim, dtype=np.uint64)[None, :]
        if kind == Initializer.UNIFORM:
            return np.float32(a) + unit(j) * (np.float32(b) - np.float32(a))
        if kind == Initializer.NORMAL:
            u1 = unit(2 * j).astype(np.float64) + 1.0 / 16777216.0
            u2 = unit(2 * j + np.uint64(1)).astype(np.float64)
            return a + b * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
        return np.zeros((len(keys), dim))


@pytest.mark.parametrize("kind", list(Initializer))
def test_init_rows_matches_reference(lib, stream, kind):
    rng = np.random.default_rng()
    keys = rng.integers(-(2**62), 2**62, size=500).astype(np.int64)
    dim = 33
    params = InitializerParams(int(kind), int(rng.integers(0, 2**63)), -0.05, 0.05)
    if kind == Initializer.NORMAL:
        params.a, params.b = 0.0, 0.01
    out = cp.full((500, dim), np.nan, dtype=cp.float32)
    lib.call(
        "herald_cuda_init_rows",
        ctypes.addressof(params),
        ptr(cp.asarray(keys)),
        500,
        dim,
        ptr(out),
        stream.ptr,
    )
    ref = ref_init(kind, params.seed, params.a, params.b, keys, dim)
    got = cp.asnumpy(out)
    if kind == Initializer.UNIFORM:
        np.testing.assert_array_equal(got, ref)  # bit-identical everywhere
    else:
        assert rel_err(got, ref) <= REDUCE_TOL


def test_injected_allocator_is_used(lib, stream):
    alloc = PyAllocator()
    ids = cp.asarray(np.array([3, 1, 3], dtype=np.int64))
    unique = cp.empty((3,), dtype=cp.int64)
    num = cp.empty((1,), dtype=cp.int64)
    lib.call(
        "herald_cuda_unique_slots",
        ptr(ids),
        3,
        4,
        ptr(unique),
        None,
        ptr(num),
        stream.ptr,
        alloc.ptr,
        None,
    )
    assert alloc.allocations == 1 and not alloc.live
    assert list(cp.asnumpy(unique)[: int(num.get()[0])]) == [3, 1]


def test_api_version(lib):
    assert lib.raw("herald_cuda_api_version") == 1


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
