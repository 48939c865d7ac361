"""Bad input to the ops raises a clear InvalidArgumentError and leaves storage unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from herald_tf import InvalidArgumentError, OptimizerConfig, _core, ops


@pytest.fixture
def table() -> tuple[tf.Variable, tf.Variable, tf.Variable, np.ndarray]:
    value = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    return (tf.Variable(value), tf.Variable(np.full((10, 4), 0.1, np.float32)),
            tf.Variable(np.zeros(10, np.int64)), value)


def _unchanged(table) -> None:
    storage, state, versions, value = table
    np.testing.assert_array_equal(storage.numpy(), value)
    np.testing.assert_array_equal(state.numpy(), np.full((10, 4), 0.1, np.float32))
    assert versions.numpy().sum() == 0


def test_lookup_of_out_of_range_slot_names_it(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot id\[2\]=10"):
        ops.lookup(table[0], tf.constant([[1, 2, 10]], tf.int64))


def test_lookup_of_negative_slot_names_it(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot id\[0\]=-1"):
        ops.lookup(table[0], tf.constant([[-1]], tf.int64))


def test_lookup_refuses_float_ids(table) -> None:
    with pytest.raises(TypeError, match="int64"):
        ops.lookup(table[0], tf.constant([[1.0]]))


def test_lookup_refuses_rank_3_ids(table) -> None:
    with pytest.raises(ValueError, match="shape"):
        ops.lookup(table[0], tf.zeros([2, 2, 2], tf.int64))


def test_lookup_refuses_bad_row_splits(table) -> None:
    ops_module = ops.load_ops()
    with pytest.raises(tf.errors.InvalidArgumentError, match="row_splits"):
        ops_module.herald_lookup(table[0].handle, tf.constant([1, 2], tf.int64),
                                 tf.constant([0, 3], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-decreasing"):
        ops_module.herald_lookup(table[0].handle, tf.constant([1, 2], tf.int64),
                                 tf.constant([0, 2, 1, 2], tf.int64))


def test_sparse_apply_of_out_of_range_slot_changes_nothing(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"unique slot\[1\]=12"):
        ops.sparse_apply(table[0], table[1], table[2], tf.constant([3, 12], tf.int64),
                         tf.ones([2, 4]), OptimizerConfig("adagrad"))
    _unchanged(table)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_sparse_apply_of_non_finite_gradient_changes_nothing(table, bad: float) -> None:
    grads = np.ones((2, 4), np.float32)
    grads[1, 3] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite gradients"):
        ops.sparse_apply(table[0], table[1], table[2], tf.constant([3, 4], tf.int64), grads,
                         OptimizerConfig("adagrad"))
    _unchanged(table)


def test_sparse_apply_of_repeated_slot_changes_nothing(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="distinct"):
        ops.sparse_apply(table[0], table[1], table[2], tf.constant([3, 3], tf.int64),
                         tf.ones([2, 4]), OptimizerConfig("adagrad"))
    _unchanged(table)


def test_sparse_apply_of_mismatched_dim_changes_nothing(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"grads of shape \[1,4\]"):
        ops.sparse_apply(table[0], table[1], table[2], tf.constant([3], tf.int64),
                         tf.ones([1, 5]), OptimizerConfig("adagrad"))
    _unchanged(table)


def test_sparse_apply_with_wrong_state_width_changes_nothing(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="optimizer state of shape"):
        ops.sparse_apply(table[0], table[1], table[2], tf.constant([3], tf.int64),
                         tf.ones([1, 4]), OptimizerConfig("adam"))
    _unchanged(table)


def test_sparse_apply_refuses_int32_versions(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="int64"):
        ops.sparse_apply(table[0], table[1], tf.Variable(np.zeros(10, np.int32)),
                         tf.constant([3], tf.int64), tf.ones([1, 4]), OptimizerConfig("sgd"))
    np.testing.assert_array_equal(table[0].numpy(), table[3])


def test_scatter_of_repeated_slots_changes_nothing(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match="distinct slot ids"):
        ops.scatter_rows(table[0], tf.constant([1, 1], tf.int64), tf.zeros([2, 4]))
    _unchanged(table)


def test_scatter_of_mismatched_rows_changes_nothing(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"rows of shape \[2,4\]"):
        ops.scatter_rows(table[0], tf.constant([1, 2], tf.int64), tf.zeros([2, 3]))
    _unchanged(table)


def test_gather_of_out_of_range_slot_names_it(table) -> None:
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot id\[0\]=99"):
        ops.gather_rows(table[0], tf.constant([99], tf.int64))


def test_ctypes_core_refuses_non_finite_gradients_without_change() -> None:
    config = OptimizerConfig("sgd")
    values = np.ones((3, 2), np.float32)
    versions = np.zeros(3, np.int64)
    with pytest.raises(InvalidArgumentError, match="finite"):
        _core.sparse_apply(config, values, np.empty((3, 0), np.float32), versions,
                           np.array([0, 1]), np.array([[1, 1], [np.nan, 1]], np.float32))
    np.testing.assert_array_equal(values, 1)
    assert versions.sum() == 0
