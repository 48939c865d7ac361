"""Herald>Lookup and its gradient against the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from reference import assert_close, lookup_grad, pooled_lookup

from herald_tf import _core, ops
from herald_tf.errors import InvalidArgumentError

COMBINERS = ["sum", "mean", "sqrtn"]


def _storage(rng: np.random.Generator, slots: int, dim: int) -> tf.Variable:
    return tf.Variable(rng.normal(size=(slots, dim)).astype(np.float32))


def _ragged(rng: np.random.Generator, batch: int, slots: int, max_len: int,
            skew: bool = False) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(0, max_len + 1, size=batch)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    if skew:
        ids = np.minimum(rng.zipf(1.3, size=splits[-1]) - 1, slots - 1)
    else:
        ids = rng.integers(0, slots, size=splits[-1])
    return ids.astype(np.int64), splits


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("batch,fields,dim", [(1, 1, 1), (7, 3, 4), (64, 26, 16), (5, 2, 513)])
def test_dense_lookup_pools_each_sample(combiner: str, batch: int, fields: int, dim: int) -> None:
    rng = np.random.default_rng(batch * 1000 + dim)
    storage = _storage(rng, 50, dim)
    ids = rng.integers(0, 50, size=(batch, fields)).astype(np.int64)
    splits = np.arange(0, batch * fields + 1, fields)
    out = ops.lookup(storage, tf.constant(ids), combiner)
    assert out.shape == (batch, dim)
    assert_close(out.numpy(), pooled_lookup(storage.numpy(), ids.ravel(), splits, combiner), 1e-6)


@pytest.mark.parametrize("combiner", COMBINERS)
def test_ragged_lookup_handles_empty_bags(combiner: str) -> None:
    rng = np.random.default_rng(1)
    storage = _storage(rng, 30, 8)
    ids, splits = _ragged(rng, 40, 30, 5)
    ragged = tf.RaggedTensor.from_row_splits(ids, splits)
    out = ops.lookup(storage, ragged, combiner).numpy()
    assert_close(out, pooled_lookup(storage.numpy(), ids, splits, combiner), 1e-6)
    empty = np.diff(splits) == 0
    assert empty.any() and np.all(out[empty] == 0)


def test_lookup_without_pooling_returns_one_row_per_key() -> None:
    rng = np.random.default_rng(2)
    storage = _storage(rng, 20, 3)
    ids = rng.integers(0, 20, size=(6, 4)).astype(np.int64)
    out = ops.lookup(storage, tf.constant(ids), "none").numpy()
    assert out.shape == (6, 4, 3)
    np.testing.assert_array_equal(out, storage.numpy()[ids])


def test_lookup_of_empty_batch_is_empty() -> None:
    storage = _storage(np.random.default_rng(3), 10, 4)
    out = ops.lookup(storage, tf.zeros([0, 26], tf.int64), "sum")
    assert out.shape == (0, 4)


@pytest.mark.parametrize("combiner", COMBINERS + ["none"])
@pytest.mark.parametrize("dim", [1, 16, 513])
def test_lookup_gradient_is_deduplicated_and_summed(combiner: str, dim: int) -> None:
    rng = np.random.default_rng(dim)
    storage = _storage(rng, 40, dim)
    ids, splits = _ragged(rng, 32, 40, 6, skew=True)
    keys = (tf.RaggedTensor.from_row_splits(ids, splits) if combiner != "none"
            else tf.constant(ids))
    with tf.GradientTape() as tape:
        out = ops.lookup(storage, keys, combiner)
        weights = tf.constant(rng.normal(size=out.shape).astype(np.float32))
        loss = tf.reduce_sum(out * weights)
    grad = tape.gradient(loss, storage)
    assert isinstance(grad, tf.IndexedSlices)
    unique, summed = lookup_grad(weights.numpy().reshape(-1, dim), ids, splits, combiner)
    np.testing.assert_array_equal(grad.indices.numpy(), unique)
    assert_close(grad.values.numpy(), summed)
    assert len(set(grad.indices.numpy().tolist())) == len(unique)  # never a repeated slot


def test_lookup_gradient_of_empty_batch_is_empty() -> None:
    storage = _storage(np.random.default_rng(4), 10, 4)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ops.lookup(storage, tf.zeros([0, 3], tf.int64), "sum"))
    grad = tape.gradient(loss, storage)
    assert grad.indices.shape == (0,) and grad.values.shape == (0, 4)


def test_lookup_works_inside_tf_function() -> None:
    rng = np.random.default_rng(5)
    storage = _storage(rng, 20, 4)
    ids = tf.constant(rng.integers(0, 20, size=(8, 3)), tf.int64)

    def step(keys: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            pooled = ops.lookup(storage, keys, "mean")
            loss = tf.reduce_sum(pooled * pooled)
        grad = tape.gradient(loss, storage)
        return pooled, grad.indices, grad.values

    traced = tf.function(step)(ids)
    eager = step(ids)
    for got, want in zip(traced, eager, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert_close(eager[0].numpy(), storage.numpy()[ids.numpy()].mean(axis=1))


def test_unique_slots_keeps_first_appearance_order() -> None:
    slots = np.array([7, 3, 7, 0, 3, 9], np.int64)
    unique, inverse = _core.unique_slots(slots, 10)
    assert unique.tolist() == [7, 3, 0, 9]
    np.testing.assert_array_equal(unique[inverse], slots)


def test_sum_rows_by_index_adds_in_row_order_from_zero_bit_for_bit() -> None:
    # the PS sums the ranks' gradients of a key with it, in rank order: ((0 + g0) + g1) + g2,
    # one array per rank
    rng = np.random.default_rng(7)
    rows = (rng.normal(size=(3000, 16)) * 10.0 ** rng.integers(-8, 8, size=(3000, 1))).astype(
        np.float32)
    rows[::97] = -0.0
    inverse = rng.integers(0, 400, 3000).astype(np.int64)
    expected = np.zeros((400, 16), np.float32)
    for i in range(3000):
        expected[inverse[i]] = expected[inverse[i]] + rows[i]
    got = _core.sum_rows_by_index([rows[:1000], rows[1000:1001], rows[1001:]], inverse, 400)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_sum_rows_by_index_equals_the_threaded_lookup_gradient_bit_for_bit() -> None:
    # one thread adds rows in order; the op's thread pool sums each output row over its group
    rng = np.random.default_rng(8)
    ids = np.minimum(rng.zipf(1.2, size=20_000) - 1, 999).astype(np.int64)
    grads = rng.normal(size=(20_000, 32)).astype(np.float32)
    unique, summed = ops.lookup_grad(tf.constant(grads), tf.constant(ids), "none")
    mine_unique, inverse = _core.unique_slots(ids, 1000)
    np.testing.assert_array_equal(unique.numpy(), mine_unique)
    np.testing.assert_array_equal(
        summed.numpy().view(np.uint32),
        _core.sum_rows_by_index([grads], inverse, mine_unique.shape[0]).view(np.uint32))


def test_sum_rows_by_index_refuses_an_index_out_of_range_or_a_count_mismatch() -> None:
    rows = np.ones((3, 2), np.float32)
    with pytest.raises(InvalidArgumentError, match="every index in"):
        _core.sum_rows_by_index([rows], np.array([0, 1, 5], np.int64), 2)
    with pytest.raises(InvalidArgumentError, match="one index per row"):
        _core.sum_rows_by_index([rows], np.array([0, 1], np.int64), 2)
