"""The ``none`` backend: every collective is the identity; training is unchanged."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from herald_tf.dense import NoneDenseSync
from herald_tf.keras import HeraldEmbedding, HeraldModel


def test_collectives_are_identities() -> None:
    sync = NoneDenseSync()
    grads = [tf.constant(1.0), None]
    assert sync.allreduce_dense(grads) == grads
    t = tf.constant([1.0, 2.0])
    assert sync.allreduce_sum(t) is t
    v = tf.Variable([3.0])
    sync.broadcast_variables([v])
    sync.barrier()
    assert float(v.numpy()[0]) == 3.0
    assert sync.callbacks() == []
    with pytest.raises(ValueError, match="root_rank=1"):
        sync.broadcast_variables([v], root_rank=1)


def _train(sync: NoneDenseSync | None) -> list[np.ndarray]:
    keras.utils.set_random_seed(5)
    keys = keras.Input((2,), dtype="int64")
    emb = HeraldEmbedding(3, capacity=16, name="emb")(keys)
    model = HeraldModel(keys, keras.layers.Dense(1)(emb))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", dense_sync=sync)
    x = np.array([[1, 2], [2, 3], [4, 1], [5, 5]], np.int64)
    y = np.array([[1.0], [0.0], [0.5], [2.0]], np.float32)
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
    return [w.numpy() for w in model.weights]


def test_training_with_none_is_bitwise_training_without_dense_sync() -> None:
    for a, b in zip(_train(None), _train(NoneDenseSync()), strict=True):
        np.testing.assert_array_equal(a, b)
