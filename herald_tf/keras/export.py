"""Export for serving: a SavedModel that plain TensorFlow runs, without herald_tf or its ops.

``export_for_serving(model, path)`` replaces every ``HeraldEmbedding`` by a lookup in stock
TensorFlow: the trained rows of each table as a key-sorted ``keys`` variable and a ``values``
variable, found with ``tf.searchsorted`` (never key tables as graph constants: 2 GB GraphDef
limit). A key that was never trained reads its deterministic initial value (``default=
"initial"``, the value training would have started from) or zeros (``default="zeros"``).
The ``serving_default`` signature takes the model's raw inputs (int64 keys, float features) and
returns its prediction. Memory: the exporter holds one table at a time plus the saved
variables; tables come from the layers (``local`` mode) or from a PS checkpoint (distributed).

``initial_rows`` recomputes the deterministic initializer of kernels/core/initializer.h with
uint64 xor/shift/multiply and float32 casts: for the uniform initializer the bits equal the
op's; the normal one depends on the platform's log/cos (a few ulp).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from herald_tf.config import InitializerConfig, InitializerKind, TableConfig

_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def _u64(value: int) -> tf.Tensor:
    return tf.constant(value, tf.uint64)


def _mix64(x: tf.Tensor) -> tf.Tensor:
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(30)))
    x = tf.math.multiply(x, _u64(0xBF58476D1CE4E5B9))
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(27)))
    x = tf.math.multiply(x, _u64(0x94D049BB133111EB))
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, _u64(31)))


def _unit(bits: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.bitwise.right_shift(bits, _u64(40)), tf.float32) * (1.0 / 16777216.0)


def _init_bits(seed: int, keys: tf.Tensor, counters: tf.Tensor) -> tf.Tensor:
    """InitBits(seed, key, counter) for keys [n] x counters [c] -> [n, c] uint64."""
    inner = _mix64(tf.bitwise.bitwise_xor(tf.bitcast(keys, tf.uint64), _mix64(_u64(seed))))
    salt = tf.math.multiply(counters + _u64(1), _u64(_GOLDEN_GAMMA))
    return _mix64(tf.bitwise.bitwise_xor(inner[:, tf.newaxis], salt[tf.newaxis, :]))


def initial_rows(keys: tf.Tensor, dim: int, seed: int, initializer: InitializerConfig) -> tf.Tensor:
    """Initial rows [n, dim] of int64 ``keys`` with stock TF ops (no herald op library)."""
    keys = tf.convert_to_tensor(keys, tf.int64)
    columns = tf.range(dim, dtype=tf.int64)
    if initializer.kind == InitializerKind.ZEROS:
        return tf.zeros([tf.size(keys), dim], tf.float32)
    if initializer.kind == InitializerKind.UNIFORM:
        u = _unit(_init_bits(seed, keys, tf.cast(columns, tf.uint64)))
        low, high = tf.constant(initializer.a, tf.float32), tf.constant(initializer.b, tf.float32)
        return low + u * (high - low)
    even = tf.cast(2 * columns, tf.uint64)
    u1 = _unit(_init_bits(seed, keys, even)) + (1.0 / 16777216.0)
    u2 = _unit(_init_bits(seed, keys, even + _u64(1)))
    r = tf.sqrt(-2.0 * tf.math.log(u1))
    z = r * tf.cos(tf.constant(6.28318530717958647692, tf.float32) * u2)
    return initializer.a + initializer.b * z


class ServingTable(tf.Module):
    """Trained rows of one table, looked up with stock TensorFlow ops only.

    Args:
        keys: (n,) int64 trained keys (any order).
        values: (n, dim) float32 rows of ``keys``.
        table: the table's config (dim, seed, initializer).
        combiner: the layer's pooling.
        default: ``initial`` or ``zeros``: the row of a key that is not in ``keys``.
    """

    def __init__(self, keys: np.ndarray, values: np.ndarray, table: TableConfig, combiner: str,
                 default: str = "initial") -> None:
        super().__init__(name=f"serving_{table.name}")
        if default not in ("initial", "zeros"):
            raise ValueError(f"Expected default 'initial' or 'zeros'. Received: {default!r}")
        order = np.argsort(keys, kind="stable")
        self.keys = tf.Variable(np.asarray(keys, np.int64)[order], trainable=False, name="keys")
        self.values = tf.Variable(np.asarray(values, np.float32)[order], trainable=False,
                                  name="values")
        self._table = table
        self._combiner = combiner
        self._default = default

    def rows(self, flat_keys: tf.Tensor) -> tf.Tensor:
        """Rows [n, dim] of int64 keys: trained rows, else the default."""
        size = tf.size(self.keys, out_type=tf.int64)
        index = tf.minimum(tf.searchsorted(self.keys, flat_keys, out_type=tf.int64),
                           tf.maximum(size - 1, 0))
        found = (size > 0) & tf.equal(tf.gather(self.keys, index), flat_keys)
        if self._default == "zeros":
            fallback = tf.zeros([tf.size(flat_keys), self._table.dim], tf.float32)
        else:
            fallback = initial_rows(flat_keys, self._table.dim, self._table.seed,
                                    self._table.initializer)
        return tf.where(found[:, tf.newaxis], tf.gather(self.values, index), fallback)

    def __call__(self, keys: tf.Tensor) -> tf.Tensor:
        flat = tf.reshape(keys, [-1])
        rows = self.rows(flat)
        shaped = tf.reshape(rows, tf.concat([tf.shape(keys), [self._table.dim]], 0))
        if self._combiner == "none" or keys.shape.rank == 1:
            return shaped
        total = tf.reduce_sum(shaped, axis=1)
        if self._combiner == "sum":
            return total
        length = tf.cast(tf.shape(keys)[1], tf.float32)
        return total * (1.0 / length if self._combiner == "mean" else 1.0 / tf.sqrt(length))


def trained_rows_from_layer(layer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(keys, rows) a ``local``-mode HeraldEmbedding has trained."""
    keys, slots = layer.key_to_slot.export()
    keys, slots = keys.numpy(), slots.numpy()
    keep = slots >= 0
    return keys[keep], layer.storage.numpy()[slots[keep]]


