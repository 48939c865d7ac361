"""model.fit through the worker runtime: callbacks, evaluate and predict read the latest rows."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from herald_tf import OptimizerConfig
from herald_tf.keras import HeraldEmbedding, HeraldModel
from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime
from herald_tf.ps.store import ShardStore
from herald_tf.transport.factory import make_transport

F, B, STEPS = 3, 16, 12


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    keys = (np.arange(F, dtype=np.int64) << 32) | rng.integers(0, 25, (n, F)).astype(np.int64)
    return keys, (keys[:, 0] % 3 == 0).astype(np.float32)


def _model() -> HeraldModel:
    keys = keras.Input((F,), dtype="int64", name="categorical")
    emb = HeraldEmbedding(4, capacity=200, combiner="sum", seed=2, name="emb",
                          optimizer=OptimizerConfig("adagrad", learning_rate=0.2))(keys)
    out = keras.layers.Dense(1, activation="sigmoid", name="head",
                             kernel_initializer=keras.initializers.GlorotUniform(3))(emb)
    model = HeraldModel({"categorical": keys}, out)
    model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy", steps_per_execution=2)
    return model


def _runtime(mode: str = "ps") -> WorkerRuntime:
    """One worker over 2 local shards, training on ``_data(STEPS * B, 0)`` in batches of B."""
    keys, labels = _data(STEPS * B, 0)
    transport = make_transport("local", stores=[ShardStore(0, 2, 1), ShardStore(1, 2, 1)])
    batches = ({"categorical": keys[s * B:(s + 1) * B], "label": labels[s * B:(s + 1) * B]}
               for s in range(STEPS))
    return WorkerRuntime(RuntimeConfig(mode=mode, num_workers=1, rank=0, batch_size=B,
                                       num_fields=F, cache_capacity=0 if mode == "ps" else 30),
                         transport, batches)


@pytest.mark.parametrize("mode", ["ps", "herald"])
def test_fit_with_callbacks_then_evaluate_and_predict_match_the_reference(tmp_path,
                                                                          mode: str) -> None:
    keys, labels = _data(STEPS * B, 0)
    reference = _model()
    reference.fit({"categorical": keys}, labels, batch_size=B, shuffle=False, verbose=0)

    runtime = _runtime(mode)
    transport = runtime.transport
    with runtime.scope():
        model = _model()
    checkpoint = str(tmp_path / "dense.weights.h5")
    history = model.fit(
        runtime.dataset({"categorical": tf.TensorSpec([F], tf.int64)}), verbose=0,
        callbacks=[keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True),
                   keras.callbacks.EarlyStopping("loss", patience=3)])
    assert len(history.history["loss"]) == 1 and (tmp_path / "dense.weights.h5").exists()

    held_out, held_labels = _data(64, 1)
    held_out[:8, 1] += 1000  # unseen keys read their initial value and create nothing
    got = model.predict({"categorical": held_out}, verbose=0)
    want = reference.predict({"categorical": held_out}, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model.evaluate({"categorical": held_out}, held_labels, verbose=0),
                               reference.evaluate({"categorical": held_out}, held_labels,
                                                  verbose=0), rtol=1e-6)
    assert transport.stats()[0]["tables"]["emb"]["rows"] + transport.stats()[1]["tables"][
        "emb"]["rows"] == np.unique(keys).size


def test_a_dataset_given_its_steps_ends_after_them_without_asking_for_more() -> None:
    runtime = _runtime()
    with runtime.scope():
        _model()
    taken = list(runtime.dataset({"categorical": tf.TensorSpec([F], tf.int64)}, steps=5))
    assert [int(x["herald_step"][0]) for x, _ in taken] == [0, 1, 2, 3, 4]
    # the sixth batch was never drawn from the runtime (take ends before its generator)
    assert runtime.next_step == 0 and 5 not in runtime._plans


@pytest.mark.parametrize("steps", [0, -1, 2.0])
def test_a_dataset_refuses_steps_that_are_not_a_positive_int(steps) -> None:
    with pytest.raises(ValueError, match="Expected steps to be a positive int"):
        _runtime().dataset({"categorical": tf.TensorSpec([F], tf.int64)}, steps=steps)


def test_a_dataset_is_not_autotuned() -> None:
    """Deleting an autotuned iterator can wait out the autotuner's period (up to 60 s) when fit
    returns (README "Known issues"); the runtime's pipeline has nothing to tune."""
    runtime = _runtime()
    with runtime.scope():
        _model()
    dataset = runtime.dataset({"categorical": tf.TensorSpec([F], tf.int64)}, steps=5)
    assert dataset.options().autotune.enabled is False


def test_the_device_datasets_tf_distribute_builds_are_not_autotuned(monkeypatch) -> None:
    """The same wait hides in the per-device pipeline tf.distribute builds over the dataset,
    which TensorFlow gives default options."""
    from tensorflow.python.data.ops import multi_device_iterator_ops as devices

    # whatever the runtime installs is undone after the test
    monkeypatch.setattr(devices, "_create_device_dataset", devices._create_device_dataset)
    runtime = _runtime()
    with runtime.scope():
        _model()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    distributed = runtime.distributed_dataset(
        strategy, {"categorical": tf.TensorSpec([F], tf.int64)}, steps=2)
    installed = devices._create_device_dataset
    autotuned = []

    def record(*args, **kwargs):
        made = installed(*args, **kwargs)
        autotuned.append(made.options().autotune.enabled)
        return made

    monkeypatch.setattr(devices, "_create_device_dataset", record)
    steps = [int(x["herald_step"][0]) for x, _ in distributed]
    assert steps == [0, 1] and autotuned == [False]
