"""DESIGN §2a "Gradient scale": one step of N = 2 workers equals one step of one process.

Each backend runs two worker processes on loopback, worker w training samples [w·B, (w+1)·B)
of a global batch of G = 2·B samples (with sample weights and an L2 regularization loss), and
the test compares with one process training the whole global batch: the dense weights after the
step, and the sum over workers of the embedding gradient each worker hands to the sparse path
(what it would push to the parameter servers), per key. Workers start from different dense
initial values, so the comparison also checks the chief's weights reach every worker.

This file is also the worker program: ``python test_dense_sync.py --worker BACKEND --out F``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

B = 8  # samples per worker
N = 2  # workers
FIELDS = 3
VOCAB = 24
DIM = 4
DENSE_LR = 0.5
WORKER_TIMEOUT_S = 120.0
_RECORDED: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}


def global_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """keys [G, FIELDS], dense [G, 2], labels [G, 1], sample weights [G] of the one step."""
    rng = np.random.default_rng(7)
    keys = rng.integers(0, VOCAB, size=(N * B, FIELDS)).astype(np.int64)
    dense = rng.normal(size=(N * B, 2)).astype(np.float32)
    labels = (rng.random((N * B, 1)) < 0.5).astype(np.float32)
    weights = rng.uniform(0.2, 2.0, size=(N * B,)).astype(np.float32)
    return keys, dense, labels, weights


def build_model(init_seed: int) -> Any:
    """A small WDL-like HeraldModel; ``init_seed`` varies the dense initial values only."""
    import keras

    from herald_tf.keras import HeraldEmbedding, HeraldModel

    class RecordingEmbedding(HeraldEmbedding):
        """Records the (slot, gradient) pairs handed to the sparse path, then applies them.

        Its storage is per worker under tf.distribute (DESIGN §4a), as HeraldEmbedding's own
        distributed storage must be.
        """

        def build(self, input_shape: Any = None) -> None:
            from herald_tf.dense.tf_distribute import per_worker_variables

            with per_worker_variables():
                super().build(input_shape)

        def apply_embedding_gradients(self, gradient: Any, learning_rate: Any = None) -> Any:
            import tensorflow as tf

            def record(slots: Any, values: Any) -> np.int32:
                _RECORDED.setdefault(self.name, []).append((slots.numpy(), values.numpy()))
                return np.int32(0)

            done = tf.py_function(record, [gradient.indices, gradient.values], tf.int32)
            with tf.control_dependencies([done]):
                return super().apply_embedding_gradients(gradient, learning_rate)

    keys = keras.Input((FIELDS,), dtype="int64", name="keys")
    dense = keras.Input((2,), name="dense")
    emb = RecordingEmbedding(DIM, capacity=64, combiner="sum", seed=11, name="emb")(keys)
    hidden = keras.layers.Dense(
        8, activation="tanh", name="hidden",
        kernel_initializer=keras.initializers.GlorotUniform(seed=init_seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=init_seed + 100),
        kernel_regularizer=keras.regularizers.L2(0.05),
    )(keras.layers.Concatenate()([emb, dense]))
    out = keras.layers.Dense(
        1, activation="sigmoid", name="head",
        kernel_initializer=keras.initializers.GlorotUniform(seed=init_seed + 200),
    )(hidden)
    return HeraldModel([keys, dense], out)


def compile_model(model: Any, sync: Any) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.SGD(DENSE_LR), loss="binary_crossentropy",
                  dense_sync=sync)


def step_result(model: Any) -> dict[str, np.ndarray]:
    """Dense weights after the step and the recorded embedding gradient by key."""
    layer = model.get_layer("emb")
    keys, slots = (t.numpy() for t in layer.key_to_slot.export())
    slot_to_key = dict(zip(slots.tolist(), keys.tolist(), strict=True))
    (grad_slots, grad_values), = _RECORDED[layer.name]
    result = {f"dense_{i}": v.numpy() for i, v in enumerate(model.trainable_weights)}
    result["emb_keys"] = np.array([slot_to_key[s] for s in grad_slots.tolist()], np.int64)
    result["emb_grads"] = grad_values
    return result


def grads_by_key(results: list[dict[str, np.ndarray]]) -> dict[int, np.ndarray]:
    """Per key, the embedding gradient summed over the workers (float64)."""
    total: dict[int, np.ndarray] = {}
    for r in results:
        for key, grad in zip(r["emb_keys"].tolist(), r["emb_grads"], strict=True):
            total[key] = total.get(key, 0.0) + grad.astype(np.float64)
    return total


def collective_results(sync: Any) -> dict[str, np.ndarray]:
    """allreduce_sum (eager and inside a tf.function / replica context), broadcast_variables of
    a per-worker variable, and a barrier, as worker ``sync.rank`` sees them."""
    import tensorflow as tf

    from herald_tf.dense import DenseSyncKind

    value = tf.constant([1.0, 2.0]) * float(sync.rank + 1)
    eager_sum = sync.allreduce_sum(value, name="check_eager_sum")
    if sync.kind is DenseSyncKind.TF_DISTRIBUTE:
        strategy = sync.strategy
        in_replica = tf.function(lambda: strategy.run(lambda: sync.allreduce_sum(value)))
        graph_sum = strategy.experimental_local_results(in_replica())[0]
    else:
        graph_sum = tf.function(lambda: sync.allreduce_sum(value, name="check_graph_sum"))()
    variable = tf.Variable(tf.fill([3], float(sync.rank + 7)))
    sync.broadcast_variables([variable], root_rank=0)
    sync.barrier()
    return {"eager_sum": eager_sum.numpy(), "graph_sum": graph_sum.numpy(),
            "broadcast": variable.numpy()}


def _die_with_parent(parent_pid: int) -> None:
    """PR_SET_PDEATHSIG: this worker is killed when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def fit_worker_rows(model: Any, sync: Any, worker: str, inputs: tuple[np.ndarray, ...],
                    labels: np.ndarray, weights: np.ndarray, batch: int, steps: int) -> None:
    """Trains one epoch of `steps` batches on this worker's rows: plain ``model.fit`` arrays with
    the sync's callbacks under Horovod, a per-worker distributed dataset (no auto-sharding: the
    rows are already this worker's) under tf.distribute."""
    import tensorflow as tf

    if worker == "horovod":
        model.fit(list(inputs), labels, sample_weight=weights, batch_size=batch, epochs=1,
                  shuffle=False, verbose=0, callbacks=sync.callbacks())
        return

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((inputs, labels, weights)).batch(batch)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return ds.with_options(options)

    data = sync.strategy.distribute_datasets_from_function(dataset_fn)
    model.fit(data, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)


