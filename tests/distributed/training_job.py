"""One training job of the equivalence tests: the single-process reference, or one worker.

    python training_job.py reference --model wdl --optimizer adagrad --out ref.npz ...
    python training_job.py worker --rank 0 --num-workers 2 --mode ps --backend tf_distribute \
        --ps-addrs 127.0.0.1:p0,127.0.0.1:p1 --token T --tf-config JSON --out w0.npz ...

Both train the same model on the same global batches (deterministic data): the reference with
batch size G = N * B in ``local`` mode, each worker with its B samples of every global batch
through the PS. Outputs: the dense weights (npz); embedding rows are read from the PS by the
test after the workers exit.

With ``TF_USE_LEGACY_KERAS=1`` in the environment, ``wdl`` is built from ``tf.keras`` (tf-keras)
layers instead of the Keras 3 models of ``examples/ctr/models.py``; the reference stays the
Keras 3 one (the tests start it without the variable). ``free_ports``, ``job_env`` and
``run_jobs`` start such jobs from a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

FIELDS, DENSE, DIM, VOCAB = 4, 3, 4, 40
OPTIMIZERS = {
    "sgd": {"kind": "sgd", "learning_rate": 0.1},
    "adagrad": {"kind": "adagrad", "learning_rate": 0.1},
    "adam": {"kind": "adam", "learning_rate": 0.01, "epsilon": 1e-4},
}


def free_ports(n: int) -> list[int]:
    """``n`` loopback ports free at the time of the call (for TF_CONFIG worker addresses)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def worker_commands(cluster: Any, outs: list[str], args: list[str]) -> list[list[str]]:
    """The commands of ``len(outs)`` workers of one job against ``cluster`` (its PS addresses and
    token): ``args`` (model, mode, ...) plus each worker's rank, a TF_CONFIG over free loopback
    ports, a Horovod coordinator port and its output file."""
    ports = free_ports(len(outs) + 1)
    hosts = [f"127.0.0.1:{p}" for p in ports[:-1]]
    commands = []
    for rank, out in enumerate(outs):
        tf_config = json.dumps({"cluster": {"worker": hosts},
                                "task": {"type": "worker", "index": rank}})
        commands.append([sys.executable, os.path.abspath(__file__), "worker", *args,
                         "--rank", str(rank), "--ps-addrs", ",".join(cluster.addresses),
                         "--token", cluster.token, "--tf-config", tf_config,
                         "--coordinator", f"127.0.0.1:{ports[-1]}", "--out", out])
    return commands


