"""``HeraldModel``: a Keras model whose ``train_step`` also trains ``HeraldEmbedding`` tables.

Dense weights are trained by the Keras optimizer given to ``compile`` as usual; every
``HeraldEmbedding``'s rows are trained by herald's sparse optimizer from the deduplicated
gradient of its storage (DESIGN §2a "Reference"). Use it like ``keras.Model`` (functional or
subclassed); ``fit``, ``evaluate``, ``predict``, callbacks and ``steps_per_execution`` work as
usual, under Keras 3 and under tf-keras (``TF_USE_LEGACY_KERAS=1``; see ``compat``).
``save_weights``/``load_weights``, ``save``/``keras.saving.load_model`` and ``get_weights``/
``set_weights`` carry local tables whole, key maps included (``HeraldEmbedding``); distributed
tables are restored with ``herald_tf.keras.checkpoint`` instead.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from herald_tf.dense.types import DenseSync
from herald_tf.errors import InvalidArgumentError
from herald_tf.keras import compat
from herald_tf.keras.compat import keras
from herald_tf.keras.embedding import HeraldEmbedding
from herald_tf.keras.runtime import STEP_FEATURE, py_step


def herald_embeddings(model: keras.Model) -> list[HeraldEmbedding]:
    """Every ``HeraldEmbedding`` inside ``model`` (nested layers included), in a stable order."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, HeraldEmbedding)]


# Keras optimizer options that would act on the dense weights only, never on the embedding rows
# (herald's sparse optimizer updates those every step from the unclipped, unscaled gradient):
# (attribute, what would diverge).
_DENSE_ONLY_OPTIONS = (
    ("clipnorm", "the sparse embedding gradients would not be clipped with the dense ones"),
    ("global_clipnorm", "the sparse embedding gradients would not be clipped with the dense ones"),
    ("clipvalue", "the sparse embedding gradients would not be clipped like the dense ones"),
    ("weight_decay", "embedding rows would not decay"),
    ("gradient_accumulation_steps",
     "dense weights would update every k steps while embedding rows update every step"),
    ("use_ema", "the moving average would cover the dense weights only, not the embedding rows"),
    ("loss_scale_factor",
     "the optimizer unscales the dense gradients only: embedding rows would get scaled ones"),
)


