"""Embedding rows trained with a learning-rate schedule (``learning_rate_schedule=``).

The rate of global step k is the schedule's value at k, the step being the dense optimizer's
iteration count in local mode; the distributed modes are checked against this local reference
in tests/distributed/test_training_equivalence.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from reference import assert_close

from herald_tf import InitializerConfig, OptimizerConfig, _core
from herald_tf.keras import HeraldEmbedding, HeraldModel

FIELDS, VOCAB, DIM = 3, 30, 4


def _schedule() -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.ExponentialDecay(0.2, decay_steps=2, decay_rate=0.5)


def _model(config: OptimizerConfig, with_dense: bool = True) -> HeraldModel:
    keys = keras.Input((FIELDS,), dtype="int64", name="keys")
    emb = HeraldEmbedding(DIM, capacity=100, combiner="sum", optimizer=config, seed=11,
                          learning_rate_schedule=_schedule(), name="emb")(keys)
    if with_dense:
        out = keras.layers.Dense(1, name="head", use_bias=False,
                                 kernel_initializer=keras.initializers.Ones())(emb)
    else:
        out = keras.layers.Lambda(lambda e: tf.reduce_sum(e, axis=1, keepdims=True))(emb)
    return HeraldModel(keys, out)


def _keys(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, size=(n, FIELDS)).astype(np.int64)


def _reference_rows(config: OptimizerConfig, keys: np.ndarray, batch: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Rows and versions after training on ``keys`` by hand, step k at the schedule's rate at
    k; the loss is the mean squared output (target 0), the output the pooled row's sum."""
    rows = _core.init_rows(InitializerConfig(), 11, np.arange(VOCAB, dtype=np.int64), DIM)
    state = _core.init_state(config, VOCAB, DIM)
    versions = np.zeros(VOCAB, np.int64)
    w = np.ones((DIM, 1), np.float32)  # the model's dense kernel, held at ones
    for step, start in enumerate(range(0, keys.shape[0], batch)):
        k = keys[start:start + batch]
        out = rows[k].sum(axis=1) @ w  # [B, 1]
        g_out = 2.0 * out / k.shape[0]
        g_rows = np.zeros_like(rows)
        np.add.at(g_rows, k, np.repeat((g_out @ w.T)[:, None, :], FIELDS, axis=1))
        touched = np.unique(k)
        rate = float(np.float32(_schedule()(step)))
        _core.sparse_apply(config, rows, state, versions, touched, g_rows[touched],
                           learning_rate=rate)
    return rows, versions


def _fit(model: HeraldModel, samples: int) -> np.ndarray:
    """Trains ``model`` on ``samples`` keys in batches of 16 (target 0); returns the keys."""
    keys = _keys(samples)
    model.fit(keys, np.zeros((samples, 1), np.float32), batch_size=16, shuffle=False, verbose=0)
    return keys


def _trained_rows(model: HeraldModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    emb = model.get_layer("emb")
    slot_of = emb.key_to_slot.lookup(tf.constant(np.arange(VOCAB, dtype=np.int64))).numpy()
    seen = slot_of >= 0
    return seen, emb.storage.numpy()[slot_of[seen]], emb.versions.numpy()[slot_of[seen]]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_each_step_applies_the_schedules_rate_at_that_step(kind: str) -> None:
    config = OptimizerConfig(kind, learning_rate=123.0, epsilon=1e-4)  # unused: the schedule
    model = _model(config)
    # the dense kernel stays at ones (learning rate 0), so the reference can hold it fixed
    model.compile(keras.optimizers.SGD(0.0), "mse", steps_per_execution=2)
    keys = _fit(model, 96)
    assert int(model.optimizer.iterations.numpy()) == 6
    rows, versions = _reference_rows(config, keys, 16)
    seen, trained, trained_versions = _trained_rows(model)
    assert_close(trained, rows[seen])
    np.testing.assert_array_equal(trained_versions, versions[seen])


def test_a_model_without_dense_weights_still_counts_its_steps() -> None:
    config = OptimizerConfig("sgd")
    model = _model(config, with_dense=False)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    keys = _fit(model, 64)
    assert int(model.optimizer.iterations.numpy()) == 4
    rows, _ = _reference_rows(config, keys, 16)
    seen, trained, _ = _trained_rows(model)
    assert_close(trained, rows[seen])


def test_the_schedule_round_trips_through_get_config_and_saving(tmp_path) -> None:
    layer = HeraldEmbedding(DIM, capacity=10, learning_rate_schedule=_schedule())
    clone = HeraldEmbedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for step in (0, 3, 10):
        assert float(clone.learning_rate_at(step)) == float(layer.learning_rate_at(step))
    model = _model(OptimizerConfig("sgd"))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    _fit(model, 32)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    schedule = loaded.get_layer("emb").learning_rate_schedule
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    assert schedule.get_config() == _schedule().get_config()


def test_without_a_schedule_the_rate_is_the_optimizers() -> None:
    layer = HeraldEmbedding(DIM, capacity=10, optimizer=OptimizerConfig("sgd", learning_rate=0.3))
    assert layer.learning_rate_schedule is None
    assert float(layer.learning_rate_at(7)) == np.float32(0.3)
    assert layer.get_config()["learning_rate_schedule"] is None


@pytest.mark.parametrize("bad", [0.1, lambda step: 0.1, "exponential"])
def test_refuses_a_schedule_that_is_not_a_keras_schedule(bad) -> None:
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        HeraldEmbedding(DIM, capacity=10, learning_rate_schedule=bad)


def test_applying_a_scheduled_tables_gradient_needs_the_step() -> None:
    layer = HeraldEmbedding(DIM, capacity=10, learning_rate_schedule=_schedule())
    layer(tf.constant([[1, 2, 3]], tf.int64), training=True)
    grad = tf.IndexedSlices(tf.ones([1, DIM]), tf.constant([0], tf.int64))
    with pytest.raises(ValueError, match="step"):
        layer.apply_embedding_gradients(grad)
    before = layer.storage.numpy()
    layer.apply_embedding_gradients(grad, step=2)
    np.testing.assert_array_equal(layer.storage.numpy()[0],
                                  before[0] - np.float32(_schedule()(2)) * np.float32(1.0))


@pytest.mark.parametrize("rate", [-0.1, float("nan"), float("inf")])
def test_a_negative_or_non_finite_rate_is_refused_and_changes_nothing(rate: float) -> None:
    layer = HeraldEmbedding(DIM, capacity=10)
    layer(tf.constant([[1, 2, 3]], tf.int64), training=True)
    before = layer.storage.numpy()
    grad = tf.IndexedSlices(tf.ones([1, DIM]), tf.constant([0], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite learning rate >= 0"):
        layer.apply_embedding_gradients(grad, learning_rate=rate)
    np.testing.assert_array_equal(layer.storage.numpy(), before)
    np.testing.assert_array_equal(layer.versions.numpy(), np.zeros(10, np.int64))
