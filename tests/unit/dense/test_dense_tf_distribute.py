"""The ``tf_distribute`` backend in one process (MirroredStrategy), and TF_CONFIG ranks."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from herald_tf.dense.tf_distribute import (
    TfDistributeDenseSync,
    _cluster_position,
    per_worker_variables,
)
from herald_tf.keras import HeraldEmbedding, HeraldModel


@pytest.fixture(scope="module")
def sync() -> TfDistributeDenseSync:
    return TfDistributeDenseSync(multi_worker=False)


@pytest.mark.parametrize("task,rank", [
    ({"type": "chief", "index": 0}, 0), ({"type": "worker", "index": 0}, 1),
    ({"type": "worker", "index": 1}, 2),
])
def test_ranks_put_the_chief_first(monkeypatch: pytest.MonkeyPatch, task: dict,
                                   rank: int) -> None:
    cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert _cluster_position(resolver) == (rank, 3)


def test_a_ps_task_is_not_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = {"worker": ["h:2"], "ps": ["h:4"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ValueError, match="chief or worker"):
        _cluster_position(tf.distribute.cluster_resolver.TFConfigClusterResolver())


def test_one_process_is_rank_zero_of_one_with_unit_embedding_scale(
        sync: TfDistributeDenseSync) -> None:
    assert (sync.rank, sync.num_workers, sync.num_replicas) == (0, 1, 1)
    assert sync.embedding_gradient_scale == 1.0
    assert not sync.reduces_dense_in_train_step
    assert sync.callbacks() == []
    sync.barrier()


def test_allreduce_sum_and_broadcast_are_identities_with_one_replica(
        sync: TfDistributeDenseSync) -> None:
    t = tf.constant([1.0, 2.0])
    np.testing.assert_array_equal(sync.allreduce_sum(t).numpy(), [1.0, 2.0])
    in_replica = tf.function(lambda: sync.strategy.run(lambda: sync.allreduce_sum(t)))
    np.testing.assert_array_equal(
        sync.strategy.experimental_local_results(in_replica())[0].numpy(), [1.0, 2.0])
    v = tf.Variable([4.0])
    sync.broadcast_variables([v])
    assert float(v.numpy()[0]) == 4.0


def test_allreduce_dense_needs_a_replica_context(sync: TfDistributeDenseSync) -> None:
    with pytest.raises(RuntimeError, match="replica context"):
        sync.allreduce_dense([tf.constant(1.0)])
    mean = sync.strategy.run(lambda: sync.allreduce_dense([tf.constant(3.0), None]))
    assert float(sync.strategy.experimental_local_results(mean[0])[0]) == 3.0
    assert mean[1] is None


def test_per_worker_variables_are_plain_inside_a_strategy_scope(
        sync: TfDistributeDenseSync) -> None:
    with sync.scope():
        with per_worker_variables():
            local = tf.Variable([1.0])
        mirrored = tf.Variable([1.0])
    assert not isinstance(local, tf.distribute.DistributedValues)
    assert isinstance(mirrored, tf.distribute.DistributedValues)


def _model() -> HeraldModel:
    keys = keras.Input((2,), dtype="int64")
    emb = HeraldEmbedding(3, capacity=16, name="emb")(keys)
    return HeraldModel(keys, keras.layers.Dense(1, kernel_initializer="ones")(emb))


def test_compile_refuses_a_model_built_outside_the_scope(sync: TfDistributeDenseSync) -> None:
    with pytest.raises(ValueError, match="inside the dense sync's scope"):
        _model().compile(optimizer="sgd", loss="mse", dense_sync=sync)


def test_compile_refuses_several_steps_per_execution_with_several_workers(
        sync: TfDistributeDenseSync, monkeypatch: pytest.MonkeyPatch) -> None:
    with sync.scope():
        model = _model()
        model.compile(optimizer="sgd", loss="mse", steps_per_execution=2, dense_sync=sync)
        monkeypatch.setattr(sync, "_num_workers", 2)
        with pytest.raises(ValueError, match="keras-team/keras#19246.*steps_per_execution=2"):
            model.compile(optimizer="sgd", loss="mse", steps_per_execution=2, dense_sync=sync)
