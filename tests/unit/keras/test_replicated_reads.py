"""allreduce mode: evaluate/predict read a row only once its step has written it.

tf.data draws batches ahead of training, and drawing a batch assigns slots to its new keys; the
rows are written when their step begins. Until then a key reads its deterministic initial value
(README: "an unseen key reads its deterministic initial value"), never the unwritten slot.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from herald_tf import InitializerConfig, OptimizerConfig, _core
from herald_tf.keras import HeraldEmbedding, HeraldModel
from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime

F, B, DIM, SEED = 3, 8, 4, 5


def _runtime_and_model(batches: list[dict[str, np.ndarray]]) -> tuple[WorkerRuntime, HeraldModel]:
    runtime = WorkerRuntime(RuntimeConfig(mode="allreduce", num_workers=1, rank=0, batch_size=B,
                                          num_fields=F, cache_capacity=200), None, batches)
    with runtime.scope():
        keys = keras.Input((F,), dtype="int64", name="categorical")
        emb = HeraldEmbedding(DIM, capacity=200, combiner="sum", seed=SEED, name="emb",
                              optimizer=OptimizerConfig("sgd", learning_rate=0.5))(keys)
        model = HeraldModel({"categorical": keys}, keras.layers.Dense(1, name="head")(emb))
        model.compile(keras.optimizers.SGD(0.1), "mse")
    return runtime, model


def _initial(keys: np.ndarray) -> np.ndarray:
    return _core.init_rows(InitializerConfig(), SEED, keys, DIM)


def test_keys_of_batches_drawn_ahead_of_training_read_their_initial_values() -> None:
    # Disjoint key ranges, so that step 1's keys are new when its batch is drawn.
    rng = np.random.default_rng(0)
    keys = [rng.integers(100 * s, 100 * s + 50, (B, F)).astype(np.int64) for s in range(3)]
    batches = [{"categorical": k, "label": np.ones(B, np.float32)} for k in keys]
    runtime, model = _runtime_and_model(batches)
    drawn = iter(runtime.dataset({"categorical": tf.TensorSpec([F], tf.int64)}))
    step0, _ = next(drawn), next(drawn)  # both drawn: slots assigned, nothing written

    for batch_keys in keys[:2]:
        np.testing.assert_array_equal(runtime.read_rows("emb", batch_keys.ravel()),
                                      _initial(batch_keys.ravel()))

    model.train_on_batch(*step0)  # writes and trains step 0's rows only
    trained = runtime.read_rows("emb", np.unique(keys[0]))
    assert not np.any(np.all(trained == _initial(np.unique(keys[0])), axis=1))
    np.testing.assert_array_equal(runtime.read_rows("emb", keys[1].ravel()),
                                  _initial(keys[1].ravel()))
    pooled = _initial(keys[1].ravel()).reshape(B, F, DIM).sum(axis=1)
    np.testing.assert_allclose(model.predict({"categorical": keys[1]}, verbose=0),
                               model.get_layer("head")(tf.constant(pooled)).numpy(), rtol=1e-6)
