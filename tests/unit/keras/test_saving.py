"""Saving and restoring models with HeraldEmbedding tables.

Local mode: every Keras way of saving or copying weights carries the whole table, its key map
included, so a restored model predicts and trains on exactly as the original. Distributed modes:
the rows live on the PS, so restoring weights is refused with a clear error.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from herald_tf import OptimizerConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.keras import HeraldEmbedding, HeraldModel
from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime

F, B = 3, 16


def _model(dense_optimizer: str = "sgd") -> HeraldModel:
    keys = keras.Input((F,), dtype="int64", name="keys")
    emb = HeraldEmbedding(4, capacity=300, combiner="mean", seed=7, name="emb",
                          optimizer=OptimizerConfig("adam", learning_rate=0.1, epsilon=1e-4))(keys)
    out = keras.layers.Dense(1, activation="sigmoid", name="head",
                             kernel_initializer=keras.initializers.GlorotUniform(seed=1))(emb)
    model = HeraldModel(keys, out)
    optimizer = (keras.optimizers.Adam(0.05) if dense_optimizer == "adam"
                 else keras.optimizers.SGD(0.1))
    model.compile(optimizer, "binary_crossentropy")
    return model


def _data(n: int, low: int, high: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = rng.integers(low, high, size=(n, F)).astype(np.int64)
    return keys, (keys[:, 0] % 3 == 0).astype(np.float32)


def _train(model: HeraldModel, keys: np.ndarray, labels: np.ndarray) -> None:
    model.fit(keys, labels, batch_size=B, shuffle=False, verbose=0)


def _table_state(model: HeraldModel) -> dict[str, np.ndarray]:
    layer = model.get_layer("emb")
    keys, slots = (t.numpy() for t in layer.key_to_slot.export())
    order = np.argsort(keys)
    return {"keys": keys[order], "slots": slots[order],
            **{w.name: w.numpy() for w in layer.weights}}


def _assert_same_tables(got: HeraldModel, want: HeraldModel) -> None:
    got_state, want_state = _table_state(got), _table_state(want)
    assert got_state.keys() == want_state.keys()
    for name, value in want_state.items():
        np.testing.assert_array_equal(got_state[name], value, err_msg=name)


# Old keys (0..40), then unseen ones (40..80) that take new slots after the used ones.
SEEN, UNSEEN = _data(4 * B, 0, 40, seed=0), _data(4 * B, 20, 80, seed=1)
PROBE = np.concatenate([SEEN[0], UNSEEN[0]])


def _assert_predicts_and_trains_on_alike(restored: HeraldModel, original: HeraldModel) -> None:
    """Same predictions now, and after both train on unseen keys, same predictions and tables."""
    np.testing.assert_array_equal(restored.predict(PROBE, verbose=0),
                                  original.predict(PROBE, verbose=0))
    _train(original, *UNSEEN)
    _train(restored, *UNSEEN)
    np.testing.assert_array_equal(restored.predict(PROBE, verbose=0),
                                  original.predict(PROBE, verbose=0))
    _assert_same_tables(restored, original)


def test_load_weights_restores_the_key_map_so_predictions_and_further_training_match(
        tmp_path) -> None:
    original = _model()
    _train(original, *SEEN)
    path = str(tmp_path / "model.weights.h5")
    original.save_weights(path)
    restored = _model()
    restored.load_weights(path)
    _assert_predicts_and_trains_on_alike(restored, original)


def test_load_model_round_trips_predictions_and_training(tmp_path) -> None:
    original = _model(dense_optimizer="adam")
    _train(original, *SEEN)
    path = str(tmp_path / "model.keras")
    original.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, HeraldModel) and restored.compiled
    _assert_predicts_and_trains_on_alike(restored, original)


def test_set_weights_returns_to_an_earlier_snapshot_key_map_included() -> None:
    """What EarlyStopping(restore_best_weights=True) does: later keys are forgotten."""
    model, twin = _model(), _model()
    _train(model, *SEEN)
    snapshot = model.get_weights()
    twin.set_weights(snapshot)
    expected = model.predict(PROBE, verbose=0)
    _train(model, *UNSEEN)
    model.set_weights(snapshot)
    np.testing.assert_array_equal(model.predict(PROBE, verbose=0), expected)
    _train(model, *UNSEEN)
    _train(twin, *UNSEEN)
    _assert_same_tables(model, twin)


def test_weights_assigned_behind_the_layers_back_rebuild_the_key_map_before_a_lookup() -> None:
    """A plain keras.Model.set_weights or a tf-keras .h5 load assigns variables directly."""
    keys = tf.constant(SEEN[0][:B])
    trained, copy = (HeraldEmbedding(4, capacity=300, combiner="none", seed=7) for _ in "ab")
    trained(keys, training=True)
    copy.build()
    for variable, value in zip(copy.weights, trained.get_weights()):
        variable.assign(value)
    np.testing.assert_array_equal(copy(keys, training=False).numpy(),
                                  trained(keys, training=False).numpy())
    assert int(copy.key_to_slot.size()) == int(trained.rows_used.numpy())


def _distributed_model(mode: str) -> HeraldModel:
    runtime = WorkerRuntime(
        RuntimeConfig(mode=mode, num_workers=1, rank=0, batch_size=B, num_fields=F,
                      cache_capacity=0 if mode == "ps" else 40), transport=None, batches=[])
    with runtime.scope():
        return _model()


@pytest.mark.parametrize("mode", ["ps", "allreduce"])
def test_distributed_tables_refuse_load_weights_naming_the_checkpoint_module(tmp_path,
                                                                             mode: str) -> None:
    model = _distributed_model(mode)
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)  # ModelCheckpoint(save_weights_only=True) keeps working
    kernel = model.get_layer("head").kernel
    kernel.assign(kernel + 1.0)
    changed = kernel.numpy()
    with pytest.raises(InvalidArgumentError, match="herald_tf.keras.checkpoint"):
        model.load_weights(path)
    np.testing.assert_array_equal(kernel.numpy(), changed)  # refused before loading anything


@pytest.mark.parametrize("mode", ["ps", "allreduce"])
def test_distributed_tables_refuse_set_weights(mode: str) -> None:
    model = _distributed_model(mode)
    with pytest.raises(InvalidArgumentError, match=f"mode '{mode}'.*worker runtime"):
        model.set_weights(model.get_weights())
    with pytest.raises(InvalidArgumentError, match="herald_tf.keras.checkpoint"):
        model.get_layer("emb").set_weights(model.get_layer("emb").get_weights())
