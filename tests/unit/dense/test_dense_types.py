"""DenseSync's shared behaviour: backend names, gradient scaling, the train-step hook."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from herald_tf import _core
from herald_tf.dense import DenseSync, DenseSyncKind, dense_variables
from herald_tf.keras import HeraldEmbedding, HeraldModel


class FakeSync(DenseSync):
    """Two pretend workers: dense "allreduce" doubles, embedding gradients scale by 1/2."""

    kind = DenseSyncKind.HOROVOD

    def __init__(self, reduces: bool) -> None:
        self.reduces = reduces
        self.allreduced: list[Any] = []

    rank = property(lambda self: 0)
    num_workers = property(lambda self: 2)
    embedding_gradient_scale = property(lambda self: 0.5)
    reduces_dense_in_train_step = property(lambda self: self.reduces)

    def allreduce_dense(self, grads: Sequence[Any]) -> list[Any]:
        self.allreduced = list(grads)
        return [None if g is None else g * 2.0 for g in grads]

    def allreduce_sum(self, tensor: tf.Tensor, name: str | None = None) -> tf.Tensor:
        return tensor * 2.0

    def broadcast_variables(self, variables: Sequence[Any], root_rank: int = 0) -> None:
        for v in variables:
            v.assign(tf.zeros_like(v))

    def barrier(self) -> None:
        return None


@pytest.mark.parametrize("name,kind", [
    ("none", DenseSyncKind.NONE), ("Horovod", DenseSyncKind.HOROVOD),
    ("tf.distribute", DenseSyncKind.TF_DISTRIBUTE), ("tf-distribute", DenseSyncKind.TF_DISTRIBUTE),
    (DenseSyncKind.HOROVOD, DenseSyncKind.HOROVOD),
])
def test_kind_parses_backend_names(name: Any, kind: DenseSyncKind) -> None:
    assert DenseSyncKind.parse(name) is kind


def test_kind_refuses_unknown_names_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="none, horovod, tf_distribute. Received: name='mpi'"):
        DenseSyncKind.parse("mpi")


def test_scale_embedding_gradient_scales_indexed_slices_tensors_and_keeps_none() -> None:
    sync = FakeSync(reduces=False)
    grad = tf.IndexedSlices(tf.constant([[2.0, 4.0]]), tf.constant([3], tf.int64),
                            tf.constant([5, 2], tf.int64))
    scaled = sync.scale_embedding_gradient(grad)
    assert isinstance(scaled, tf.IndexedSlices)
    np.testing.assert_array_equal(scaled.values.numpy(), [[1.0, 2.0]])
    np.testing.assert_array_equal(scaled.indices.numpy(), [3])
    np.testing.assert_array_equal(sync.scale_embedding_gradient(tf.constant([4.0])).numpy(), [2.0])
    assert sync.scale_embedding_gradient(None) is None


@pytest.mark.parametrize("reduces", [False, True])
def test_sync_gradients_reduces_dense_only_when_asked_and_always_scales_embeddings(
        reduces: bool) -> None:
    sync = FakeSync(reduces=reduces)
    emb = tf.IndexedSlices(tf.constant([[8.0]]), tf.constant([0], tf.int64))
    out = sync.sync_gradients([tf.constant(1.0), None, emb], num_dense=2)
    assert float(out[0]) == (2.0 if reduces else 1.0)
    assert out[1] is None
    np.testing.assert_array_equal(out[2].values.numpy(), [[4.0]])
    assert len(sync.allreduced) == (2 if reduces else 0)


def _model() -> HeraldModel:
    keys = keras.Input((2,), dtype="int64")
    emb = HeraldEmbedding(3, capacity=16, name="emb")(keys)
    out = keras.layers.Dense(1, name="head")(emb)
    return HeraldModel(keys, out)


def test_dense_variables_leave_out_herald_embedding_storage() -> None:
    model = _model()
    names = [v.path for v in dense_variables(model)]
    assert names and all("emb" not in n for n in names)
    assert len(names) == len(model.weights) - len(model.get_layer("emb").weights)


def test_broadcast_model_builds_the_optimizer_and_includes_its_state() -> None:
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    sync = FakeSync(reduces=True)
    sync.broadcast_model(model)
    assert model.optimizer.built
    assert all(not np.any(v.numpy()) for v in model.trainable_weights)
    storage = model.get_layer("emb").storage
    assert storage.shape == (16, 3)  # built, not broadcast (FakeSync zeroes what it gets)


def test_train_step_averages_dense_and_scales_embedding_gradients() -> None:
    """With FakeSync (dense x2, embedding x0.5), one SGD step moves the dense weights by twice
    and the rows by half the plain step."""
    keys = np.array([[1, 2], [2, 3]], np.int64)
    labels = np.array([[1.0], [0.0]], np.float32)
    results = []
    for sync in (None, FakeSync(reduces=True)):
        keras.utils.set_random_seed(3)
        model = _model()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", dense_sync=sync)
        before = [v.numpy() for v in model.trainable_weights]
        model.fit(keys, labels, batch_size=2, epochs=1, shuffle=False, verbose=0)
        layer = model.get_layer("emb")
        row_keys, slots = (t.numpy() for t in layer.key_to_slot.export())
        order = np.argsort(row_keys)
        rows = layer.storage.numpy()[slots[order]]
        initial = _core.init_rows(layer.table.initializer, layer.table.seed, row_keys[order], 3)
        dense_delta = [v.numpy() - b for v, b in zip(model.trainable_weights, before, strict=True)]
        results.append((dense_delta, rows - initial))
    (plain_dense, plain_rows), (synced_dense, synced_rows) = results
    for plain, synced in zip(plain_dense, synced_dense, strict=True):
        np.testing.assert_allclose(synced, 2.0 * plain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(synced_rows, 0.5 * plain_rows, rtol=1e-5, atol=1e-7)


def test_broadcast_model_refuses_an_unbuilt_model() -> None:
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="Expected a built model"):
        FakeSync(reduces=True).broadcast_model(unbuilt)
