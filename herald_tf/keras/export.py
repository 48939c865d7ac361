"""Export for serving: a SavedModel that plain TensorFlow runs, without herald_tf or its ops.

``export_for_serving(model, path)`` (and ``HeraldModel.export(path)``, through ``export_model``)
replaces every ``HeraldEmbedding`` by a lookup in stock TensorFlow: the trained rows of each
table as a key-sorted ``keys`` variable and a ``values`` variable, found with ``tf.searchsorted``
(never key tables as graph constants: 2 GB GraphDef limit). A key that was never trained reads
its deterministic initial value (``default="initial"``, the value training would have started
from) or zeros (``default="zeros"``). The ``serving_default`` signature (and the ``serve``
endpoint, as Keras' export names it) takes the model's raw inputs and returns its prediction:
int64 keys as the readers produce them, or, with ``string_keys={"categorical": "criteo"}`` (or
``"avazu"``), the raw tokens of the data files, turned into the same keys by stock ops
(``criteo_keys``, ``avazu_keys``); the int64 signature stays as ``serving_int64_keys``.

Tables come from the layers (``local`` mode) or from a PS checkpoint (distributed: flush the
workers' owned rows, checkpoint the PS, pass ``checkpoint_dir=``), one shard file at a time.
They are written block by block (``export_tables``): the exporter holds a few blocks of
``block_rows`` rows, never a whole table.

``initial_rows`` recomputes the deterministic initializer of kernels/core/initializer.h with
uint64 xor/shift/multiply and float32 casts: for the uniform initializer the bits equal the
op's; the normal one depends on the platform's log/cos (a few ulp).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from herald_tf.config import InitializerConfig, InitializerKind, TableConfig
from herald_tf.keras import export_tables

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

    The variables have shape ``[None]`` and ``[None, dim]``: ``export_for_serving`` saves them
    empty and writes the rows into the SavedModel block by block (``export_tables``).

    Args:
        keys: (n,) int64 trained keys (any order), or None for an empty table.
        values: (n, dim) float32 rows of ``keys``.
        table: the table's config (dim, seed, initializer).
        combiner: the layer's pooling.
        default: ``initial`` or ``zeros``: the row of a key that is not in ``keys``.
    """

    def __init__(self, keys: np.ndarray | None, values: np.ndarray | None, table: TableConfig,
                 combiner: str, default: str = "initial") -> None:
        super().__init__(name=f"serving_{table.name}")
        if default not in ("initial", "zeros"):
            raise ValueError(f"Expected default 'initial' or 'zeros'. Received: {default!r}")
        self.keys = tf.Variable(tf.zeros([0], tf.int64), shape=[None], trainable=False,
                                name="keys")
        self.values = tf.Variable(tf.zeros([0, table.dim], tf.float32), shape=[None, table.dim],
                                  trainable=False, name="values")
        if keys is not None:
            order = np.argsort(keys, kind="stable")
            self.keys.assign(np.asarray(keys, np.int64)[order])
            self.values.assign(np.asarray(values, np.float32)[order])
        self._table = table
        self._combiner = combiner
        self._default = default

    def rows(self, flat_keys: tf.Tensor) -> tf.Tensor:
        """Rows [n, dim] of int64 keys: trained rows, else the default."""
        if self._default == "zeros":
            fallback = tf.zeros([tf.size(flat_keys), self._table.dim], tf.float32)
        else:
            fallback = initial_rows(flat_keys, self._table.dim, self._table.seed,
                                    self._table.initializer)

        def lookup() -> tf.Tensor:
            last = tf.size(self.keys, out_type=tf.int64) - 1
            index = tf.minimum(tf.searchsorted(self.keys, flat_keys, out_type=tf.int64), last)
            found = tf.equal(tf.gather(self.keys, index), flat_keys)
            return tf.where(found[:, tf.newaxis], tf.gather(self.values, index), fallback)

        return tf.cond(tf.size(self.keys) > 0, lookup, lambda: fallback)

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


# ----------------------------------------------------------------------------------------------
# Raw string tokens -> the readers' int64 keys, with stock TensorFlow ops.

def _checked(keys: tf.Tensor, bad: tf.Tensor, tokens: tf.Tensor, expected: str) -> tf.Tensor:
    """``keys``, after an assertion that no token is ``bad`` (a graph dependency, so a TF1
    session or TF Serving runs it too)."""
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                                [f"Expected {expected}. Received:", tf.boolean_mask(tokens, bad)],
                                summarize=3)
    with tf.control_dependencies([check]):
        return tf.identity(keys)