def check_supported(model: keras.Model, optimizer: Any) -> None:
    """Refuses, at compile time, what the sparse embedding path does not support (DESIGN §2a)."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "herald_tf needs Keras' TensorFlow backend. Received: KERAS_BACKEND="
            f"{keras.backend.backend()}"
        )
    opt = keras.optimizers.get(optimizer) if optimizer is not None else None
    if opt is not None:
        for attr, why in _DENSE_ONLY_OPTIONS:
            # tf-keras optimizers lack some of these attributes: absent means off.
            if getattr(opt, attr, None):
                raise InvalidArgumentError(
                    f"Expected a Keras optimizer without {attr}: herald_tf does not support it "
                    f"yet ({why}). Received: {attr}={getattr(opt, attr)!r}")
        if compat.is_loss_scale_optimizer(opt):
            raise ValueError("herald_tf does not support mixed precision (loss scaling) yet.")
    if compat.dtype_policy_name() != "float32":
        raise ValueError(
            "herald_tf does not support mixed precision yet. Received: dtype policy "
            f"{compat.dtype_policy_name()}"
        )


@keras.saving.register_keras_serializable(package="herald_tf")
class HeraldModel(keras.Model):
    """A ``keras.Model`` that trains ``HeraldEmbedding`` rows with herald's sparse optimizer.

    ``compile(..., dense_sync=sync)`` (a ``herald_tf.dense.DenseSync``) makes ``train_step``
    combine dense gradients over the workers and scale embedding gradients as that backend
    requires (DESIGN §2a "Gradient scale"); without it the model trains as one process.
    """

    dense_sync: DenseSync | None = None

    def compile(self, optimizer: Any = "rmsprop", *args: Any, jit_compile: Any = False,
                dense_sync: DenseSync | None = None, **kwargs: Any) -> None:
        check_supported(self, optimizer)
        self.dense_sync = dense_sync
        if jit_compile not in (False, "auto", None):
            raise ValueError(
                "herald_tf's ops do not run under XLA: compile with jit_compile=False.")
        steps = kwargs.get("steps_per_execution", 1)
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and steps != 1:
            # Keras 3.15's multi-step loop fails under MultiWorkerMirroredStrategy ("You must
            # feed a value for placeholder" in its while/cond); one step per execution works.
            raise ValueError(
                "Expected steps_per_execution=1 under MultiWorkerMirroredStrategy (Keras' "
                f"multi-step loop fails there). Received: steps_per_execution={steps}")
        super().compile(optimizer, *args, jit_compile=False, **kwargs)
        if dense_sync is not None:
            dense_sync.check_model(self)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Compiles a model restored by ``keras.saving.load_model`` (Keras skips an overridden
        ``compile``). ``dense_sync`` belongs to the running processes and is not saved: compile
        again to pass one."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        # As Keras does: the optimizer's variables must exist before the file's state loads
        # into them (tf-keras' legacy optimizers have no build).
        if self.built and hasattr(self.optimizer, "build"):
            self.optimizer.build(self.trainable_variables)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        tables = herald_embeddings(self)
        runtime = tables[0]._runtime if tables else None
        if runtime is not None:
            # Distributed: the runtime flushes/pulls this step's rows before the forward pass;
            # its py_functions are stateful, so the graph keeps them in program order.
            x, step = _split_step(x)
            py_step(runtime.begin_step, step)
        storages = [compat.tf_variable(table.storage) for table in tables]
        with tf.GradientTape() as tape:
            for storage in storages:
                tape.watch(storage)
            y_pred = self(x, training=True)
            loss = compat.compute_loss(self, x, y, y_pred, sample_weight)
            scaled = compat.scale_loss(self.optimizer, loss)
        dense = self.trainable_weights
        grads = tape.gradient(scaled, dense + storages)
        if self.dense_sync is not None:
            grads = self.dense_sync.sync_gradients(grads, num_dense=len(dense))
        if runtime is None:
            # Local mode: the global step of the rows' learning-rate schedules is the dense
            # optimizer's iteration count before this step's update, as for its own schedule.
            step = tf.identity(self.optimizer.iterations)
        if dense:
            self.optimizer.apply_gradients(zip(grads[: len(dense)], dense))
        elif runtime is None and any(t.learning_rate_schedule is not None for t in tables):
            self.optimizer.iterations.assign_add(1)  # no dense update counts the steps
        table_grads = grads[len(dense):]
        if runtime is not None and runtime.config.mode == "allreduce":
            # Replicated tables: sum the embedding gradients over the workers (dense, small
            # tables only) and apply the same update to every row the global batch used.
            slots = tf.py_function(runtime.apply_slots, [], tf.int64)
            for table, grad in zip(tables, table_grads):
                grad = grad if grad is not None else _no_rows(table)
                dense_grad = tf.math.unsorted_segment_sum(grad.values, grad.indices,
                                                          runtime.total_slots)
                dense_grad = self._allreduce_sum(dense_grad)
                table.apply_embedding_gradients(
                    tf.IndexedSlices(tf.gather(dense_grad, slots), slots),
                    learning_rate=table.learning_rate_at(tf.reshape(step, [-1])[0]))
            py_step(runtime.end_step, step)
        elif runtime is not None:
            flat = []
            for table, grad in zip(tables, table_grads):
                grad = grad if grad is not None else _no_rows(table)
                flat += [grad.indices, grad.values]
            py_step(runtime.end_step, step, *flat)
        else:
            for table, grad in zip(tables, table_grads):
                if grad is not None:
                    table.apply_embedding_gradients(
                        grad, learning_rate=table.learning_rate_at(step))
        return self._distributable(self.compute_metrics(x, y, y_pred,
                                                        sample_weight=sample_weight))

    def _allreduce_sum(self, tensor: tf.Tensor) -> tf.Tensor:
        """``tensor`` summed over the workers by the model's dense backend."""
        if self.dense_sync is not None:
            return self.dense_sync.allreduce_sum(tensor)
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False:
            return tf.distribute.get_replica_context().all_reduce("sum", tensor)
        return tensor

    def _distributable(self, logs: dict[str, Any]) -> dict[str, Any]:
        # Keras 3 reduces each log over workers with strategy.reduce("MEAN", v, axis=0), which
        # needs a batch axis under MultiWorkerMirroredStrategy: give scalars one (tf-keras sums
        # scalars with axis=None).
        if not compat.LEGACY_KERAS and isinstance(self.distribute_strategy,
                                                  tf.distribute.MultiWorkerMirroredStrategy):
            return {k: tf.reshape(v, [1]) if v.shape.rank == 0 else v for k, v in logs.items()}
        return logs

    def set_weights(self, weights: list[Any]) -> None:
        """Sets every weight (``get_weights`` order; e.g. ``EarlyStopping(restore_best_weights=
        True)``), then rebuilds each local table's key map from its restored ``slot_keys``.
        Refused when a table is distributed (the runtime holds its key -> slot directory; see
        ``HeraldEmbedding``)."""
        tables = herald_embeddings(self)
        for table in tables:
            table._refuse_restore_outside_local("set_weights")
        super().set_weights(weights)
        for table in tables:
            table._rebuild_key_map()

    def load_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> Any:
        """``keras.Model.load_weights``; refused up front, before any weight changes, when a
        table is distributed (Keras would load the dense weights, then fail on the table)."""
        for table in herald_embeddings(self):
            table._refuse_restore_outside_local("load_weights")
        return super().load_weights(filepath, *args, **kwargs)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        self._make_rows_readable()
        return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        self._make_rows_readable()
        return super().predict(*args, **kwargs)

    def export(self, filepath: str, format: str = "tf_saved_model", verbose: bool | None = None,
               input_signature: Any = None, **kwargs: Any) -> None:
        """Writes a SavedModel that plain TensorFlow serves without herald_tf (its tables as
        stock lookups; ``herald_tf.keras.export.export_model``, whose keyword arguments it
        takes)."""
        if format != "tf_saved_model":
            raise ValueError("Expected format='tf_saved_model' (herald tables export as stock "
                             f"TensorFlow lookups only). Received: format={format!r}")
        from herald_tf.keras.export import export_model

        export_model(self, filepath, verbose=verbose, input_signature=input_signature, **kwargs)

    def _make_rows_readable(self) -> None:
        """Before evaluate/predict read the PS: every worker writes back the rows it owns dirty
        (``herald``), then waits for the others, so the reads see every row's latest value."""
        tables = herald_embeddings(self)
        runtime = tables[0]._runtime if tables else None
        if runtime is None or runtime.config.mode != "herald":
            return
        runtime.flush_dirty()
        if self.dense_sync is not None:
            self.dense_sync.barrier()
        elif isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            strategy = self.distribute_strategy
            strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)

    def _maybe_symbolic_build(self, iterator: Any = None, data_batch: Any = None) -> None:
        # Keras builds a distributed model by drawing one batch from a second pass over the
        # data; the runtime's batches are one stream in lockstep with the scheduler, so build
        # from the runtime's batch specification instead of consuming a batch.
        tables = herald_embeddings(self)
        runtime = tables[0]._runtime if tables else None
        if runtime is None or self._distribute_strategy is None or data_batch is not None:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=runtime.batch_spec())

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        return self._distributable(super().test_step((_split_step(x)[0], y, sample_weight)))

    def predict_step(self, data: Any) -> Any:
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return super().predict_step((_split_step(x)[0],))


def _split_step(x: Any) -> tuple[Any, Any]:
    """Model inputs without the runtime's step id, and the step id (None when absent)."""
    if isinstance(x, dict) and STEP_FEATURE in x:
        x = dict(x)
        return x, x.pop(STEP_FEATURE)
    return x, None


def _no_rows(table: HeraldEmbedding) -> tf.IndexedSlices:
    return tf.IndexedSlices(tf.zeros([0, table.output_dim]), tf.zeros([0], tf.int64))
