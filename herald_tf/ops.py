"""TensorFlow ops of herald_tf (``Herald>…``), loaded lazily from ``_herald_ops.so``.

The op library is tied to the TensorFlow version it was built with; loading checks that and says
how to rebuild. The lookup's registered gradient dedups ids and segment-sums (an
``IndexedSlices`` over the storage variable with distinct indices), never a dense table gradient.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops as _resource_variable_ops

from herald_tf import env
from herald_tf.config import Combiner, InitializerConfig, OptimizerConfig
from herald_tf.errors import LibraryNotFoundError

OPS_LIBRARY = "_herald_ops.so"
_COMBINERS = {c.name.lower() for c in Combiner}


@functools.cache
def load_ops() -> Any:
    """Loads the op library once and registers the lookup gradient; clear errors on mismatch."""
    lib_dir = env.lib_dir()
    path = os.path.join(lib_dir, OPS_LIBRARY)
    stamp = os.path.join(lib_dir, "BUILT_FOR_TF")
    if not os.path.exists(path):
        raise LibraryNotFoundError(
            f"herald_tf's op library is missing: {path}. Build it with `make build` "
            "(or `pip install .`) from the herald_tf source tree."
        )
    built_for = open(stamp).read().strip() if os.path.exists(stamp) else "unknown"
    if built_for != tf.__version__:
        raise LibraryNotFoundError(
            f"{path} was built for TensorFlow {built_for}, but TensorFlow {tf.__version__} is "
            "running. An op library only works with the TensorFlow it was built against: rebuild "
            "with `make build` in this environment."
        )
    try:
        module = tf.load_op_library(path)
    except tf.errors.NotFoundError as e:
        raise LibraryNotFoundError(
            f"TensorFlow could not load {path}: {e.message}. Rebuild it with `make build`."
        ) from e
    tf.RegisterGradient("Herald>Lookup")(_lookup_grad)
    return module


def _handle(variable: Any, accessed: bool = False) -> tf.Tensor:
    """The resource handle of a tf.Variable or a Keras 3 variable (TensorFlow backend).

    With ``accessed``, the read is reported to active gradient tapes (as ``Variable.sparse_read``
    does), so ``tape.gradient(loss, variable)`` sees the lookup.
    """
    candidates = (getattr(variable, "_value", None), getattr(variable, "value", None), variable)
    for candidate in candidates:
        candidate = local_variable(candidate)
        handle = getattr(candidate, "handle", None)
        if handle is not None and getattr(handle, "dtype", None) == tf.resource:
            if accessed and isinstance(candidate, tf.Variable):
                _resource_variable_ops.variable_accessed(candidate)
            return handle
    raise TypeError(f"Expected a resource variable (tf.Variable or keras.Variable). Received: "
                    f"{type(variable).__name__}")


def local_variable(variable: Any) -> Any:
    """This process's tf.Variable behind a Keras or tf.distribute variable (storage is per
    worker).

    Herald storage holds a worker's own cache, so under MultiWorkerMirroredStrategy (one replica
    per worker) the only component is the one to read and write, in or out of replica context.
    """
    variable = getattr(variable, "value", variable) if not isinstance(
        variable, (tf.Variable, tf.distribute.DistributedValues)) else variable
    if isinstance(variable, tf.distribute.DistributedValues):
        components = variable.values
        if len(components) != 1:
            raise ValueError(
                "Expected one replica per worker process for HeraldEmbedding storage. Received: "
                f"{len(components)} replicas")
        return components[0]
    return variable


def _check_combiner(combiner: str) -> str:
    if combiner not in _COMBINERS:
        raise ValueError(f"Expected combiner in {sorted(_COMBINERS)}. Received: {combiner!r}")
    return combiner


def _flat_ids_and_splits(ids: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """Flat int64 ids, row splits, and the dense shape to restore (None for ragged)."""
    if isinstance(ids, tf.RaggedTensor):
        if ids.ragged_rank != 1:
            raise ValueError(f"Expected a ragged [batch, None] tensor. Received: ragged_rank="
                             f"{ids.ragged_rank}")
        return (tf.cast(ids.values, tf.int64), tf.cast(ids.row_splits, tf.int64), None)
    ids = tf.convert_to_tensor(ids)
    if ids.dtype != tf.int64:
        raise TypeError(f"Expected int64 slot ids. Received: dtype={ids.dtype.name}")
    if ids.shape.rank == 1:
        ids = ids[:, tf.newaxis]
    if ids.shape.rank != 2:
        raise ValueError(f"Expected slot ids of shape [batch] or [batch, T], or a ragged "
                         f"[batch, None] tensor. Received: shape={ids.shape}")
    shape = tf.shape(ids, out_type=tf.int64)
    splits = tf.range(0, shape[0] * shape[1] + 1, tf.maximum(shape[1], 1), dtype=tf.int64)
    splits = splits[: shape[0] + 1]
    return tf.reshape(ids, [-1]), splits, shape


def lookup(storage: Any, slot_ids: Any, combiner: str = "sum") -> tf.Tensor:
    """Rows of ``storage`` (slots, dim) at ``slot_ids``, pooled per sample.

    ``slot_ids`` is int64 ``[B]``, ``[B, T]`` or ragged ``[B, None]``. With ``sum``/``mean``/
    ``sqrtn`` the result is ``[B, dim]``; with ``none`` it is ``[B, T, dim]`` (dense ids only)
    or ``[B, dim]`` for ``[B]`` ids. Differentiable w.r.t. ``storage`` (sparse gradient).
    """
    _check_combiner(combiner)
    ops = load_ops()
    flat, splits, shape = _flat_ids_and_splits(slot_ids)
    out = ops.herald_lookup(_handle(storage, accessed=True), flat, splits, combiner=combiner)
    if combiner == "none":
        if shape is None:
            raise ValueError("Expected dense slot ids for combiner='none'; pool ragged bags "
                             "with sum, mean or sqrtn.")
        rank1 = tf.convert_to_tensor(slot_ids).shape.rank == 1
        out = out if rank1 else tf.reshape(out, tf.concat([shape, [-1]], 0))
    return out


def _lookup_grad(op: tf.Operation, grad: tf.Tensor) -> list[Any]:
    unique, summed = load_ops().herald_lookup_grad(
        grad, op.inputs[1], op.inputs[2], combiner=op.get_attr("combiner").decode()
    )
    dense_shape = tf.raw_ops.VariableShape(input=op.inputs[0], out_type=tf.int64)
    return [tf.IndexedSlices(summed, unique, dense_shape), None, None]


def lookup_grad(grad: tf.Tensor, slot_ids: Any,
                combiner: str = "sum") -> tuple[tf.Tensor, tf.Tensor]:
    """Distinct slots (first-appearance order) and their summed gradients for a lookup."""
    _check_combiner(combiner)
    flat, splits, _ = _flat_ids_and_splits(slot_ids)
    return load_ops().herald_lookup_grad(grad, flat, splits, combiner=combiner)


def sparse_apply(
    storage: Any,
    state: Any,
    versions: Any,
    unique_slots: tf.Tensor,
    grads: tf.Tensor,
    optimizer: OptimizerConfig,
    learning_rate: Any = None,
) -> tf.Operation:
    """Applies summed gradients to distinct slots with the sparse optimizer (versions += 1).

    ``state`` is a float32 variable ``(slots, 0|dim|2*dim)`` for SGD/Adagrad/Adam and
    ``versions`` an int64 ``(slots,)`` variable. Bad slots or non-finite gradients raise
    ``InvalidArgumentError`` and change nothing.
    """
    lr = optimizer.learning_rate if learning_rate is None else learning_rate
    return load_ops().herald_sparse_apply(
        _handle(storage), _handle(state), _handle(versions),
        tf.convert_to_tensor(unique_slots, tf.int64), tf.convert_to_tensor(grads, tf.float32),
        tf.convert_to_tensor(lr, tf.float32), optimizer=optimizer.kind.name.lower(),
        beta1=optimizer.beta1, beta2=optimizer.beta2, epsilon=optimizer.epsilon,
    )


def init_rows(keys: Any, dim: int, seed: int, initializer: InitializerConfig) -> tf.Tensor:
    """Deterministic initial rows ``[n, dim]`` for int64 ``keys`` (kernels/core/initializer.h)."""
    signed_seed = seed - 2**64 if seed >= 2**63 else seed
    return load_ops().herald_init_rows(
        tf.convert_to_tensor(keys, tf.int64), dim=dim, seed=signed_seed,
        initializer=initializer.kind.name.lower(), a=initializer.a, b=initializer.b,
    )


def gather_rows(storage: Any, slot_ids: Any) -> tf.Tensor:
    """Rows of ``storage`` at ``slot_ids`` (rows to push or flush)."""
    return load_ops().herald_gather_rows(_handle(storage), tf.convert_to_tensor(slot_ids, tf.int64))


def scatter_rows(storage: Any, slot_ids: Any, rows: Any) -> tf.Operation:
    """Writes ``rows`` into ``storage`` at distinct ``slot_ids`` (pulled rows into the cache)."""
    return load_ops().herald_scatter_rows(
        _handle(storage), tf.convert_to_tensor(slot_ids, tf.int64),
        tf.convert_to_tensor(rows, tf.float32),
    )