def criteo_keys(tokens: tf.Tensor) -> tf.Tensor:
    """``CriteoReader``'s int64 keys of ``[B, F]`` Criteo categorical tokens (C1.. in order).

    ``key = field << 32 | int(token, 16)`` for 1-8 hex digits (either case); an empty (missing)
    token is the reserved key ``1 << 40 | field << 32``. A token the reader would skip its line
    for (over 8 characters, not hex) fails the request with ``InvalidArgumentError``.
    """
    from herald_tf.data.criteo import _NIBBLE, EMPTY_KEY_BIT  # the reader's digit table

    tokens = tf.convert_to_tensor(tokens, tf.string)
    length = tf.cast(tf.strings.length(tokens), tf.int64)  # bytes, as the reader's ASCII
    nibbles = tf.gather(tf.constant(_NIBBLE.astype(np.int64)),
                        tf.cast(tf.io.decode_raw(tokens, tf.uint8, fixed_length=8), tf.int32))
    used = tf.range(8, dtype=tf.int64) < length[..., tf.newaxis]
    bad = (length > 8) | tf.reduce_any(used & tf.equal(nibbles, 255), axis=-1)
    value = tf.zeros_like(length)
    for j in range(8):
        value = tf.where(used[..., j], value * 16 + nibbles[..., j], value)
    fields = tf.bitwise.left_shift(tf.range(tf.shape(tokens, out_type=tf.int64)[-1]),
                                   tf.constant(32, tf.int64))
    keys = tf.where(tf.equal(length, 0), tf.bitwise.bitwise_or(fields, EMPTY_KEY_BIT),
                    tf.bitwise.bitwise_or(fields, value))
    return _checked(keys, bad, tokens, "Criteo categorical values of 1-8 hex digits or empty")


def avazu_keys(tokens: tf.Tensor) -> tf.Tensor:
    """``AvazuReader``'s ``[B, 24]`` int64 keys of ``[B, 22]`` Avazu tokens (``hour`` .. ``C21``
    in file order): hashed fields and the two fields derived from ``hour``
    (``herald_tf.data.avazu.keys_tf``). An empty token is hashed like any other, as the reader
    does; an ``hour`` that is not ``YYMMDDHH`` of a real date (a line the reader skips) fails the
    request with ``InvalidArgumentError``.
    """
    from herald_tf.data.avazu import _DAYS_IN_MONTH, keys_tf

    tokens = tf.convert_to_tensor(tokens, tf.string)
    hour = tokens[:, 0]
    digits = tf.strings.regex_full_match(hour, "[0-9]{8}")
    h = tf.strings.to_number(tf.where(digits, hour, "00010100"), tf.int64)
    year, month, day, hh = 2000 + h // 1000000, h // 10000 % 100, h // 100 % 100, h % 100
    leap = tf.equal(year % 4, 0) & (tf.not_equal(year % 100, 0) | tf.equal(year % 400, 0))
    days = tf.gather(tf.constant(_DAYS_IN_MONTH), tf.clip_by_value(month, 0, 12)) - tf.cast(
        tf.equal(month, 2) & ~leap, tf.int64)
    ok = digits & (month >= 1) & (month <= 12) & (day >= 1) & (day <= days) & (hh <= 23)
    tokens = _checked(tokens, ~ok, hour, "Avazu hour values YYMMDDHH of a real date")
    return keys_tf(tokens)


#: Raw-token formats of ``string_keys``: the function and the token width for a key width.
STRING_KEYS: dict[str, tuple[Callable[[tf.Tensor], tf.Tensor], Callable[[int], int]]] = {
    "criteo": (criteo_keys, lambda width: width),
    "avazu": (avazu_keys, lambda width: 22),
}


def _string_input(name: str, spec: tf.TensorSpec, fmt: str) -> tuple[tf.TensorSpec, Callable]:
    if fmt not in STRING_KEYS:
        raise ValueError(f"Expected string_keys formats in {sorted(STRING_KEYS)}. Received: "
                         f"{name}={fmt!r}")
    parse, width = STRING_KEYS[fmt]
    if fmt == "avazu" and spec.shape[-1] not in (None, 24):
        raise ValueError(f"Expected a [B, 24] key input for Avazu tokens. Received: {name} of "
                         f"shape {spec.shape}")
    shape = spec.shape[:-1].concatenate([width(spec.shape[-1])])
    return tf.TensorSpec(shape, tf.string, name=name), parse


# ----------------------------------------------------------------------------------------------
# The export.


def _input_spec(model: Any, input_signature: Any) -> Any:
    if input_signature is not None:
        spec = input_signature
        if isinstance(spec, list | tuple) and len(spec) == 1:  # Keras: one spec per argument
            spec = spec[0]
        return tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape, s.dtype, name=s.name),
                                     spec)
    if isinstance(model.input, dict):
        return {name: tf.TensorSpec(t.shape, t.dtype, name=name)
                for name, t in model.input.items()}
    return tf.nest.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]), model.inputs)


