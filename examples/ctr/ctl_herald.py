"""A tf.distribute custom training loop with ``HeraldEmbedding`` (local mode), on synthetic Criteo.

Next to the ``model.fit`` examples, this shows the same training written by hand::

    python examples/ctr/ctl_herald.py --epochs 2 --batch-size 256 --steps 50

- ``strategy.run(train_step, ...)`` over ``strategy.distribute_datasets_from_function(...)``
  under ``tf.distribute.MirroredStrategy`` with one CPU device;
- the embedding rows are ``HeraldEmbedding(mode="local")`` tables (the single-process reference
  of DESIGN §2a): the step watches each table's storage, takes its gradient (an
  ``IndexedSlices`` over the touched slots) and applies it with herald's sparse optimizer
  (``layer.apply_embedding_gradients``, i.e. ``herald_tf.ops.sparse_apply``); the Keras
  optimizer trains the dense weights only;
- the loss is ``tf.nn.compute_average_loss`` (sum over the replica's samples / global batch), so
  gradients are ∂(Σ loss)/G as DESIGN §2a asks;
- per epoch it prints the training loss and AUC, then the held-out logloss and AUC (inference
  creates no rows: unseen keys read their deterministic initial value).

Local mode keeps one table per process, so this example runs one replica; the parameter-server
modes (``WorkerRuntime.scope()``) are what shares tables between replicas and workers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags of the example."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2, help="passes over the training samples")
    p.add_argument("--steps", type=int, default=None,
                   help="at most this many steps per epoch (default: the whole training set)")
    p.add_argument("--batch-size", type=int, default=256, help="global batch size")
    p.add_argument("--num-samples", type=int, default=20_000,
                   help="synthetic samples (the last 10%% are held out)")
    p.add_argument("--synthetic-scale", type=float, default=0.001,
                   help="factor on Criteo's cardinalities")
    p.add_argument("--embedding-size", type=int, default=8, help="embedding width")
    p.add_argument("--learning-rate", type=float, default=0.05,
                   help="embedding (Adagrad) learning rate")
    p.add_argument("--dense-learning-rate", type=float, default=1e-3,
                   help="dense (Adam) learning rate")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.epochs < 1 or a.batch_size < 1 or a.num_samples < 10 * a.batch_size // 9 + 1:
        p.error("Expected --epochs >= 1, --batch-size >= 1 and --num-samples large enough for "
                "one training batch")
    if a.steps is not None and a.steps < 1:
        p.error(f"Expected --steps >= 1. Received: {a.steps}")
    return a


def build_model(num_fields: int, num_dense: int, dim: int, capacity: int, lr: float, seed: int):
    """A small Wide & Deep model: deep MLP over the field embeddings and the dense features,
    plus a wide (1-wide, summed) embedding of the same keys. Returns (model, herald tables)."""
    import keras

    from herald_tf import InitializerConfig, OptimizerConfig
    from herald_tf.keras import HeraldEmbedding

    optimizer = OptimizerConfig("adagrad", learning_rate=lr)
    init = InitializerConfig("uniform", -0.05, 0.05)
    deep_table = HeraldEmbedding(dim, capacity=capacity, combiner="none", optimizer=optimizer,
                                 initializer=init, seed=seed + 1, mode="local",
                                 name="deep_embedding")
    wide_table = HeraldEmbedding(1, capacity=capacity, combiner="sum", optimizer=optimizer,
                                 initializer=init, seed=seed + 2, mode="local",
                                 name="wide_embedding")
    keys = keras.Input((num_fields,), dtype="int64", name="categorical")
    numeric = keras.Input((num_dense,), name="dense")
    x = keras.layers.Concatenate()([keras.layers.Flatten()(deep_table(keys)), numeric])
    for i, units in enumerate((64, 32)):
        x = keras.layers.Dense(units, activation="relu", name=f"deep_{i}",
                               kernel_initializer=keras.initializers.GlorotUniform(seed + i))(x)
    deep = keras.layers.Dense(1, name="deep_logit",
                              kernel_initializer=keras.initializers.GlorotUniform(seed + 9))(x)
    logit = keras.layers.Add(name="logit")([deep, wide_table(keys)])
    model = keras.Model({"categorical": keys, "dense": numeric}, logit, name="wdl_ctl")
    return model, [deep_table, wide_table]


def make_train_step(model: Any, tables: list[Any], dense_optimizer: Any, global_batch: int
                    ) -> Callable[[dict, Any], tuple[Any, Any]]:
    """The per-replica step for ``strategy.run``: returns (this replica's share of the mean
    loss, click probabilities). Dense weights go to ``dense_optimizer``; each table's storage
    gradient goes to herald's sparse optimizer."""
    import tensorflow as tf

    def train_step(x: dict, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            for table in tables:  # the rows are not Keras weights: watch the storage
                tape.watch(table.storage.value)
            logits = model(x, training=True)
            per_sample = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.nn.compute_average_loss(per_sample[:, 0], global_batch_size=global_batch)
        dense_vars = model.trainable_variables
        grads = tape.gradient(loss, dense_vars + [t.storage.value for t in tables])
        dense_optimizer.apply_gradients(zip(grads[:len(dense_vars)], dense_vars))
        for table, grad in zip(tables, grads[len(dense_vars):]):
            if grad is not None:  # an IndexedSlices over this step's slots
                table.apply_embedding_gradients(grad)
        return loss, tf.sigmoid(logits)

    return train_step


def main(argv: list[str] | None = None) -> int:
    """Trains and prints per-epoch metrics; returns the process exit code."""
    args = parse_args(argv)
    import keras
    import numpy as np
    import tensorflow as tf

    from herald_tf.data.synthetic import SyntheticConfig, SyntheticCriteo

    config = SyntheticConfig(scale=args.synthetic_scale, seed=args.seed)
    data = SyntheticCriteo(config).batch(args.num_samples)
    n_train = args.num_samples - args.num_samples // 10
    keys, dense = data.keys, data.dense.astype(np.float32)
    labels = data.labels.astype(np.float32)[:, None]
    capacity = sum(config.cardinalities) + keys.shape[1]  # every distinct key of the trace

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    if strategy.num_replicas_in_sync != 1:
        raise ValueError("Expected one replica: local-mode tables are per process. Received: "
                         f"{strategy.num_replicas_in_sync} replicas")
    global_batch = args.batch_size
    steps_per_epoch = n_train // global_batch
    if args.steps is not None:
        steps_per_epoch = min(steps_per_epoch, args.steps)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(global_batch)
        ds = tf.data.Dataset.from_tensor_slices(
            ({"categorical": keys[:n_train], "dense": dense[:n_train]}, labels[:n_train]))
        ds = ds.shard(context.num_input_pipelines, context.input_pipeline_id)
        return ds.batch(per_replica, drop_remainder=True).prefetch(2)

    with strategy.scope():
        model, tables = build_model(keys.shape[1], dense.shape[1], args.embedding_size,
                                    capacity, args.learning_rate, args.seed)
        dense_optimizer = keras.optimizers.Adam(args.dense_learning_rate)
        dense_optimizer.build(model.trainable_variables)
    dist_data = strategy.distribute_datasets_from_function(dataset_fn)

    train_step = make_train_step(model, tables, dense_optimizer, global_batch)

    @tf.function
    def distributed_step(x: dict, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        loss, probs = strategy.run(train_step, args=(x, y))
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        return (total, strategy.gather(probs, axis=0), strategy.gather(y, axis=0))

    @tf.function
    def predict(x: dict) -> tf.Tensor:
        return tf.sigmoid(model(x, training=False))

    val_x = {"categorical": keys[n_train:], "dense": dense[n_train:]}
    val_y = labels[n_train:]
    print(f"replicas {strategy.num_replicas_in_sync}, train {n_train} samples, "
          f"{steps_per_epoch} steps/epoch of {global_batch}, validation {len(val_y)}", flush=True)
    for epoch in range(1, args.epochs + 1):
        auc = keras.metrics.AUC(num_thresholds=1000)
        losses = []
        start = time.perf_counter()
        iterator = iter(dist_data)
        for _ in range(steps_per_epoch):
            x, y = next(iterator)
            loss, probs, y_all = distributed_step(x, y)
            losses.append(float(loss))
            auc.update_state(y_all, probs)
        seconds = time.perf_counter() - start
        train_loss = float(np.mean(losses))
        probs = predict(val_x).numpy()
        val_auc = keras.metrics.AUC(num_thresholds=1000)
        val_auc.update_state(val_y, probs)
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        val_logloss = float(-np.mean(val_y * np.log(p) + (1 - val_y) * np.log(1 - p)))
        rows = sum(int(t.rows_used.numpy()) for t in tables)
        print(f"epoch {epoch}: loss {train_loss:.5f} auc {float(auc.result()):.4f} | "
              f"val logloss {val_logloss:.5f} val auc {float(val_auc.result()):.4f} | "
              f"{steps_per_epoch * global_batch / seconds:.0f} samples/s, {rows} rows",
              flush=True)
        if not math.isfinite(train_loss):
            print("non-finite loss", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
