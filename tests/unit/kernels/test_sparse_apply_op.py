"""Herald>SparseApply (SGD, Adagrad, Adam) against a float64 numpy optimizer, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from reference import NumpyOptimizer, assert_close

from herald_tf import OptimizerConfig, _core, ops

CONFIGS = {
    "sgd": OptimizerConfig("sgd", learning_rate=0.05),
    "adagrad": OptimizerConfig("adagrad", learning_rate=0.05, initial_accumulator=0.1),
    "adam": OptimizerConfig("adam", learning_rate=0.01, epsilon=1e-4),
}


def _variables(rows: int, dim: int, config: OptimizerConfig, rng: np.random.Generator):
    value = rng.normal(size=(rows, dim)).astype(np.float32)
    state = _core.init_state(config, rows, dim)
    versions = tf.Variable(np.zeros(rows, np.int64))
    return value, state, tf.Variable(value), tf.Variable(state), versions


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("dim", [1, 8, 513])
def test_sparse_apply_follows_float64_reference_for_25_steps(kind: str, dim: int) -> None:
    config = CONFIGS[kind]
    rng = np.random.default_rng(dim)
    rows = 30
    value, state, tv, ts, tver = _variables(rows, dim, config, rng)
    ref = NumpyOptimizer(kind, config.learning_rate, epsilon=config.epsilon)
    rv, rs, rver = value.astype(np.float64), state.astype(np.float64), np.zeros(rows, np.int64)
    for _ in range(25):
        # A batch with repeated keys: the lookup gradient sums them before the apply.
        ids = tf.constant(rng.integers(0, rows, size=(16, 3)), tf.int64)
        with tf.GradientTape() as tape:
            out = ops.lookup(tv, ids, "sum")
            loss = tf.reduce_sum(out * rng.normal(size=out.shape).astype(np.float32))
        grad = tape.gradient(loss, tv)
        ops.sparse_apply(tv, ts, tver, grad.indices, grad.values, config)
        ref.apply(rv, rs, rver, grad.indices.numpy(), grad.values.numpy().astype(np.float64))
    assert_close(tv.numpy(), rv)
    assert_close(ts.numpy(), rs)
    np.testing.assert_array_equal(tver.numpy(), rver)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_tf_op_and_ctypes_core_apply_the_same_bits(kind: str) -> None:
    config = CONFIGS[kind]
    rng = np.random.default_rng(7)
    value, state, tv, ts, tver = _variables(20, 16, config, rng)
    versions = np.zeros(20, np.int64)
    for step in range(5):
        slots = rng.permutation(20)[:8].astype(np.int64)
        grads = rng.normal(size=(8, 16)).astype(np.float32)
        lr = 0.01 * (step + 1)  # a schedule: the step passes its own learning rate
        ops.sparse_apply(tv, ts, tver, slots, grads, config, learning_rate=lr)
        _core.sparse_apply(config, value, state, versions, slots, grads, learning_rate=lr)
    np.testing.assert_array_equal(tv.numpy(), value)
    np.testing.assert_array_equal(ts.numpy(), state)
    np.testing.assert_array_equal(tver.numpy(), versions)


def test_sparse_apply_on_no_rows_changes_nothing() -> None:
    config = CONFIGS["adam"]
    value, state, tv, ts, tver = _variables(5, 4, config, np.random.default_rng(0))
    ops.sparse_apply(tv, ts, tver, tf.zeros([0], tf.int64), tf.zeros([0, 4]), config)
    np.testing.assert_array_equal(tv.numpy(), value)
    assert tver.numpy().sum() == 0
