"""Optimizer apply on the GPU against float64 numpy (>= 20 steps), the fused dedup+apply, and the
device-side validation that leaves storage unchanged. Run as test_kernels.py (see there)."""

from __future__ import annotations

import ctypes

import cupy as cp
import numpy as np
import pytest
from gpu_testing import (
    REDUCE_TOL,
    SMALL,
    PyAllocator,
    first_appearance_unique,
    make_bags,
    ptr,
    ref_apply,
    ref_segment_sum,
    rel_err,
)
from herald_cuda import (
    Combiner,
    Optimizer,
    OptimizerParams,
    StatusCode,
)

# ---------------------------------------------------------------------------------- optimizers


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


@pytest.mark.parametrize("defect", ["range", "duplicate", "nan", "inf", "negative_rate",
                                    "nan_rate"])
@pytest.mark.parametrize("dim", [8, 5])
def test_sparse_apply_invalid_changes_nothing(lib, stream, defect, dim):
    rng = np.random.default_rng()
    slots, u = 100, 30
    rate = {"negative_rate": -0.1, "nan_rate": float("nan")}.get(defect, 0.1)
    p = OptimizerParams(int(Optimizer.ADAM), rate, 0.9, 0.999, 1e-4, 0.0)
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
    elif defect in ("nan", "inf"):
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
    if defect.endswith("_rate"):
        assert "finite learning rate >= 0" in msg
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
@pytest.mark.parametrize(
    "combiner,ragged",
    [
        (Combiner.NONE, False),
        (Combiner.SUM, False),
        (Combiner.MEAN, True),
        (Combiner.SQRTN, True),
    ],
)
def test_dedup_apply_matches_reference_and_unfused_path(lib, stream, kind, combiner, ragged):
    """The fused call equals dedup_grad + sparse_apply bit for bit (single-id rows applied
    straight from grad_out included), and float64 numpy to 1e-5; its workspace holds the sums of
    the rows with several ids."""
    rng = np.random.default_rng()
    # dims 12 and 13: a warp's partial row (4-wide kernels) and the scalar kernels
    slots = 2000
    dim = {Combiner.MEAN: 12, Combiner.SQRTN: 13}.get(combiner, 128)
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
    for _step in range(20):
        if ragged:
            splits = make_bags(rng, batch, 20, True)
        else:
            splits = np.arange(batch + 1, dtype=np.int64) * 7
        n = int(splits[-1])
        ids = rng.integers(0, slots, size=n).astype(np.int64)
        ids[rng.random(n) < 0.2] = 5
        rows_out = n if combiner == Combiner.NONE else batch
        grad_out = rng.standard_normal((rows_out, dim)).astype(np.float32)
        d_ids, d_grad = cp.asarray(ids), cp.asarray(grad_out)
        d_splits = cp.asarray(splits) if ragged else None
        outs, sums = [], []
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
                    rows_out,
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
                    rows_out,
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
            sums.append(cp.asnumpy(summed))
        assert outs[0] == outs[1]
        ref_u, ref_inv = first_appearance_unique(ids)
        several = np.bincount(ref_inv, minlength=len(ref_u)) > 1
        assert several.any() and not several.all()
        assert np.array_equal(
            sums[0][: len(ref_u)][several].view(np.uint32),
            sums[1][: len(ref_u)][several].view(np.uint32),
        )
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


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
