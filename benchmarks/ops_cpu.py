"""CPU op benchmark: herald's fused lookup and dedup+Adagrad against TensorFlow's stock paths.

One run, same process, same data: a (1M x 64) float32 table, a batch of 4096 samples x 26
zipf-skewed keys (sum pooling). Reported as ratios measured in this run:
  lookup_speedup_vs_tf   Herald>Lookup(sum)  vs  tf.nn.embedding_lookup_sparse(combiner="sum")
  adagrad_speedup_vs_tf  Herald>LookupGrad + Herald>SparseApply(adagrad) from the pooled
                         gradient (what a training step hands over)  vs  tf.unique +
                         tf.math.unsorted_segment_sum + ResourceSparseApplyAdagradV2 from the
                         per-key gradients (what TF's embedding gradient hands over)
  adagrad_speedup_vs_tf_per_key  the same dedup+apply with both sides given per-key gradients
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved_seconds, machine, parse_args, print_table, write_json  # noqa: E402

from herald_tf import OptimizerConfig, ops  # noqa: E402


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    rows, dim = (200_000, 64) if args.quick else (1_000_000, 64)
    batch, fields = 4096, 26
    repeats = 10 if args.quick else 40
    rng = np.random.default_rng(0)
    ids = np.minimum(rng.zipf(1.05, size=batch * fields) - 1, rows - 1).astype(np.int64)
    ids = rng.permutation(rows)[ids]  # hot keys spread over the table, not its first rows
    table = tf.Variable(rng.normal(size=(rows, dim)).astype(np.float32))
    dense_ids = tf.constant(ids.reshape(batch, fields))
    sparse = tf.sparse.SparseTensor(
        np.stack([np.repeat(np.arange(batch), fields), np.tile(np.arange(fields), batch)], 1),
        ids, [batch, fields])

    herald_lookup = tf.function(lambda: ops.lookup(table, dense_ids, "sum"))
    tf_lookup = tf.function(
        lambda: tf.nn.embedding_lookup_sparse(table, sparse, None, combiner="sum"))
    np.testing.assert_allclose(herald_lookup().numpy(), tf_lookup().numpy(), rtol=1e-4, atol=1e-5)
    lookups = interleaved_seconds({"herald": lambda: herald_lookup().numpy(),
                                   "tf": lambda: tf_lookup().numpy()}, repeats)
    t_herald_lookup, t_tf_lookup = lookups["herald"], lookups["tf"]

    config = OptimizerConfig("adagrad", learning_rate=0.01)
    accum = tf.Variable(tf.fill([rows, dim], 0.1))
    versions = tf.Variable(tf.zeros([rows], tf.int64))
    pooled_grad = tf.constant(rng.normal(size=(batch, dim)).astype(np.float32))
    per_key_grad = tf.repeat(pooled_grad, fields, axis=0)  # d(sum pooling)/d(row), per key
    flat_ids = tf.constant(ids)

    @tf.function
    def herald_apply(grad: tf.Tensor, combiner: str) -> tf.Tensor:
        keys = dense_ids if combiner == "sum" else flat_ids
        unique, summed = ops.lookup_grad(grad, keys, combiner)
        ops.sparse_apply(table, accum, versions, unique, summed, config)
        return tf.size(unique)

    @tf.function
    def tf_apply() -> tf.Tensor:
        unique, index = tf.unique(flat_ids)
        summed = tf.math.unsorted_segment_sum(per_key_grad, index, tf.size(unique))
        tf.raw_ops.ResourceSparseApplyAdagradV2(
            var=table.handle, accum=accum.handle, lr=tf.constant(0.01), epsilon=tf.constant(1e-7),
            grad=summed, indices=unique)
        return tf.size(unique)

    applies = interleaved_seconds({
        "herald": lambda: herald_apply(pooled_grad, "sum").numpy(),
        "herald_per_key": lambda: herald_apply(per_key_grad, "none").numpy(),
        "tf": lambda: tf_apply().numpy(),
    }, repeats)
    t_herald_apply, t_herald_apply_key, t_tf_apply = (
        applies["herald"], applies["herald_per_key"], applies["tf"])
    unique_keys = int(tf.size(tf.unique(flat_ids)[0]))

    result = {
        "table_rows": rows, "dim": dim, "batch": batch, "fields": fields,
        "unique_keys": unique_keys, "quick": args.quick, "machine": machine(),
        "herald_lookup_ms": t_herald_lookup * 1e3, "tf_lookup_ms": t_tf_lookup * 1e3,
        "lookup_speedup_vs_tf": t_tf_lookup / t_herald_lookup,
        "herald_adagrad_ms": t_herald_apply * 1e3,
        "herald_adagrad_per_key_ms": t_herald_apply_key * 1e3,
        "tf_adagrad_ms": t_tf_apply * 1e3,
        "adagrad_speedup_vs_tf": t_tf_apply / t_herald_apply,
        "adagrad_speedup_vs_tf_per_key": t_tf_apply / t_herald_apply_key,
        "goals": {"lookup_speedup_vs_tf": 2.0, "adagrad_speedup_vs_tf": 2.0},
    }
    print_table(
        f"ops_cpu: {rows} x {dim} table, {batch} x {fields} zipf keys ({unique_keys} unique), "
        f"{os.cpu_count()} cores",
        [("lookup+sum", f"{t_herald_lookup * 1e3:.2f}", f"{t_tf_lookup * 1e3:.2f}",
          f"{result['lookup_speedup_vs_tf']:.2f}x"),
         ("dedup+adagrad (pooled grad)", f"{t_herald_apply * 1e3:.2f}", f"{t_tf_apply * 1e3:.2f}",
          f"{result['adagrad_speedup_vs_tf']:.2f}x"),
         ("dedup+adagrad (per-key grad)", f"{t_herald_apply_key * 1e3:.2f}",
          f"{t_tf_apply * 1e3:.2f}", f"{result['adagrad_speedup_vs_tf_per_key']:.2f}x")],
        ("path", "herald ms", "tf ms", "speedup"),
    )
    print("wrote", write_json("ops_cpu", result, args.out))


if __name__ == "__main__":
    main()
