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
    for step in (4, 8):
        assert (tmp_path / "workers" / f"step-{step:010d}" / "worker-0.npz").exists()


def test_corrupted_checkpoint_is_refused_and_an_older_one_still_loads(tmp_path) -> None:
    runtime, model, callbacks = _run(tmp_path, 4)
    _train(runtime, model, callbacks)
    path = step_directory(str(tmp_path), 8) + "/worker-0.npz"
    with open(path, "r+b") as f:
        f.truncate(100)
    fresh, fresh_model, _ = _run(tmp_path, None)
    fresh_model.optimizer.build(fresh_model.trainable_variables)
    with pytest.raises(CheckpointError, match="corrupted or partial"):
        load_worker(fresh, fresh_model, str(tmp_path), 8)
    load_worker(fresh, fresh_model, str(tmp_path), 4)
    assert fresh.next_step == 4


def test_missing_checkpoint_is_refused_with_its_path(tmp_path) -> None:
    runtime, model, _ = _run(tmp_path, None)
    model.optimizer.build(model.trainable_variables)
    with pytest.raises(CheckpointError, match="worker-0.npz"):
        load_worker(runtime, model, str(tmp_path), 12)
