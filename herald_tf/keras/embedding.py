"""``HeraldEmbedding``: a Keras embedding layer over int64 keys, trained by herald's sparse path.

The layer reads like ``keras.layers.Embedding`` but its rows are not Keras-trained weights: they
live in slot storage (a non-trainable variable) and are updated by herald's fused sparse
optimizer (the same kernel the parameter server runs), driven by ``HeraldModel.train_step``.

Mode ``local`` is the single-process reference of DESIGN §2a: an in-process table with keys
mapped to slots by a hash table, rows created on first touch with the deterministic initializer.
``evaluate``/``predict`` read the table and create no rows: unseen keys get their initial value.

Saving (local mode): the layer's weights hold its whole state, the key of every slot included
(``slot_keys``), so ``save_weights``/``load_weights``, ``model.save``/``keras.saving.load_model``
and ``get_weights``/``set_weights`` round-trip the table. The hash table is only an index over
``slot_keys[:rows_used]``: it is rebuilt after weights are loaded or set, and before a lookup
whenever its size disagrees with ``rows_used`` (weights assigned by other means). In the
distributed modes the key → slot directory lives in the worker runtime (and the rows on the
parameter servers, except in ``allreduce``), so loading or setting weights there is refused:
resume with ``herald_tf.keras.checkpoint`` instead.

The layer is a Keras 3 layer, or a tf-keras one when ``TF_USE_LEGACY_KERAS=1`` (``compat``).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from herald_tf import ops
from herald_tf.config import Combiner, InitializerConfig, OptimizerConfig, TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.keras import compat
from herald_tf.keras.compat import keras
from herald_tf.keras.runtime import MODES, current_runtime

# "allreduce" too: a layer built in such a runtime reports it in get_config.
_MODES = ("local", *MODES)
_COMBINERS = tuple(c.name.lower() for c in Combiner)
_LOCAL_WEIGHTS = ("storage", "optimizer_state", "versions", "rows_used", "slot_keys")


@keras.saving.register_keras_serializable(package="herald_tf")
class HeraldEmbedding(keras.layers.Layer):
    """Embedding of int64 keys with pooling, trained by herald's sparse optimizer.

    Args:
        output_dim: embedding width.
        capacity: rows the layer's table can hold (local mode: distinct keys ever trained).
        combiner: ``sum``, ``mean``, ``sqrtn`` pool a bag of keys per sample into ``[B, dim]``;
            ``none`` returns one row per key (``[B, T, dim]``). Case-insensitive (or a
            ``Combiner``); the layer keeps the lowercase name.
        optimizer: the sparse optimizer of the rows (an ``OptimizerConfig`` or its dict).
        initializer: how a row is created on first touch (an ``InitializerConfig`` or its dict).
        seed: table seed of the deterministic initializer.
        mode: ``local`` (single process, the reference); distributed modes are set by the runtime.
        table_name: name of the table on the parameter servers (default: the layer name).
        learning_rate_schedule: a ``keras.optimizers.schedules.LearningRateSchedule`` (or its
            serialized dict) giving the rows' learning rate of each training step; without one
            the rate is ``optimizer.learning_rate`` at every step. The step is the global step
            number (0 for the first step): ``HeraldModel`` reads it from the dense optimizer's
            ``iterations`` in local mode and from the runtime in the distributed modes, so a
            worker's local apply and the parameter servers apply the same rate.
    """

    def __init__(
        self,
        output_dim: int,
        capacity: int,
        combiner: str = "sum",
        optimizer: OptimizerConfig | dict[str, Any] | None = None,
        initializer: InitializerConfig | dict[str, Any] | None = None,
        seed: int = 0,
        mode: str = "local",
        table_name: str | None = None,
        learning_rate_schedule: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"Expected mode in {_MODES}. Received: mode={mode!r}")
        if not isinstance(capacity, int) or capacity <= 0:
            raise ValueError(
                f"Expected capacity to be a positive int. Received: capacity={capacity!r}")
        combiner = _canonical_combiner(combiner)
        if isinstance(optimizer, dict):
            optimizer = OptimizerConfig.from_dict(optimizer)
        if isinstance(initializer, dict):
            initializer = InitializerConfig.from_dict(initializer)
        self.table = TableConfig(
            name=table_name or self.name,
            dim=output_dim,
            seed=seed,
            initializer=initializer or InitializerConfig(),
            optimizer=optimizer or OptimizerConfig(),
        )
        self.output_dim = output_dim
        self.capacity = capacity
        self.combiner = combiner
        self.mode = mode
        self.learning_rate_schedule = _schedule(learning_rate_schedule)
        self._runtime = None
        self._serving_table = None  # set by export_for_serving while it traces

    def build(self, input_shape: Any = None) -> None:
        if self.built:
            return
        # Built inside WorkerRuntime.scope(): a distributed mode whose storage holds the
        # scheduler's cache and staging slots.
        self._runtime = current_runtime()
        slots = self.capacity
        if self._runtime is not None:
            self.mode = self._runtime.config.mode
            self._runtime.register(self)
            slots = self._runtime.total_slots
        elif self.mode != "local":
            raise ValueError(f"Expected HeraldEmbedding(mode={self.mode!r}) to be built inside "
                             "a WorkerRuntime.scope(). Received: no active runtime")
        self.storage = self.add_weight(
            shape=(slots, self.output_dim), initializer="zeros", trainable=False,
            name="storage",
        )
        self.optimizer_state = self.add_weight(
            shape=(slots, self.table.state_width), initializer="zeros", trainable=False,
            name="optimizer_state",
        )
        self.versions = self.add_weight(
            shape=(slots,), initializer="zeros", dtype="int64", trainable=False,
            name="versions",
        )
        self.rows_used = self.add_weight(
            shape=(), initializer="zeros", dtype="int64", trainable=False, name="rows_used"
        )
        if self._runtime is None:
            # The key of each used slot: the key map as a weight, so that every way Keras
            # saves, restores or copies weights carries it (key_to_slot is only its index).
            self.slot_keys = self.add_weight(
                shape=(slots,), initializer="zeros", dtype="int64", trainable=False,
                name="slot_keys",
            )
        self.key_to_slot = tf.lookup.experimental.MutableHashTable(
            key_dtype=tf.int64, value_dtype=tf.int64, default_value=-1, name="key_to_slot"
        )
        self.built = True

    def call(self, keys: Any, training: bool | None = None) -> tf.Tensor:
        keys = _as_int64_keys(keys)
        if self._serving_table is not None:  # stock-TF lookup for an exported model
            return self._serving_table(keys)
        if self._runtime is not None:
            return self._call_distributed(keys, training)
        flat = keys.values if isinstance(keys, tf.RaggedTensor) else tf.reshape(keys, [-1])
        unique_keys, position = tf.unique(flat, out_idx=tf.int64)
        with tf.control_dependencies([self._sync_key_map()]):
            slots = tf.reshape(self.key_to_slot.lookup(unique_keys), [-1])
        if training:
            slots = self._create_rows(unique_keys, slots)
            slot_ids = _restore(tf.gather(slots, position), keys)
            return ops.lookup(self.storage, slot_ids, self.combiner)
        # Inference creates no rows: unseen keys read their deterministic initial value.
        known = slots >= 0
        stored = ops.gather_rows(self.storage, tf.where(known, slots, tf.zeros_like(slots)))
        initial = ops.init_rows(unique_keys, self.output_dim, self.table.seed,
                                self.table.initializer)
        rows = tf.where(known[:, tf.newaxis], stored, initial)
        return _pool(_restore(tf.gather(rows, position), keys), self.combiner)

    def _call_distributed(self, keys: tf.Tensor, training: bool | None) -> tf.Tensor:
        """Training: gather at the slots of this step's plan. Inference: read the PS."""
        if isinstance(keys, tf.RaggedTensor):
            raise ValueError("Expected dense [B, F] keys in distributed modes. Received: ragged")
        if training:
            slots = tf.py_function(self._runtime.slots, [keys], tf.int64)
            slots = tf.ensure_shape(slots, keys.shape)
            return ops.lookup(self.storage, slots, self.combiner)
        flat = tf.reshape(keys, [-1])
        unique_keys, position = tf.unique(flat, out_idx=tf.int64)
        rows = tf.py_function(lambda k: self._runtime.read_rows(self.table.name, k),
                              [unique_keys], tf.float32)
        rows = tf.ensure_shape(rows, [None, self.output_dim])
        return _pool(_restore(tf.gather(rows, position), keys), self.combiner)

    def _create_rows(self, unique_keys: tf.Tensor, slots: tf.Tensor) -> tf.Tensor:
        """Assigns fresh slots to keys seen for the first time and writes their initial rows."""
        new = slots < 0
        new_keys = tf.boolean_mask(unique_keys, new)
        count = tf.size(new_keys, out_type=tf.int64)
        first = compat.tf_variable(self.rows_used)
        tf.debugging.assert_less_equal(
            first + count, tf.constant(self.capacity, tf.int64),
            message=f"HeraldEmbedding '{self.name}' is full: more distinct keys than its capacity "
            f"({self.capacity}). Raise capacity.",
        )
        new_slots = first + tf.range(count, dtype=tf.int64)
        with tf.control_dependencies([
            self.key_to_slot.insert(new_keys, new_slots),
            ops.local_variable(self.slot_keys).scatter_update(
                tf.IndexedSlices(new_keys, new_slots)),
        ]):
            self.rows_used.assign_add(count)
        rows = ops.init_rows(new_keys, self.output_dim, self.table.seed, self.table.initializer)
        state = tf.fill([count, self.table.state_width], _initial_state(self.table.optimizer))
        with tf.control_dependencies([
            ops.scatter_rows(self.storage, new_slots, rows),
            ops.scatter_rows(self.optimizer_state, new_slots, state)
            if self.table.state_width else tf.no_op(),
        ]):
            filled = tf.tensor_scatter_nd_update(
                slots, tf.where(new), new_slots
            )
            return tf.identity(filled)

    def _sync_key_map(self) -> tf.Tensor:
        """Rebuilds the key map from ``slot_keys`` when its size is not ``rows_used``: the
        weights were assigned without ``load_own_variables``/``set_weights`` (e.g. a plain
        ``keras.Model.set_weights`` or a tf-keras ``.h5`` load). Returns whether it rebuilt."""
        used = tf.convert_to_tensor(ops.local_variable(self.rows_used))
        return tf.cond(tf.equal(self.key_to_slot.size(), used),
                       lambda: tf.constant(False), self._rebuild_key_map)

    def _rebuild_key_map(self) -> tf.Tensor:
        """Makes the key map exactly ``slot_keys[:rows_used]`` → their slots."""
        used = tf.convert_to_tensor(ops.local_variable(self.rows_used))
        stale_keys, _ = self.key_to_slot.export()
        with tf.control_dependencies([self.key_to_slot.remove(stale_keys)]):
            keys = tf.convert_to_tensor(ops.local_variable(self.slot_keys))[:used]
            insert = self.key_to_slot.insert(keys, tf.range(used, dtype=tf.int64))
        with tf.control_dependencies([insert]):
            return tf.constant(True)

    def _refuse_restore_outside_local(self, call: str) -> None:
        if self._runtime is not None:
            where = "" if self.mode == "allreduce" else " and its rows on the parameter servers"
            raise InvalidArgumentError(
                f"Expected a local-mode HeraldEmbedding for {call}. Received: layer "
                f"'{self.name}' in mode {self.mode!r}, whose key -> slot directory lives in the "
                f"worker runtime{where}, which weights do not carry. Resume a distributed run "
                "with herald_tf.keras.checkpoint (HeraldCheckpoint, load_worker).")

    def load_own_variables(self, store: Any) -> None:
        """Keras 3 loading (``load_weights``, ``load_model``): the weights, then the key map."""
        self._refuse_restore_outside_local("load_weights/load_model")
        if self.built and len(store.keys()) != len(_LOCAL_WEIGHTS):
            raise InvalidArgumentError(
                f"Expected {len(_LOCAL_WEIGHTS)} variables {_LOCAL_WEIGHTS} for HeraldEmbedding "
                f"'{self.name}'. Received: {len(store.keys())} in the file (one written before "
                "the key map was saved, without slot_keys, cannot match rows to their keys).")
        super().load_own_variables(store)
        self._rebuild_key_map()

    def set_weights(self, weights: list[Any]) -> None:
        """Sets the weights (``get_weights`` order), then rebuilds the key map from them."""
        self._refuse_restore_outside_local("set_weights")
        super().set_weights(weights)
        if self.built:
            self._rebuild_key_map()

    def learning_rate_at(self, step: Any) -> tf.Tensor:
        """The rows' learning rate (float32) of global training step ``step``: the schedule's
        value there, or ``optimizer.learning_rate`` when the layer has no schedule."""
        if self.learning_rate_schedule is None:
            return tf.constant(self.table.optimizer.learning_rate, tf.float32)
        return tf.cast(self.learning_rate_schedule(step), tf.float32)

    def apply_embedding_gradients(self, gradient: tf.IndexedSlices,
                                  learning_rate: Any = None, step: Any = None) -> Any:
        """Applies this step's (deduplicated) storage gradient with the table's sparse optimizer,
        at ``learning_rate`` if given, else at ``learning_rate_at(step)``; a layer with a
        schedule needs one of them."""
        if learning_rate is None and step is not None:
            learning_rate = self.learning_rate_at(step)
        elif learning_rate is None and self.learning_rate_schedule is not None:
            raise InvalidArgumentError(
                f"Expected the step (or the learning rate) of this update of HeraldEmbedding "
                f"'{self.name}', whose learning rate follows a schedule. Received: neither; "
                "call apply_embedding_gradients(gradient, step=...)")
        return ops.sparse_apply(
            self.storage, self.optimizer_state, self.versions, gradient.indices, gradient.values,
            self.table.optimizer, learning_rate,
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        batch = input_shape[0]
        if self.combiner == "none" and len(input_shape) == 2:
            return (batch, input_shape[1], self.output_dim)
        return (batch, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({
            "output_dim": self.output_dim,
            "capacity": self.capacity,
            "combiner": self.combiner,
            "optimizer": self.table.optimizer.to_dict(),
            "initializer": self.table.initializer.to_dict(),
            "seed": self.table.seed,
            "mode": self.mode,
            "table_name": self.table.name,
            "learning_rate_schedule": None if self.learning_rate_schedule is None
            else keras.optimizers.schedules.serialize(self.learning_rate_schedule),
        })
        return config


def _schedule(schedule: Any) -> Any:
    """A learning-rate schedule given as one or as its serialized dict (None stays None)."""
    if isinstance(schedule, dict):
        schedule = keras.optimizers.schedules.deserialize(schedule)
    if schedule is None or isinstance(schedule,
                                      keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    raise InvalidArgumentError(
        "Expected learning_rate_schedule to be a keras.optimizers.schedules."
        f"LearningRateSchedule or its serialized dict. Received: {schedule!r}")


def _canonical_combiner(combiner: Any) -> str:
    """The lowercase name of a combiner given by name (any case) or as a ``Combiner``."""
    if isinstance(combiner, Combiner):
        return combiner.name.lower()
    if isinstance(combiner, str) and combiner.lower() in _COMBINERS:
        return combiner.lower()
    raise InvalidArgumentError(
        f"Expected combiner to be one of {', '.join(_COMBINERS)}. Received: combiner={combiner!r}")


def _initial_state(optimizer: OptimizerConfig) -> float:
    return optimizer.initial_accumulator if optimizer.state_width_per_dim == 1 else 0.0


def _as_int64_keys(keys: Any) -> Any:
    if isinstance(keys, tf.RaggedTensor):
        if keys.dtype != tf.int64:
            raise TypeError(f"Expected int64 keys. Received: dtype={keys.dtype.name}")
        return keys
    keys = tf.convert_to_tensor(keys)
    if keys.dtype != tf.int64:
        raise TypeError(
            f"Expected int64 keys (hash strings with tf.strings.to_hash_bucket_fast or use "
            f"herald_tf.data readers). Received: dtype={keys.dtype.name}"
        )
    return keys


def _restore(flat: tf.Tensor, keys: Any) -> Any:
    """Puts per-key values (leading dimension = number of keys) back into the keys' structure."""
    if isinstance(keys, tf.RaggedTensor):
        return keys.with_values(flat)
    return tf.reshape(flat, tf.concat([tf.shape(keys), tf.shape(flat)[1:]], 0))


def _pool(rows: Any, combiner: str) -> tf.Tensor:
    """Stock-TF pooling of per-key rows with the semantics of the Lookup op."""
    if combiner == "none" or rows.shape.rank == 2:  # no pooling, or [B] keys: one row each
        return rows
    total = tf.reduce_sum(rows, axis=1)
    if combiner == "sum":
        return total
    if isinstance(rows, tf.RaggedTensor):
        length = tf.cast(rows.row_lengths(), tf.float32)[:, tf.newaxis]
    else:
        length = tf.cast(tf.shape(rows)[1], tf.float32) * tf.ones_like(total[:, :1])
    scale = 1.0 / length if combiner == "mean" else 1.0 / tf.sqrt(length)
    return tf.where(length > 0, total * scale, tf.zeros_like(total))