def trained_rows_from_checkpoint(directory: str, table: str, step: int | None = None
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """(keys, rows) of ``table`` in a PS checkpoint, read one shard file at a time."""
    from herald_tf.ps import checkpoint

    manifest = checkpoint.read_manifest(directory, step)
    keys, values = [], []
    for name in manifest["files"]:
        path = os.path.join(checkpoint.step_dir(directory, manifest["step"]), name)
        with np.load(path) as shard:
            meta = json.loads(bytes(shard["meta"]).decode())
            names = [t["name"] for t in meta["tables"]]
            if table not in names:
                raise ValueError(f"Expected table {table!r} in the checkpoint. Received: {names}")
            i = names.index(table)
            keys.append(shard[f"t{i}.keys"])
            values.append(shard[f"t{i}.values"])
    return np.concatenate(keys), np.concatenate(values)


def export_for_serving(model: Any, path: str, *, checkpoint_dir: str | None = None,
                       step: int | None = None, default: str = "initial") -> None:
    """Writes a SavedModel of ``model`` that plain TensorFlow serves (see the module docstring).

    ``checkpoint_dir``: read the tables from this PS checkpoint (distributed training: flush the
    workers' caches and checkpoint the PS first); otherwise from the layers (local mode).
    """
    from herald_tf.keras.embedding import HeraldEmbedding

    layers = [x for x in model._flatten_layers() if isinstance(x, HeraldEmbedding)]
    tables = []
    for layer in layers:
        if checkpoint_dir is not None:
            keys, rows = trained_rows_from_checkpoint(checkpoint_dir, layer.table.name, step)
        else:
            keys, rows = trained_rows_from_layer(layer)
        tables.append(ServingTable(keys, rows, layer.table, layer.combiner, default))
    herald_weights = {id(v) for layer in layers for v in layer.weights}
    module = tf.Module()
    module.tables = tables
    module.weights = [w.value for w in model.weights if id(w) not in herald_weights]
    spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]), model.inputs)
    if isinstance(model.input, dict):
        spec = {name: tf.TensorSpec(t.shape, t.dtype, name=name)
                for name, t in model.input.items()}

    def predict(inputs: Any) -> tf.Tensor:
        for layer, table in zip(layers, tables):
            layer._serving_table = table
        try:
            return model(inputs, training=False)
        finally:
            for layer in layers:
                layer._serving_table = None

    module.serve = tf.function(predict, input_signature=[spec])
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