def job_env(legacy_keras: bool = False) -> dict[str, str]:
    """The environment of a job: this one without TF_CONFIG, with TF_USE_LEGACY_KERAS=1 (tf-keras
    as tf.keras) or without it (Keras 3)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    env.pop("TF_USE_LEGACY_KERAS", None)
    if legacy_keras:
        env["TF_USE_LEGACY_KERAS"] = "1"
    return env


def run_jobs(commands: list[list[str]], logs: list[str], envs: list[dict[str, str]],
             timeout_s: float = 300.0) -> None:
    """Runs the commands at once (each in a new session, output to its log); on a failure or
    timeout kills the rest by pid and raises with the failed one's output."""
    procs = []
    try:
        for cmd, log, env in zip(commands, logs, envs):
            with open(log, "wb") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env,
                                              start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # Report a job that failed by itself before one still running (killed below).
        for p, log in sorted(zip(procs, logs), key=lambda pl: pl[0].poll() is None):
            if p.poll() != 0:
                raise AssertionError(f"{log} exited {p.poll()}:\n"
                                     + open(log, errors="replace").read()[-4000:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def make_data(steps: int, global_batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Power-law keys (field << 32 | value), dense features and labels of ``steps`` batches."""
    rng = np.random.default_rng(seed)
    n = steps * global_batch
    values = np.minimum(rng.zipf(1.3, size=(n, FIELDS)) - 1, VOCAB - 1)
    keys = (np.arange(FIELDS, dtype=np.int64) << 32) | values.astype(np.int64)
    dense = rng.normal(size=(n, DENSE)).astype(np.float32)
    label = ((values[:, 0] % 3 == 0) ^ (rng.random(n) < 0.2)).astype(np.float32)
    return {"categorical": keys, "dense": dense, "label": label}


def lr_schedule(keras: Any, optimizer: str, decay: bool) -> Any:
    """With ``decay``, the rows' learning rate halves every 4 steps from the optimizer's rate
    (``--lr-decay``); else None (the fixed rate)."""
    if not decay:
        return None
    return keras.optimizers.schedules.ExponentialDecay(
        OPTIMIZERS[optimizer]["learning_rate"], decay_steps=4, decay_rate=0.5)


def build_model(name: str, optimizer: str, capacity: int = 1000, steps_per_execution: int = 3,
                dense_sync=None, lr_decay: bool = False):
    """The CTR model ``name`` with small layers, compiled with a dense SGD optimizer."""
    from herald_tf.keras import compat

    if compat.LEGACY_KERAS:
        return build_tf_keras_model(name, optimizer, capacity, steps_per_execution, dense_sync,
                                    lr_decay)
    import keras

    from examples.ctr.models import MODELS
    from herald_tf import OptimizerConfig

    kwargs = {"hidden": (8,)} if name in ("wdl", "deepfm", "dcn") else {"bottom": (8,),
                                                                         "top": (8,)}
    model = MODELS[name](FIELDS, DENSE, DIM, capacity,
                         OptimizerConfig.from_dict(OPTIMIZERS[optimizer]),
                         learning_rate_schedule=lr_schedule(keras, optimizer, lr_decay), **kwargs)
    model.compile(keras.optimizers.SGD(0.05), "binary_crossentropy",
                  steps_per_execution=steps_per_execution, dense_sync=dense_sync)
    return model


def build_tf_keras_model(name: str, optimizer: str, capacity: int = 1000,
                         steps_per_execution: int = 3, dense_sync=None, lr_decay: bool = False):
    """``wdl`` as an ordinary ``tf.keras`` (tf-keras) functional model: the same layers, names
    and initializers as ``examples.ctr.models.wdl`` (tf-keras' seeded Glorot draws the same
    numbers as Keras 3's), so it trains to the Keras 3 reference."""
    import tensorflow as tf

    from herald_tf import InitializerConfig, OptimizerConfig
    from herald_tf.keras import HeraldEmbedding, HeraldModel

    if name != "wdl":
        raise ValueError(f"Expected --model wdl under tf-keras. Received: {name}")
    k = tf.keras
    opt = OptimizerConfig.from_dict(OPTIMIZERS[optimizer])
    init = InitializerConfig("uniform", -0.05, 0.05)
    keys = k.Input((FIELDS,), dtype="int64", name="categorical")
    numeric = k.Input((DENSE,), name="dense")
    schedule = lr_schedule(k, optimizer, lr_decay)
    deep = HeraldEmbedding(DIM, capacity=capacity, combiner="none", optimizer=opt,
                           initializer=init, seed=1, name="deep_embedding",
                           learning_rate_schedule=schedule)(keys)
    wide = HeraldEmbedding(1, capacity=capacity, combiner="sum", optimizer=opt,
                           initializer=init, seed=2, name="wide_embedding",
                           learning_rate_schedule=schedule)(keys)
    x = k.layers.Concatenate()([k.layers.Flatten()(deep), numeric])
    x = k.layers.Dense(8, activation="relu", name="deep_0",
                       kernel_initializer=k.initializers.GlorotUniform(10))(x)
    logit = k.layers.Dense(1, name="logit", kernel_initializer=k.initializers.GlorotUniform(20))(x)
    out = k.layers.Activation("sigmoid", name="ctr")(k.layers.Add()([logit, wide]))
    model = HeraldModel({"categorical": keys, "dense": numeric}, out, name="wdl")
    model.compile(k.optimizers.SGD(0.05), "binary_crossentropy",
                  steps_per_execution=steps_per_execution, dense_sync=dense_sync)
    return model


def dense_weights(model) -> dict[str, np.ndarray]:
    # Keras 3 names a weight by its path ("logit/kernel"); tf-keras by its variable name.
    return {getattr(w, "path", None) or w.name.split(":")[0]: np.asarray(w.numpy())
            for w in model.trainable_weights}


def run_reference(args: argparse.Namespace) -> None:
    import tensorflow as tf

    from herald_tf.keras import herald_embeddings

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    g = args.num_workers * args.batch_size
    data = make_data(args.steps, g)
    model = build_model(args.model, args.optimizer, lr_decay=args.lr_decay)
    history = model.fit({"categorical": data["categorical"], "dense": data["dense"]},
                        data["label"], batch_size=g, shuffle=False, epochs=1, verbose=0)
    out = {f"dense/{k}": v for k, v in dense_weights(model).items()}
    keys = np.unique(data["categorical"])
    for layer in herald_embeddings(model):
        slots = layer.key_to_slot.lookup(tf.constant(keys)).numpy()
        out[f"rows/{layer.table.name}"] = layer.storage.numpy()[slots]
        out[f"versions/{layer.table.name}"] = layer.versions.numpy()[slots]
    out["keys"] = keys
    out["keras"] = _keras_name()
    out["history"] = _history(history)
    np.savez(args.out, **out)
    if args.export:
        from herald_tf.keras.export import export_for_serving

        export_for_serving(model, args.export)


def resume(model, runtime, args: argparse.Namespace) -> None:
    """Restores a worker checkpoint (dense optimizer built first, so it has its variables)."""
    if not args.resume_step:
        return
    from herald_tf.keras.checkpoint import load_worker

    model.optimizer.build(model.trainable_variables)
    load_worker(runtime, model, args.checkpoint_dir, args.resume_step)


def crash_callback():
    import keras

    class CrashAfter(keras.callbacks.Callback):
        """Dies by SIGKILL once ``step`` steps are done (the fault of the resume test)."""

        def __init__(self, runtime, step: int) -> None:
            super().__init__()
            self.runtime, self.step = runtime, step

        def on_train_batch_end(self, batch, logs=None) -> None:
            if self.runtime.next_step >= self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    return CrashAfter


def _history(history) -> np.ndarray:
    """``fit``'s per-epoch logs as JSON."""
    return np.array(json.dumps({k: [float(x) for x in np.ravel(v)]
                                for k, v in history.history.items()}))


def _keras_name() -> np.ndarray:
    from herald_tf.keras import compat

    return np.array("tf_keras" if compat.LEGACY_KERAS else "keras3")


def _steps_of_unsized_dataset(steps: int) -> dict[str, int]:
    """tf-keras needs the number of steps of the runtime's datasets (a generator of unknown
    size) when they are distributed or run several steps per execution; Keras 3 runs them out."""
    from herald_tf.keras import compat

    return {"steps_per_epoch": steps} if compat.LEGACY_KERAS else {}


def run_worker(args: argparse.Namespace) -> None:
    os.environ["TF_CONFIG"] = args.tf_config or ""
    import keras
    import tensorflow as tf

    keras.config.disable_traceback_filtering()

    from herald_tf.keras.checkpoint import HeraldCheckpoint
    from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime
    from herald_tf.transport.factory import make_transport

    CrashAfter = crash_callback()  # noqa: N806 - a class made where Keras is imported

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    g = args.num_workers * args.batch_size
    data = make_data(args.steps, g)
    batches = ({k: v[s * g:(s + 1) * g] for k, v in data.items()} for s in range(args.steps))
    transport = make_transport("grpc", addresses=args.ps_addrs.split(","), token=args.token)
    config = RuntimeConfig(
        mode=args.mode, num_workers=args.num_workers, rank=args.rank,
        batch_size=args.batch_size, num_fields=FIELDS,
        cache_capacity={"ps": 0, "allreduce": 1000}.get(args.mode, args.cache_capacity),
        eviction=args.eviction, bound=args.bound,
        allocation=args.allocation if args.mode == "herald" else "none",
        plan_source=args.plan_source)
    runtime = WorkerRuntime(config, transport, batches)
    callbacks = []
    if args.checkpoint_dir:
        callbacks.append(HeraldCheckpoint(runtime, args.checkpoint_dir, args.checkpoint_every,
                                          chief=args.rank == 0))
    if args.crash_after:
        callbacks.append(CrashAfter(runtime, args.crash_after))
    if args.herald_metrics:  # the per-epoch metrics line of DESIGN §6, printed
        from herald_tf.keras.callbacks import HeraldMetrics

        callbacks.append(HeraldMetrics(runtime, g, print_fn=lambda line: print(line,
                                                                                 flush=True)))
    specs = {"categorical": tf.TensorSpec([FIELDS], tf.int64),
             "dense": tf.TensorSpec([DENSE], tf.float32)}
    steps = args.steps - args.resume_step  # the datasets end there (WorkerRuntime.dataset)
    if args.backend == "horovod":
        from herald_tf.dense import make_dense_sync

        sync = make_dense_sync("horovod", rank=args.rank, num_workers=args.num_workers,
                               coordinator=args.coordinator)
        with runtime.scope():
            model = build_model(args.model, args.optimizer, steps_per_execution=3,
                                dense_sync=sync, lr_decay=args.lr_decay)
        resume(model, runtime, args)
        history = model.fit(runtime.dataset(specs, steps), epochs=1, verbose=0,
                            callbacks=sync.callbacks() + callbacks,
                            **_steps_of_unsized_dataset(steps))
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with strategy.scope(), runtime.scope():
            # Keras' multi-step loop fails under MultiWorkerMirroredStrategy (HeraldModel).
            model = build_model(args.model, args.optimizer, steps_per_execution=1,
                                lr_decay=args.lr_decay)
            resume(model, runtime, args)
        history = model.fit(runtime.distributed_dataset(strategy, specs, steps), epochs=1,
                            verbose=0,
                            callbacks=callbacks, **_steps_of_unsized_dataset(steps))
    stats = runtime.stats()  # the plans' traffic, before the final flush of owned rows
    runtime.flush_dirty()
    if args.export:
        # Every worker's rows are on the PS once all have flushed (a collective is the
        # barrier); then the PS checkpoint of the last step feeds the export.
        if args.backend == "horovod":
            sync.barrier()
        else:
            strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
        if args.rank == 0:
            from herald_tf.keras.export import export_for_serving

            transport.checkpoint(args.steps - 1)
            # Small blocks: the PS shards' rows are sorted and written in several slices.
            export_for_serving(model, args.export, checkpoint_dir=args.checkpoint_dir,
                               block_rows=16)
    runtime.close()
    out = {f"dense/{k}": v for k, v in dense_weights(model).items()}
    out["stats"] = np.array(json.dumps(stats))
    out["history"] = _history(history)
    out["keras"] = _keras_name()
    if args.mode == "allreduce":  # the rows live in every replica, not on the PS
        keys = np.unique(data["categorical"])
        for layer in runtime.tables:
            out[f"rows/{layer.table.name}"] = runtime.read_rows(layer.table.name, keys)
    np.savez(args.out, **out)
    transport.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["reference", "worker"])
    parser.add_argument("--model", default="wdl")
    parser.add_argument("--optimizer", default="adagrad", choices=sorted(OPTIMIZERS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--mode", default="ps")
    parser.add_argument("--cache-capacity", type=int, default=40)
    parser.add_argument("--eviction", default="lru")
    parser.add_argument("--bound", type=int, default=0)
    parser.add_argument("--allocation", default="grouped", help="herald mode's allocator")
    parser.add_argument("--plan-source", default="rank0", choices=["rank0", "every_worker"])
    parser.add_argument("--ps-addrs", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--tf-config", default="")
    parser.add_argument("--backend", default="tf_distribute", choices=["tf_distribute", "horovod"])
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--checkpoint-dir", default="")
    parser.add_argument("--checkpoint-every", type=int, default=30)
    parser.add_argument("--crash-after", type=int, default=0)
    parser.add_argument("--resume-step", type=int, default=0)
    parser.add_argument("--export", default="", help="write a serving SavedModel here")
    parser.add_argument("--herald-metrics", action="store_true", help="print HeraldMetrics")
    parser.add_argument("--lr-decay", action="store_true",
                        help="the rows' learning rate follows a schedule (lr_schedule)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    (run_reference if args.role == "reference" else run_worker)(args)


if __name__ == "__main__":
    main()
