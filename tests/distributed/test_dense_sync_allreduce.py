"""Several steps of N = 2 workers in ``allreduce`` style equal the single-process run (slow).

Every worker holds the whole (small) table and, each step, all-reduces its scaled embedding
gradient with ``DenseSync.allreduce_sum`` before the sparse Adagrad apply, so every table stays
equal to the reference's; dense weights train with SGD + momentum through ``HeraldModel``'s
dense-sync hook (two steps per execution under Horovod). After STEPS steps every row, its optimizer
state and every dense weight must equal one process trained on the same global batches. The
Horovod variant reaches its rendezvous through ``HERALD_COORDINATOR`` (rank 0 hosts it).

This file is also the worker program: ``python test_dense_sync_allreduce.py --worker BACKEND``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_dense_sync import Workers, _die_with_parent, _free_port, fit_worker_rows

B = 8
N = 2
STEPS = 4
FIELDS = 3
VOCAB = 24
DIM = 4
#: Horovod runs two steps per execution (callbacks fire at chunk edges, DESIGN §4a); Keras 3
#: cannot under MultiWorkerMirroredStrategy (keras-team/keras#19246), which the sync refuses.
STEPS_PER_EXECUTION = {"horovod": 2, "tf_distribute": 1, "none": 2}

pytestmark = pytest.mark.slow


def batches() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """STEPS global batches back to back: keys, dense, labels, sample weights."""
    rng = np.random.default_rng(11)
    n = STEPS * N * B
    keys = rng.integers(0, VOCAB, size=(n, FIELDS)).astype(np.int64)
    dense = rng.normal(size=(n, 2)).astype(np.float32)
    labels = (rng.random((n, 1)) < 0.5).astype(np.float32)
    weights = rng.uniform(0.2, 2.0, size=(n,)).astype(np.float32)
    return keys, dense, labels, weights


def worker_rows(rank: int) -> np.ndarray:
    """Indices of worker ``rank``'s samples, step after step."""
    return np.concatenate([np.arange(t * N * B + rank * B, t * N * B + (rank + 1) * B)
                           for t in range(STEPS)])


def build_model(init_seed: int, sync: Any) -> Any:
    """A small HeraldModel whose table all-reduces its gradients through ``sync``."""
    import keras
    import tensorflow as tf

    from herald_tf import OptimizerConfig
    from herald_tf.dense.tf_distribute import per_worker_variables
    from herald_tf.keras import HeraldEmbedding, HeraldModel

    class AllreduceEmbedding(HeraldEmbedding):
        """Sums every worker's slot gradient before applying it (rows have equal slots
        everywhere: all keys are created up front, in key order)."""

        def build(self, input_shape: Any = None) -> None:
            with per_worker_variables():
                super().build(input_shape)

        def apply_embedding_gradients(self, gradient: Any, learning_rate: Any = None) -> Any:
            index = gradient.indices[:, tf.newaxis]
            summed = sync.allreduce_sum(
                tf.scatter_nd(index, gradient.values, [self.capacity, self.output_dim]))
            touched = sync.allreduce_sum(tf.scatter_nd(
                index, tf.ones_like(gradient.indices, tf.float32), [self.capacity]))
            slots = tf.where(touched > 0)[:, 0]
            return super().apply_embedding_gradients(
                tf.IndexedSlices(tf.gather(summed, slots), slots), learning_rate)

    keys = keras.Input((FIELDS,), dtype="int64", name="keys")
    dense = keras.Input((2,), name="dense")
    emb_layer = AllreduceEmbedding(DIM, capacity=VOCAB, combiner="sum", seed=5, name="emb",
                                   optimizer=OptimizerConfig("adagrad", learning_rate=0.2))
    hidden = keras.layers.Dense(
        8, activation="tanh", name="hidden",
        kernel_initializer=keras.initializers.GlorotUniform(seed=init_seed),
        kernel_regularizer=keras.regularizers.L2(0.05),
    )(keras.layers.Concatenate()([emb_layer(keys), dense]))
    out = keras.layers.Dense(
        1, activation="sigmoid", name="head",
        kernel_initializer=keras.initializers.GlorotUniform(seed=init_seed + 1),
    )(hidden)
    model = HeraldModel([keys, dense], out)
    emb_layer(tf.constant(np.arange(VOCAB, dtype=np.int64)[:, np.newaxis]), training=True)
    model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
                  loss="binary_crossentropy",
                  steps_per_execution=STEPS_PER_EXECUTION[sync.kind.value], dense_sync=sync)
    return model


def result(model: Any) -> dict[str, np.ndarray]:
    """Dense weights, rows and optimizer state by key (key k sits in slot k)."""
    layer = model.get_layer("emb")
    keys, slots = (t.numpy() for t in layer.key_to_slot.export())
    np.testing.assert_array_equal(np.sort(slots), np.arange(VOCAB))
    np.testing.assert_array_equal(keys[np.argsort(slots)], np.arange(VOCAB))
    out = {f"dense_{i}": v.numpy() for i, v in enumerate(model.trainable_weights)}
    out["rows"] = layer.storage.numpy()
    out["state"] = layer.optimizer_state.numpy()
    out["versions"] = layer.versions.numpy()
    return out


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, choices=["horovod", "tf_distribute"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from herald_tf.dense import make_dense_sync

    sync = make_dense_sync(args.worker)
    keys, dense, labels, weights = batches()
    mine = worker_rows(sync.rank)
    with sync.scope():
        model = build_model(init_seed=3 + sync.rank, sync=sync)
    fit_worker_rows(model, sync, args.worker, (keys[mine], dense[mine]), labels[mine],
                    weights[mine], B, steps=STEPS)
    np.savez(args.out, **result(model))
    sync.barrier()
    sync.shutdown()


@pytest.fixture
def workers(tmp_path: Any) -> Iterator[Workers]:
    started = Workers(str(tmp_path))
    yield started
    started.kill()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    from herald_tf.dense import NoneDenseSync

    model = build_model(init_seed=3, sync=NoneDenseSync())
    keys, dense, labels, weights = batches()
    model.fit([keys, dense], labels, sample_weight=weights, batch_size=N * B, epochs=1,
              shuffle=False, verbose=0)
    return result(model)


def _assert_matches(results: list[dict[str, np.ndarray]],
                    reference: dict[str, np.ndarray]) -> None:
    from reference import assert_close

    for r in results:
        assert sorted(r) == sorted(reference)
        for name in reference:
            if name == "versions":
                np.testing.assert_array_equal(r[name], reference[name])
            else:
                assert_close(r[name], reference[name])


def test_horovod_allreduce_steps_match_one_process(workers: Workers,
                                                   reference: dict[str, np.ndarray]) -> None:
    pytest.importorskip("horovod.tensorflow")
    coordinator = f"127.0.0.1:{_free_port()}"
    outs = [workers.start("horovod", r, {
        "HERALD_RANK": str(r), "HERALD_NUM_WORKERS": str(N), "HERALD_COORDINATOR": coordinator,
    }, script=__file__) for r in range(N)]
    _assert_matches(workers.wait(outs), reference)


def test_tf_distribute_allreduce_steps_match_one_process(
        workers: Workers, reference: dict[str, np.ndarray]) -> None:
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(N)]}
    outs = [workers.start("tf_distribute", r, {"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": r}})}, script=__file__)
        for r in range(N)]
    _assert_matches(workers.wait(outs), reference)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