def export_for_serving(model: Any, path: str, *, checkpoint_dir: str | None = None,
                       step: int | None = None, default: str = "initial",
                       string_keys: Mapping[str, str] | None = None,
                       block_rows: int | None = None, input_signature: Any = None,
                       meter: export_tables.BlockMeter | None = None) -> None:
    """Writes a SavedModel of ``model`` that plain TensorFlow serves (see the module docstring).

    Args:
        model: a Keras model with ``HeraldEmbedding`` layers.
        path: the SavedModel folder.
        checkpoint_dir: read the tables from this PS checkpoint (distributed training: flush the
            workers' owned rows and checkpoint the PS first); otherwise from the layers, which
            must then be ``local``.
        step: the checkpoint's step (default: its latest complete one).
        default: ``initial`` or ``zeros``: the row of a key no table holds.
        string_keys: ``{input name: "criteo" | "avazu"}``: ``serving_default`` takes that input
            as the data file's raw tokens (a dict-input model); ``serving_int64_keys`` keeps the
            int64 keys.
        block_rows: rows per written block (default: 64 MiB of rows); bounds the memory.
        input_signature: the inputs' ``tf.TensorSpec`` structure (default: the model's inputs).
        meter: counts the largest buffer and the blocks written (tests).
    """
    from herald_tf.keras.embedding import HeraldEmbedding

    layers = [x for x in model._flatten_layers() if isinstance(x, HeraldEmbedding)]
    if checkpoint_dir is None:
        distributed = [x.name for x in layers if x.mode != "local"]
        if distributed:
            raise ValueError(
                "Expected checkpoint_dir= (a PS checkpoint of the trained rows) for layers "
                f"trained on parameter servers: their storage is only a cache. Received: "
                f"{distributed}")
    rows = [export_tables.checkpoint_rows(checkpoint_dir, x.table.name, step)
            if checkpoint_dir is not None else export_tables.layer_rows(x) for x in layers]
    tables = [ServingTable(None, None, x.table, x.combiner, default) for x in layers]
    herald_weights = {id(v) for layer in layers for v in layer.weights}
    module = tf.Module()
    module.tables = tables
    module.weights = [w if isinstance(w, tf.Variable) else w.value for w in model.weights
                      if id(w) not in herald_weights]

    def predict(inputs: Any) -> tf.Tensor:
        for layer, table in zip(layers, tables):
            layer._serving_table = table
        try:
            return model(inputs, training=False)
        finally:
            for layer in layers:
                layer._serving_table = None

    spec = _input_spec(model, input_signature)
    module.serve = tf.function(predict, input_signature=[spec])
    signatures = {"serving_default": module.serve}
    if string_keys:
        if not isinstance(spec, dict) or not set(string_keys) <= set(spec):
            raise ValueError(f"Expected string_keys to name inputs of a dict-input model. "
                             f"Received: {sorted(string_keys)} for inputs {spec}")
        parsed = {name: _string_input(name, spec[name], fmt) for name, fmt in string_keys.items()}

        def predict_tokens(inputs: dict[str, tf.Tensor]) -> tf.Tensor:
            inputs = dict(inputs)
            for name, (_, parse) in parsed.items():
                inputs[name] = parse(inputs[name])
            return predict(inputs)

        module.serve_int64_keys = module.serve
        module.serve = tf.function(predict_tokens, input_signature=[
            {name: parsed[name][0] if name in parsed else s for name, s in spec.items()}])
        signatures = {"serving_default": module.serve,
                      "serving_int64_keys": module.serve_int64_keys}
    tf.saved_model.save(module, path, signatures=signatures)
    export_tables.write_tables(path, [
        export_tables.TableEntry(f"tables/{i}/keys/.ATTRIBUTES/VARIABLE_VALUE",
                                 f"tables/{i}/values/.ATTRIBUTES/VARIABLE_VALUE", r)
        for i, r in enumerate(rows)], block_rows, meter)


def export_model(model: Any, filepath: str, verbose: bool | None = None,
                 input_signature: Any = None, **kwargs: Any) -> None:
    """``HeraldModel.export(filepath, format="tf_saved_model", ...)``: the plain-TF SavedModel
    of ``export_for_serving`` (keyword arguments go to it), with Keras' ``serve`` endpoint and
    ``serving_default`` signature."""
    export_for_serving(model, filepath, input_signature=input_signature, **kwargs)
    if verbose or verbose is None:
        print(f"Saved a plain-TensorFlow SavedModel of {model.name!r} at {filepath!r} "
              "(endpoint 'serve', signature 'serving_default'; no herald_tf needed to load it).")
