"""Row gather (push/flush) and scatter (pull into the cache)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from herald_tf import _core, ops


def test_gather_rows_copies_the_named_rows() -> None:
    storage = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    ids = np.array([3, 0, 3, 11], np.int64)
    np.testing.assert_array_equal(ops.gather_rows(tf.Variable(storage), ids).numpy(), storage[ids])
    np.testing.assert_array_equal(_core.gather_rows(storage, ids), storage[ids])


def test_gather_rows_of_an_output_larger_than_the_caches_copies_the_named_rows() -> None:
    # >= 4 MiB of whole-line rows bypass the caches (kernels/core/scattered_rows.h): the same
    # values whether the output starts on a cache line (streamed) or not (memcpy)
    storage = np.random.default_rng(2).normal(size=(30_000, 64)).astype(np.float32)
    ids = np.random.default_rng(3).integers(0, 30_000, 20_000).astype(np.int64)
    out = _core.gather_rows(storage, ids)
    assert out.ctypes.data % 64 == 0
    np.testing.assert_array_equal(out, storage[ids])
    np.testing.assert_array_equal(ops.gather_rows(tf.Variable(storage), ids).numpy(), storage[ids])


def test_line_aligned_rows_start_on_a_cache_line() -> None:
    for n, width in [(0, 0), (0, 5), (3, 0), (5, 7), (1000, 64)]:
        a = _core.line_aligned_rows(n, width)
        assert a.shape == (n, width) and a.dtype == np.float32 and a.flags.c_contiguous
        assert a.flags.writeable and (a.size == 0 or a.ctypes.data % 64 == 0)
        assert not _core.line_aligned_rows(n, width, zero=True).any()


def test_scatter_rows_writes_only_the_named_rows() -> None:
    rng = np.random.default_rng(1)
    storage = rng.normal(size=(12, 5)).astype(np.float32)
    rows = rng.normal(size=(3, 5)).astype(np.float32)
    ids = np.array([7, 2, 9], np.int64)
    var = tf.Variable(storage)
    ops.scatter_rows(var, ids, rows)
    expected = storage.copy()
    expected[ids] = rows
    np.testing.assert_array_equal(var.numpy(), expected)
    _core.scatter_rows(storage, ids, rows)
    np.testing.assert_array_equal(storage, expected)


def test_scatter_keeps_an_earlier_read_unchanged() -> None:
    var = tf.Variable(np.zeros((4, 2), np.float32))
    before = var.read_value()
    ops.scatter_rows(var, np.array([1], np.int64), np.ones((1, 2), np.float32))
    assert before.numpy().sum() == 0 and var.numpy().sum() == 2


def test_gather_and_scatter_of_no_rows_are_no_ops() -> None:
    var = tf.Variable(np.ones((4, 2), np.float32))
    assert ops.gather_rows(var, np.zeros(0, np.int64)).shape == (0, 2)
    ops.scatter_rows(var, np.zeros(0, np.int64), np.zeros((0, 2), np.float32))
    assert var.numpy().sum() == 8
