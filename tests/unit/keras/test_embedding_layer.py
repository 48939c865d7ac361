"""HeraldEmbedding in local mode: the Keras layer contract, model.fit, export, exact training."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import assert_close

from herald_tf import InitializerConfig, OptimizerConfig, _core
from herald_tf.keras import HeraldEmbedding, HeraldModel

FIELDS = 3


def _model(optimizer: OptimizerConfig, combiner: str = "sum", capacity: int = 1000) -> HeraldModel:
    keys = keras.Input((FIELDS,), dtype="int64", name="keys")
    dense = keras.Input((2,), name="dense")
    emb = HeraldEmbedding(4, capacity=capacity, combiner=combiner, optimizer=optimizer, seed=11,
                          name="emb")(keys)
    hidden = keras.layers.Concatenate()([emb, dense])
    out = keras.layers.Dense(1, activation="sigmoid", name="head",
                             kernel_initializer=keras.initializers.GlorotUniform(seed=1))(hidden)
    return HeraldModel([keys, dense], out)


def _data(n: int = 256, vocab: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, vocab, size=(n, FIELDS)).astype(np.int64)
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    labels = ((keys[:, 0] % 3 == 0) | (dense[:, 0] > 1.0)).astype(np.float32)
    return keys, dense, labels


def test_get_config_round_trips() -> None:
    layer = HeraldEmbedding(8, capacity=100, combiner="mean", seed=5,
                            optimizer=OptimizerConfig("adam", learning_rate=0.02),
                            initializer=InitializerConfig("normal", 0.0, 0.1), name="t")
    clone = HeraldEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.table == layer.table


def test_build_is_idempotent_and_weights_are_not_keras_trainable() -> None:
    layer = HeraldEmbedding(4, capacity=10)
    layer.build((None, 2))
    storage = layer.storage
    layer.build((None, 2))
    assert layer.storage is storage
    assert layer.trainable_weights == []


@pytest.mark.parametrize("combiner,shape", [("sum", (5, 4)), ("none", (5, 3, 4))])
def test_compute_output_shape_matches_call(combiner: str, shape: tuple[int, ...]) -> None:
    layer = HeraldEmbedding(4, capacity=50, combiner=combiner)
    out = layer(tf.constant(np.arange(15).reshape(5, 3), tf.int64))
    assert tuple(out.shape) == shape == layer.compute_output_shape((5, 3))


def test_inference_creates_no_rows_and_reads_initial_values() -> None:
    layer = HeraldEmbedding(4, capacity=50, combiner="none", seed=3)
    keys = np.array([[7, 8]], np.int64)
    out = layer(tf.constant(keys), training=False).numpy()
    assert int(layer.rows_used.numpy()) == 0
    np.testing.assert_array_equal(out[0], _core.init_rows(InitializerConfig(), 3, keys[0], 4))


def test_training_reads_initial_values_then_creates_rows_once() -> None:
    layer = HeraldEmbedding(4, capacity=50, combiner="none", seed=3)
    keys = tf.constant([[7, 8, 7]], tf.int64)
    out = layer(keys, training=True).numpy()
    assert int(layer.rows_used.numpy()) == 2
    np.testing.assert_array_equal(out[0, 0], out[0, 2])
    np.testing.assert_array_equal(out, layer(keys, training=False).numpy())


def test_full_table_raises_a_clear_error() -> None:
    layer = HeraldEmbedding(4, capacity=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="capacity"):
        layer(tf.constant([[1, 2, 3]], tf.int64), training=True)


def test_refuses_string_keys() -> None:
    with pytest.raises(TypeError, match="int64 keys"):
        HeraldEmbedding(4, capacity=2)(tf.constant([["a"]]))


def test_model_fit_evaluate_predict_with_steps_per_execution() -> None:
    model = _model(OptimizerConfig("adagrad", learning_rate=0.2))
    model.compile(keras.optimizers.Adam(0.05), "binary_crossentropy", metrics=["auc"],
                  steps_per_execution=3)
    keys, dense, labels = _data(vocab=30)
    history = model.fit([keys, dense], labels, batch_size=32, epochs=8, verbose=0,
                        callbacks=[keras.callbacks.EarlyStopping("loss", patience=5)])
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, auc = model.evaluate([keys, dense], labels, verbose=0)
    assert np.isfinite(loss) and auc > 0.7
    assert model.predict([keys[:5], dense[:5]], verbose=0).shape == (5, 1)


@pytest.mark.parametrize("kind", ["sgd", "adagrad", "adam"])
def test_local_training_equals_a_keras_embedding_with_the_same_math(kind: str) -> None:
    """One HeraldEmbedding step == the same model written with stock ops, trained by hand."""
    config = OptimizerConfig(kind, learning_rate=0.1, epsilon=1e-4)
    model = _model(config, combiner="mean")
    model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
    keys, dense, labels = _data(64, vocab=30)
    head = model.get_layer("head")
    rows = _core.init_rows(InitializerConfig(), 11, np.arange(30, dtype=np.int64), 4)
    state = _core.init_state(config, 30, 4)
    versions = np.zeros(30, np.int64)
    kernel, bias = [w.numpy() for w in head.weights]
    for start in range(0, 64, 16):
        batch = slice(start, start + 16)
        model.train_on_batch([keys[batch], dense[batch]], labels[batch])
        table = tf.Variable(rows)
        k, b = tf.Variable(kernel), tf.Variable(bias)
        with tf.GradientTape() as tape:
            emb = tf.reduce_mean(tf.gather(table, keys[batch]), axis=1)
            logits = tf.concat([emb, dense[batch]], 1) @ k + b
            loss = tf.reduce_mean(keras.losses.binary_crossentropy(
                labels[batch][:, None], tf.sigmoid(logits)))
        g_table, g_k, g_b = tape.gradient(loss, [table, k, b])
        g = tf.convert_to_tensor(g_table).numpy()
        touched = np.unique(keys[batch])
        _core.sparse_apply(config, rows, state, versions, touched, g[touched])
        kernel, bias = kernel - 0.1 * g_k.numpy(), bias - 0.1 * g_b.numpy()
    emb = model.get_layer("emb")
    slot_of = emb.key_to_slot.lookup(tf.constant(np.arange(30, dtype=np.int64))).numpy()
    seen = slot_of >= 0
    assert_close(emb.storage.numpy()[slot_of[seen]], rows[seen])
    assert_close(head.weights[0].numpy(), kernel)
    np.testing.assert_array_equal(emb.versions.numpy()[slot_of[seen]], versions[seen])


def test_export_reloads_in_a_fresh_process(tmp_path) -> None:
    model = _model(OptimizerConfig("sgd", learning_rate=0.1))
    model.compile("sgd", "binary_crossentropy")
    keys, dense, labels = _data(64)
    model.fit([keys, dense], labels, batch_size=16, epochs=1, verbose=0)
    new_keys = keys[:8].copy()
    new_keys[:, 1] += 10_000  # unseen keys: read their initial value
    expected = model.predict([new_keys, dense[:8]], verbose=0)
    path = str(tmp_path / "saved")
    model.export(path)
    np.save(tmp_path / "keys.npy", new_keys)
    np.save(tmp_path / "dense.npy", dense[:8])
    code = (
        "import numpy as np, tensorflow as tf, sys\n"
        "from herald_tf import ops\n"
        "ops.load_ops()\n"
        f"m = tf.saved_model.load({path!r})\n"
        f"k = np.load({str(tmp_path / 'keys.npy')!r})\n"
        f"d = np.load({str(tmp_path / 'dense.npy')!r})\n"
        "out = m.serve([tf.constant(k), tf.constant(d)]).numpy()\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, out)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-6, atol=1e-7)
