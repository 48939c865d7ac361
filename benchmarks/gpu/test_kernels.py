"""Checks every kernel of kernels/cuda/ against a numpy reference on fresh random inputs.

Run on a GPU host after benchmarks/gpu/build.sh:
    python3 -m pytest -q benchmarks/gpu/test_kernels.py
HERALD_TEST_SMALL=1 shrinks the sizes (for compute-sanitizer runs). Outputs are poisoned with NaN
before each call; gathers must match to 1e-6 relative, reductions and optimizers to 1e-5
(‖a − r‖∞ ≤ tol · max(‖r‖∞, 1e-3), DESIGN §2a), optimizers over ≥ 20 steps against float64.
"""

from __future__ import annotations

import ctypes

import cupy as cp
import numpy as np
import pytest
from gpu_testing import (
    GATHER_TOL,
    REDUCE_TOL,
    SMALL,
    PyAllocator,
    first_appearance_unique,
    make_bags,
    ptr,
    ref_init,
    ref_lookup,
    ref_segment_sum,
    rel_err,
)
from herald_cuda import (
    Combiner,
    Initializer,
    InitializerParams,
    OptimizerParams,
    StatusCode,
)

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
    alloc = PyAllocator()  # held: the core calls through it (a temporary would be freed first)
    lib.call(
        "herald_cuda_scatter_rows",
        ptr(d_storage),
        slots,
        width,
        ptr(cp.asarray(dest)),
        200,
        ptr(cp.asarray(rows)),
        stream.ptr,
        alloc.ptr,
        None,
    )
    storage[dest] = rows
    np.testing.assert_array_equal(cp.asnumpy(d_storage), storage)
    assert alloc.allocations == 1 and not alloc.live  # the distinct check's bitmap, released
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
