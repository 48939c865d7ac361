"""Trains a CTR model on herald: one worker process of a cluster started by ``herald-run``.

Seed-compatible flags (the research system's ``run_hetu.py`` / ``run_laia.py``)::

    herald-run -c examples/config/dist.yml -- python examples/ctr/run_herald.py \\
        --model wdl_criteo --comm Hybrid --cache lru --bound 0 --bsp 0 --nepoch 1 --all \\
        --batch-size 256 --embedding-size 16 --cache-limit-ratio 0.1 --mode herald

``--comm PS`` → mode ``ps``; ``--comm Hybrid --cache X --bound b`` → ``het`` (or ``herald`` with
``--mode herald``); ``--comm AllReduce`` → ``allreduce`` (tables replicated, no PS).
``--bsp 0`` (synchronous) is the only synchronisation herald supports. ``AllReduce`` runs without
parameter servers (a dist.yml with ``servers: 0``); its checkpoints are the workers' files alone.
A ``--data`` file is parsed once into flat binary files (``--data-cache-dir``) that are mapped
into memory and unlinked at once (``herald_tf.data.read_samples``): epochs, the evaluation and
the schedule replay slice the mapping, and no worker holds the whole file in its own memory.
With ``--keep-data-cache`` the parsed files stay and are shared: the workers of a host parse
the file once between them, and later runs map the same files.
Malformed lines are skipped with a warning that counts them (``--strict-data`` stops at the
first, naming its line); a file with no usable line is refused.

The cluster comes from the launcher's environment (``HERALD_PS_ADDRS``, ``HERALD_RANK``,
``HERALD_NUM_WORKERS``, ``HERALD_TOKEN``, ``TF_CONFIG``); dense weights are synchronised by
tf.distribute's MultiWorkerMirroredStrategy. Every worker reads the same data and trains its
share of each global batch (N * batch size). Per epoch it prints loss, AUC, samples/s, the
step-time split, embedding bytes per sample by kind and the cache hit ratio (also to
TensorBoard with ``--logdir``); at the end rank 0 evaluates held-out logloss and AUC.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402

if TYPE_CHECKING:  # the modules are imported when used, after the environment is set
    import numpy as np

    from herald_tf.data.criteo import CriteoBatch
    from herald_tf.data.samples import Samples
    from herald_tf.transport.types import Transport

FLAGS = flags.FLAGS


def _flag(name: str) -> object:
    """A flag with a dash in its name (the seed's spelling, e.g. --batch-size)."""
    return FLAGS[name].value

flags.DEFINE_string("model", "wdl_criteo", "<wdl|deepfm|dcn|dlrm>_<criteo|avazu>")
flags.DEFINE_enum("comm", "Hybrid", ["PS", "Hybrid", "AllReduce"], "seed's communication mode")
flags.DEFINE_enum("cache", "lru", ["lru", "lfu", "LRU", "LFU"], "worker cache eviction")
flags.DEFINE_integer("bound", 0, "HET staleness bound (0: exact synchronous SGD)")
flags.DEFINE_integer("bsp", 0, "synchronisation: 0 = BSP (the only one supported)")
flags.DEFINE_integer("nepoch", 1, "epochs over the training data")
flags.DEFINE_bool("all", False, "train on every sample of --data (default: --num-samples)")
flags.DEFINE_integer("batch-size", 256, "samples per worker per step")
flags.DEFINE_integer("embedding-size", 16, "embedding width")
flags.DEFINE_float("cache-limit-ratio", 0.1, "worker cache rows / distinct keys of the data")
flags.DEFINE_enum("mode", None, ["ps", "het", "herald"], "override the mode --comm implies")
flags.DEFINE_enum("allocation", "grouped", ["none", "greedy", "grouped"],
                  "herald's input allocation")
flags.DEFINE_string("data", None, "Criteo TSV file (default: synthetic data)")
flags.DEFINE_integer("num-samples", 200_000, "samples used without --all (synthetic or file)")
flags.DEFINE_float("synthetic-scale", 0.001, "synthetic data: scale of Criteo's cardinalities")
flags.DEFINE_float("val-fraction", 0.1, "held-out fraction for the final evaluation")
flags.DEFINE_enum("optimizer", "adagrad", ["sgd", "adagrad", "adam"], "embedding optimizer")
flags.DEFINE_float("learning-rate", 0.05, "embedding learning rate")
flags.DEFINE_float("dense-learning-rate", 1e-3, "dense (Adam) learning rate")
flags.DEFINE_enum("transport", "grpc", ["grpc", "grpc+tcp"],
                  "PS transport: gRPC for everything, or pull/push over the PS's TCP data port")
flags.DEFINE_enum("plan-source", "rank0", ["rank0", "every_worker"],
                  "worker 0 schedules for all and ships the plans through the PS, or every "
                  "worker runs its own copy of the scheduler")
flags.DEFINE_string("logdir", None, "TensorBoard directory")
flags.DEFINE_string("metrics-json", None, "write the final metrics of rank 0 here")
flags.DEFINE_string("checkpoint-dir", None,
                    "checkpoint folder shared by the workers and the PS (herald-run "
                    "--checkpoint-dir)")
flags.DEFINE_integer("checkpoint-every", 0, "checkpoint every N steps (0: never); needs "
                     "--checkpoint-dir", lower_bound=0)
flags.DEFINE_integer("resume", 0, "resume from the checkpoint at this step (the PS must have "
                     "been restored to step - 1: herald-ps --restore); needs --checkpoint-dir",
                     lower_bound=0)
flags.DEFINE_string("data-cache-dir", None, "folder for the parsed copy of --data, unlinked "
                    "once mapped unless --keep-data-cache (default: the data file's folder)")
flags.DEFINE_bool("keep-data-cache", False, "keep the parsed copy of --data in --data-cache-dir "
                  "and share it: one worker of a host parses, the others and later runs map it")
flags.DEFINE_bool("strict-data", False, "stop at the first malformed line of --data (default: "
                  "skip such lines and print how many were skipped)")


@flags.multi_flags_validator(["checkpoint-dir", "checkpoint-every", "resume"],
                             message="Expected --checkpoint-dir with --checkpoint-every or "
                             "--resume (the folder the workers and the PS share)")
def _checkpoint_flags_have_a_folder(values: dict) -> bool:
    # refused at parsing: otherwise the first checkpoint fails after the PS wrote its part
    return bool(values["checkpoint-dir"]) or not (values["checkpoint-every"] or values["resume"])


def _mode() -> str:
    if FLAGS.bsp != 0:
        raise app.UsageError(f"Expected --bsp 0: herald trains with synchronous SGD only. "
                             f"Received: --bsp {FLAGS.bsp}")
    if FLAGS.comm == "AllReduce":
        return "allreduce"
    if FLAGS.mode:
        return FLAGS.mode
    return "ps" if FLAGS.comm == "PS" else "het"


def load_samples(dataset: str) -> Samples:
    """The run's samples: ``--data`` parsed once into a memory-mapped copy (the first
    ``--num-samples`` usable ones, or all with ``--all``), else synthetic ones generated in
    memory; the last ``--val-fraction`` is held out."""
    from herald_tf.data.avazu import AvazuReader, write_synthetic_avazu
    from herald_tf.data.criteo import CriteoReader
    from herald_tf.data.samples import Samples, read_samples
    from herald_tf.data.synthetic import SyntheticConfig, SyntheticCriteo

    limit = None if FLAGS.all else _flag("num-samples")
    path = FLAGS.data
    if dataset == "avazu" and not path:  # synthetic Avazu-format CSV, written once
        path = os.path.join("data", f"synthetic_avazu_{_flag('num-samples')}.csv")
        if not os.path.exists(path):
            os.makedirs("data", exist_ok=True)
            # workers sharing a folder may both write it: the writer renames a temporary file
            # of its own into place (the contents are identical: same seed)
            write_synthetic_avazu(path, _flag("num-samples"), seed=0)
    if path:
        strict = _flag("strict-data")
        reader = (AvazuReader(path, strict=strict) if dataset == "avazu"
                  else CriteoReader(path, strict=strict))
        return read_samples(reader, limit, _flag("val-fraction"), warn=_stderr,
                            cache_dir=_flag("data-cache-dir"), keep=_flag("keep-data-cache"))
    batch = SyntheticCriteo(SyntheticConfig(scale=_flag("synthetic-scale"), seed=0)).batch(
        limit or _flag("num-samples"))
    return Samples(batch, _flag("val-fraction"))


def _features(batch: CriteoBatch) -> dict[str, np.ndarray]:
    """A batch as the model's inputs and label (float32); Avazu's missing numeric features are
    one zero column (oneDNN aborts on 0-wide matmuls)."""
    import numpy as np

    dense = batch.dense.astype("float32", copy=False)  # Samples hands out copies already
    if dense.shape[1] == 0:
        dense = np.zeros((len(batch), 1), np.float32)
    return {"categorical": batch.keys, "dense": dense, "label": batch.labels.astype("float32")}


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_worker_transport(mode: str, kind: str, addresses: Sequence[str],
                          token: str | None) -> Transport | None:
    """The transport to the PS shards, or None in ``allreduce`` mode, which replicates the
    tables on every worker and never talks to a PS (a launch with ``servers: 0`` is valid)."""
    from herald_tf.transport.factory import make_transport

    if mode == "allreduce":
        return None
    if not addresses:
        raise app.UsageError(
            f"Expected parameter servers for mode {mode} (--comm PS or Hybrid). Received: no "
            "addresses in $HERALD_PS_ADDRS; start the job with herald-run and a dist.yml whose "
            "nodes have servers > 0, or use --comm AllReduce")
    return make_transport(kind, addresses=list(addresses), token=token)


def compare_policies(samples: Samples, global_batch: int, config) -> dict[str, float]:
    """Rows moved per sample by ps, het(bound 0) and herald on one epoch's global batches,
    computed by replaying the schedules (no training; DESIGN §6)."""
    from herald_tf.scheduler import make_engine

    rows = {}
    for name, policy, allocation in (("ps", "ps", "none"), ("het", "het", "none"),
                                     ("herald", "herald", config.allocation)):
        engine = make_engine(dataclasses.replace(
            config, policy=policy, allocation=allocation,
            cache_capacity=0 if policy == "ps" else config.cache_capacity), emit_plans=False)
        for batch in samples.train_batches(global_batch):
            engine.step(batch.keys)
        rows[name] = engine.traffic.rows_per_sample()
    return rows


def main(argv: list[str]) -> None:
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    import keras
    import numpy as np
    import tensorflow as tf

    from examples.ctr.models import MODELS
    from herald_tf import OptimizerConfig, env
    from herald_tf.keras.callbacks import HeraldMetrics
    from herald_tf.keras.checkpoint import HeraldCheckpoint, load_worker
    from herald_tf.keras.runtime import RuntimeConfig, WorkerRuntime

    name, _, dataset_name = FLAGS.model.partition("_")
    if name not in MODELS or dataset_name not in ("criteo", "avazu"):
        raise app.UsageError(f"Expected --model <{'|'.join(MODELS)}>_<criteo|avazu>. "
                             f"Received: {FLAGS.model}")
    mode = _mode()
    rank, workers = env.rank() or 0, env.num_workers() or 1
    tf.config.threading.set_inter_op_parallelism_threads(2)
    samples = load_samples(dataset_name)
    fields = samples.fields  # 26 for Criteo, 24 for Avazu
    dense_width = max(1, samples.dense_width)  # see _features
    g = workers * _flag("batch-size")
    steps_per_epoch = samples.num_train // g
    distinct = samples.distinct_train_keys()
    capacity = {"ps": 0, "allreduce": distinct}.get(
        mode, max(1, int(distinct * _flag("cache-limit-ratio"))))

    def global_batches():
        for _ in range(FLAGS.nepoch):  # the look-ahead continues across epochs
            for batch in samples.train_batches(g):
                yield _features(batch)

    transport = make_worker_transport(mode, FLAGS.transport, env.ps_addresses(),
                                      env.cluster_token())
    config = RuntimeConfig(
        mode=mode, num_workers=workers, rank=rank, batch_size=_flag("batch-size"),
        num_fields=fields,
        cache_capacity=capacity, eviction=FLAGS.cache.lower(), bound=FLAGS.bound,
        allocation=FLAGS.allocation if mode == "herald" else "none",
        plan_source=_flag("plan-source"))
    runtime = WorkerRuntime(config, transport, global_batches())
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    optimizer = OptimizerConfig(FLAGS.optimizer, learning_rate=_flag("learning-rate"))
    with strategy.scope(), runtime.scope():
        model = MODELS[name](fields, dense_width, _flag("embedding-size"), distinct, optimizer)
        model.compile(keras.optimizers.Adam(_flag("dense-learning-rate")), "binary_crossentropy",
                      metrics=[keras.metrics.AUC(name="auc")])
        if FLAGS.resume:
            model.optimizer.build(model.trainable_variables)
            load_worker(runtime, model, _flag("checkpoint-dir"), FLAGS.resume)
    done = runtime.next_step
    first_epoch = done // steps_per_epoch
    data = runtime.distributed_dataset(strategy, {
        "categorical": tf.TensorSpec([fields], tf.int64),
        "dense": tf.TensorSpec([dense_width], tf.float32)},
        steps=(FLAGS.nepoch - first_epoch) * steps_per_epoch)
    if rank == 0:
        print(f"herald: model {FLAGS.model}, mode {mode}, {workers} workers x batch "
              f"{_flag('batch-size')}, {steps_per_epoch} steps/epoch, {distinct} distinct keys, "
              f"cache {capacity} rows/worker, {len(env.ps_addresses())} PS", flush=True)
    callbacks = [HeraldMetrics(runtime, g, log_dir=FLAGS.logdir,
                               print_fn=print if rank == 0 else None)]
    if _flag("checkpoint-every"):
        # allreduce has no PS to checkpoint: every worker's storage holds the whole tables
        callbacks.append(HeraldCheckpoint(runtime, _flag("checkpoint-dir"),
                                          _flag("checkpoint-every"),
                                          chief=rank == 0 and transport is not None))
    if FLAGS.logdir:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(FLAGS.logdir, f"w{rank}")))
    start = time.perf_counter()
    model.fit(data, epochs=FLAGS.nepoch, steps_per_epoch=steps_per_epoch,
              initial_epoch=first_epoch, verbose=0, callbacks=callbacks)
    train_s = time.perf_counter() - start
    runtime.flush_dirty()
    # Every worker's rows are on the PS once all have flushed: a collective is the barrier.
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    if rank == 0:
        probs, ys = [], []
        for batch in samples.held_out(4096):
            x = _features(batch)
            ys.append(x.pop("label"))
            probs.append(model(x, training=False).numpy().ravel())
        p = np.clip(np.concatenate(probs) if probs else np.zeros(0), 1e-7, 1 - 1e-7)
        y = np.concatenate(ys) if ys else np.zeros(0, np.float32)
        n_val = samples.num_held_out
        auc = keras.metrics.AUC()
        auc.update_state(y, p)
        logloss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if n_val else 0.0
        stats = runtime.stats()
        result = {"mode": mode, "workers": workers, "held_out_logloss": logloss,
                  "held_out_auc": float(auc.result()), "train_seconds": train_s,
                  "samples_per_s": (runtime.next_step - done) * g / train_s,
                  "cache_hit_ratio": stats["cache_hit_ratio"], "bytes": stats["bytes"],
                  "rows": stats["rows"]}
        print(f"held-out: logloss {logloss:.4f}  AUC {result['held_out_auc']:.4f}  "
              f"({n_val} samples); trained {runtime.next_step - done} steps in "
              f"{train_s:.1f}s", flush=True)
        if mode == "herald":
            rows = compare_policies(samples, g, runtime.config.scheduler_config(
                _flag("embedding-size"), optimizer.kind))
            result["rows_per_sample"] = rows
            print(f"embedding rows moved per sample on this data (one epoch, same schedule): "
                  f"ps {rows['ps']:.2f}, het(bound 0) {rows['het']:.2f}, herald "
                  f"{rows['herald']:.2f} = {rows['herald'] / rows['het']:.2f}x het, "
                  f"{rows['herald'] / rows['ps']:.2f}x ps", flush=True)
        if _flag("metrics-json"):
            with open(_flag("metrics-json"), "w") as f:
                json.dump(result, f, indent=2)
    runtime.close()
    if transport is not None:
        transport.close()


if __name__ == "__main__":
    app.run(main)