def worker_main(argv: list[str]) -> None:
    """One worker of the two-process step; writes its ``step_result`` to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", required=True, choices=["horovod", "tf_distribute"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)

    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from herald_tf.dense import make_dense_sync

    sync = make_dense_sync(args.worker)  # rank / coordinator / TF_CONFIG from the environment
    rank = sync.rank
    keys, dense, labels, weights = global_batch()
    mine = slice(rank * B, (rank + 1) * B)
    with sync.scope():
        model = build_model(init_seed=1 + 10 * rank)
        compile_model(model, sync)
    fit_worker_rows(model, sync, args.worker, (keys[mine], dense[mine]), labels[mine],
                    weights[mine], B, steps=1)
    np.savez(args.out, **step_result(model), **collective_results(sync))
    sync.shutdown()


# ----------------------------------------------------------------------------------------------
# Test side.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    """One process, the whole global batch, no dense sync: DESIGN §2a's reference."""
    model = build_model(init_seed=1)
    compile_model(model, None)
    keys, dense, labels, weights = global_batch()
    model.fit([keys, dense], labels, sample_weight=weights, batch_size=N * B, epochs=1,
              shuffle=False, verbose=0)
    return step_result(model)


class Workers:
    """The worker processes of one test, killed by pid at teardown."""

    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []
        self.logs: list[str] = []

    def start(self, backend: str, rank: int, env: dict[str, str], script: str = __file__) -> str:
        """Starts ``script --worker backend`` with ``env`` added; returns its output path."""
        out = os.path.join(self.tmp_path, f"{backend}-{rank}.npz")
        self.logs.append(os.path.join(self.tmp_path, f"{backend}-{rank}.log"))
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
        with open(self.logs[-1], "wb") as log:
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(script), "--worker", backend, "--out", out,
                 "--parent-pid", str(os.getpid())],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                start_new_session=True))
        return out

    def wait(self, outs: list[str]) -> list[dict[str, np.ndarray]]:
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        for i, proc in enumerate(self.procs):
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                logs = "\n".join(self._log_tail(path) for path in self.logs)
                raise AssertionError(f"worker {i} exited with {code}.\n{logs}")
        return [dict(np.load(o)) for o in outs]

    @staticmethod
    def _log_tail(path: str) -> str:
        with open(path, errors="replace") as f:
            return f"--- {os.path.basename(path)}\n{f.read()[-3000:]}"

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(tmp_path: Any) -> Iterator[Workers]:
    w = Workers(str(tmp_path))
    yield w
    w.kill()


def assert_matches_reference(results: list[dict[str, np.ndarray]],
                             reference: dict[str, np.ndarray]) -> None:
    from reference import assert_close

    dense_names = sorted(k for k in reference if k.startswith("dense_"))
    assert dense_names
    for r in results:
        for name in dense_names:
            assert_close(r[name], reference[name])
    for r in results:
        np.testing.assert_array_equal(r["eager_sum"], [3.0, 6.0])
        np.testing.assert_array_equal(r["graph_sum"], [3.0, 6.0])
        np.testing.assert_array_equal(r["broadcast"], [7.0, 7.0, 7.0])
    total = grads_by_key(results)
    expected = grads_by_key([reference])
    assert sorted(total) == sorted(expected)
    for key in expected:
        assert_close(total[key], expected[key])


def test_horovod_two_workers_match_one_process(workers: Workers,
                                               reference: dict[str, np.ndarray]) -> None:
    pytest.importorskip("horovod.tensorflow")
    from herald_tf.dense.horovod import GlooRendezvous, horovod_worker_env

    with GlooRendezvous(N) as rendezvous:  # what herald-run hosts for workers it starts
        outs = [workers.start("horovod", r, horovod_worker_env(r, N, rendezvous.address))
                for r in range(N)]
        results = workers.wait(outs)
    assert_matches_reference(results, reference)


def test_tf_distribute_two_workers_match_one_process(workers: Workers,
                                                     reference: dict[str, np.ndarray]) -> None:
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(N)]}
    outs = [workers.start("tf_distribute", r, {"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": r}})}) for r in range(N)]
    assert_matches_reference(workers.wait(outs), reference)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
