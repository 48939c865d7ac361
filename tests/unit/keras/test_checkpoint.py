"""Worker checkpoints: written at step boundaries; partial or corrupted files are refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from herald_tf import OptimizerConfig
from herald_tf.keras import HeraldEmbedding, HeraldModel
from herald_tf.keras.checkpoint import (
    CheckpointError,
    HeraldCheckpoint,
    load_worker,
    step_directory,
)
from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime
from herald_tf.ps.store import ShardStore
from herald_tf.transport.factory import make_transport

F, B, STEPS = 3, 8, 8


def _batches():
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        keys = (np.arange(F, dtype=np.int64) << 32) | rng.integers(0, 20, (B, F)).astype(np.int64)
        yield {"categorical": keys, "label": rng.integers(0, 2, B).astype(np.float32)}


def _run(tmp_path, checkpoint_every: int | None):
    transport = make_transport("local", stores=[ShardStore(0, 1, 1)],
                               checkpoint_dir=str(tmp_path))
    runtime = WorkerRuntime(RuntimeConfig(mode="herald", num_workers=1, rank=0, batch_size=B,
                                          num_fields=F, cache_capacity=30), transport,
                            _batches())
    with runtime.scope():
        keys = keras.Input((F,), dtype="int64", name="categorical")
        emb = HeraldEmbedding(4, capacity=100, combiner="sum",
                              optimizer=OptimizerConfig("adam", epsilon=1e-4), name="emb")(keys)
        model = HeraldModel({"categorical": keys}, keras.layers.Dense(1, name="head")(emb))
    model.compile(keras.optimizers.Adam(0.01), "mse", steps_per_execution=2)
    callbacks = ([HeraldCheckpoint(runtime, str(tmp_path), checkpoint_every, chief=True)]
                 if checkpoint_every else [])
    return runtime, model, callbacks


def _train(runtime, model, callbacks) -> None:
    data = runtime.dataset({"categorical": tf.TensorSpec([F], tf.int64)})
    model.fit(data, epochs=1, verbose=0, callbacks=callbacks)


def test_checkpoints_are_written_at_step_boundaries(tmp_path) -> None:
    runtime, model, callbacks = _run(tmp_path, 4)
    _train(runtime, model, callbacks)
    written = sorted(p.name for p in (tmp_path / "workers").iterdir())
    assert written == [f"step-{step:010d}" for step in (4, 8)]
    for step in (4, 8):
        assert (tmp_path / "workers" / f"step-{step:010d}" / "worker-0.npz").exists()


def test_corrupted_checkpoint_is_refused_and_an_older_one_still_loads(tmp_path) -> None:
    runtime, model, callbacks = _run(tmp_path, 4)
    at_step_4 = {}

    def record(batch: int, logs=None) -> None:  # after the checkpoint callback's own hook
        if batch == 3:  # steps_per_execution=2: the execution that ends with step 4
            at_step_4["head"] = [w.copy() for w in model.get_layer("head").get_weights()]
            at_step_4["storage"] = model.get_layer("emb").storage.numpy().copy()

    _train(runtime, model, [*callbacks, keras.callbacks.LambdaCallback(on_train_batch_end=record)])
    path = step_directory(str(tmp_path), 8) + "/worker-0.npz"
    with open(path, "r+b") as f:
        f.truncate(100)
    fresh, fresh_model, _ = _run(tmp_path, None)
    fresh_model.optimizer.build(fresh_model.trainable_variables)
    with pytest.raises(CheckpointError, match="corrupted or partial"):
        load_worker(fresh, fresh_model, str(tmp_path), 8)
    load_worker(fresh, fresh_model, str(tmp_path), 4)
    assert fresh.next_step == 4
    for got, want in zip(fresh_model.get_layer("head").get_weights(), at_step_4["head"],
                         strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fresh_model.get_layer("emb").storage.numpy(),
                                  at_step_4["storage"])


def test_missing_checkpoint_is_refused_with_its_path(tmp_path) -> None:
    runtime, model, _ = _run(tmp_path, None)
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(CheckpointError, match="worker-0.npz"):
        load_worker(runtime, model, str(tmp_path), 12)


LEGACY_SCRIPT = r"""
import sys
import numpy as np
import tensorflow as tf
import tf_keras
from herald_tf import OptimizerConfig
from herald_tf.keras import HeraldEmbedding, HeraldModel
from herald_tf.keras.checkpoint import HeraldCheckpoint, load_worker
from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime
from herald_tf.ps.store import ShardStore
from herald_tf.transport.factory import make_transport

assert tf.keras is tf_keras or tf.keras.__name__.startswith("tf_keras"), tf.keras
F, B, STEPS = 3, 8, 8
directory = sys.argv[1]

def batches():
    rng = np.random.default_rng(0)
    for _ in range(STEPS):
        keys = (np.arange(F, dtype=np.int64) << 32) | rng.integers(0, 20, (B, F)).astype(np.int64)
        yield {"categorical": keys, "label": rng.integers(0, 2, B).astype(np.float32)}

def build():
    transport = make_transport("local", stores=[ShardStore(0, 1, 1)], checkpoint_dir=directory)
    runtime = WorkerRuntime(RuntimeConfig(mode="herald", num_workers=1, rank=0, batch_size=B,
                                          num_fields=F, cache_capacity=30), transport, batches())
    with runtime.scope():
        keys = tf.keras.Input((F,), dtype="int64", name="categorical")
        emb = HeraldEmbedding(4, capacity=100, combiner="sum",
                              optimizer=OptimizerConfig("adam", epsilon=1e-4), name="emb")(keys)
        model = HeraldModel({"categorical": keys}, tf.keras.layers.Dense(1, name="head")(emb))
    model.compile(tf.keras.optimizers.Adam(0.01), "mse")
    return runtime, model

runtime, model = build()
data = runtime.dataset({"categorical": tf.TensorSpec([F], tf.int64)})
model.fit(data, epochs=1, steps_per_epoch=STEPS, verbose=0,
          callbacks=[HeraldCheckpoint(runtime, directory, 4, chief=True)])
fresh, fresh_model = build()
fresh_model.optimizer.build(fresh_model.trainable_variables)
load_worker(fresh, fresh_model, directory, 8)
assert fresh.next_step == 8, fresh.next_step
head = model.get_layer("head").get_weights()
for a, b in zip(head, fresh_model.get_layer("head").get_weights()):
    np.testing.assert_array_equal(a, b)
print("ok")
"""


def test_checkpoint_callback_writes_and_restores_under_tf_keras(tmp_path) -> None:
    """With TF_USE_LEGACY_KERAS=1, HeraldCheckpoint is a tf-keras callback that checkpoints
    during fit, and load_worker restores the dense weights and the data position."""
    import os
    import subprocess
    import sys

    pytest.importorskip("tf_keras")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", LEGACY_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
    assert (tmp_path / "workers" / f"step-{8:010d}" / "worker-0.npz").exists()
