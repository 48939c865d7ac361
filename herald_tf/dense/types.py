"""The dense gradient synchronisation interface: :class:`DenseSync` and its backend names.

Workers train the dense part of the model data-parallel; a ``DenseSync`` is the one object that
knows how their dense gradients are combined (DESIGN §4 "Dense sync") and, because of that, how
large each worker's embedding gradient must be when it leaves the worker (DESIGN §2a "Gradient
scale"). The contract every backend keeps: for N workers of B samples each (global batch
G = N·B), after ``allreduce_dense`` the dense gradient equals the single-process gradient of
the global batch, and ``embedding_gradient_scale`` times a worker's embedding gradient, summed
over the workers (by the parameter servers, or by ``allreduce_sum`` in ``allreduce`` mode),
equals ∂(Σᵢ lossᵢ)/G — the single-process embedding gradient. Keras' default loss reduction
(``sum_over_batch_size``) and regularization losses keep it; a reduction that divides by the
sum of local sample weights (``mean_with_sample_weight``) does not, whatever the backend.
"""

from __future__ import annotations

import abc
import contextlib
import enum
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf


@enum.unique
class DenseSyncKind(enum.Enum):
    """Dense synchronisation backends; the value is the name ``make_dense_sync`` accepts."""

    NONE = "none"  # one process, nothing to combine
    HOROVOD = "horovod"  # horovod.tensorflow allreduce over Gloo
    TF_DISTRIBUTE = "tf_distribute"  # MultiWorkerMirroredStrategy / MirroredStrategy

    @classmethod
    def parse(cls, value: DenseSyncKind | str) -> DenseSyncKind:
        """The kind named by ``value`` (``tf.distribute`` and ``-`` spellings accepted)."""
        if isinstance(value, cls):
            return value
        name = str(value).strip().lower().replace(".", "_").replace("-", "_")
        for kind in cls:
            if kind.value == name:
                return kind
        names = ", ".join(k.value for k in cls)
        raise ValueError(f"Expected a dense sync backend in {names}. Received: name={value!r}")


class DenseSync(abc.ABC):
    """How N data-parallel workers combine dense gradients and scale embedding gradients.

    One instance per worker process, created before any model (``make_dense_sync``). Models are
    built and compiled inside ``scope()``; ``HeraldModel.train_step`` passes the dense gradients
    through ``allreduce_dense`` before the Keras optimizer applies them and multiplies every
    embedding gradient by ``embedding_gradient_scale`` before it is applied or pushed. Methods
    that communicate are collective: every worker must call them, in the same order.
    """

    #: The backend this object implements.
    kind: DenseSyncKind

    @property
    @abc.abstractmethod
    def rank(self) -> int:
        """This worker's index in ``[0, num_workers)``; worker 0 is the chief."""

    @property
    @abc.abstractmethod
    def num_workers(self) -> int:
        """N: the worker processes whose batches form one global batch."""

    @property
    def num_replicas(self) -> int:
        """Replicas in sync over all workers (more than ``num_workers`` when a tf.distribute
        worker drives several devices)."""
        return self.num_workers

    @property
    @abc.abstractmethod
    def embedding_gradient_scale(self) -> float:
        """Factor turning this worker's embedding gradient into its share of ∂(Σᵢ lossᵢ)/G."""

    @property
    def reduces_dense_in_train_step(self) -> bool:
        """True when ``train_step`` itself must call ``allreduce_dense`` (Keras does not)."""
        return False

    def check_model(self, model: Any) -> None:
        """Raises ``ValueError`` when ``model`` cannot train under this backend (at compile)."""
        return None

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """Context to build and compile models in (a strategy scope under tf.distribute)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def allreduce_dense(self, grads: Sequence[Any]) -> list[Any]:
        """Dense gradients averaged over the workers, in order; ``None`` entries stay ``None``."""

    @abc.abstractmethod
    def allreduce_sum(self, tensor: tf.Tensor, name: str | None = None) -> tf.Tensor:
        """``tensor`` summed over the workers (same shape everywhere); for ``allreduce`` mode."""

    @abc.abstractmethod
    def broadcast_variables(self, variables: Sequence[Any], root_rank: int = 0) -> None:
        """Assigns ``root_rank``'s values to ``variables`` on every worker."""

    @abc.abstractmethod
    def barrier(self) -> None:
        """Returns when every worker has called it."""

    def sync_gradients(self, grads: Sequence[Any], num_dense: int) -> list[Any]:
        """What ``train_step`` applies: the first ``num_dense`` (dense) gradients combined as
        this backend requires, the rest (embedding storage gradients) scaled."""
        dense = list(grads[:num_dense])
        if self.reduces_dense_in_train_step:
            dense = self.allreduce_dense(dense)
        return dense + [self.scale_embedding_gradient(g) for g in grads[num_dense:]]

    def scale_embedding_gradient(self, gradient: Any) -> Any:
        """``gradient`` (a tensor or ``tf.IndexedSlices``) times ``embedding_gradient_scale``."""
        scale = self.embedding_gradient_scale
        if gradient is None or scale == 1.0:
            return gradient
        if isinstance(gradient, tf.IndexedSlices):
            values = gradient.values * tf.cast(scale, gradient.values.dtype)
            return tf.IndexedSlices(values, gradient.indices, gradient.dense_shape)
        return gradient * tf.cast(scale, gradient.dtype)

    def broadcast_model(self, model: Any) -> None:
        """Gives every worker the chief's dense weights and optimizer state (after build).

        Call it once the model (and, to include its state, the optimizer) is built: herald
        embedding storage is per-worker cache and is not broadcast. The optimizer is built here
        when the model is compiled and its optimizer has no variables yet.
        """
        if not model.built:
            raise ValueError("Expected a built model: its dense weights must exist to be "
                             "broadcast. Build it (call it on a batch) before fit. Received: "
                             f"unbuilt model {model.name!r}")
        from herald_tf.keras.compat import optimizer_built

        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer_built(optimizer):
            optimizer.build(model.trainable_variables)
        variables = dense_variables(model)
        if optimizer is not None:
            variables += list(optimizer.variables)
        self.broadcast_variables(variables, root_rank=0)

    def callbacks(self) -> list[Any]:
        """Keras callbacks ``fit`` needs for this backend (Horovod: the initial broadcast)."""
        return []

    def shutdown(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Releases the backend's resources; the object is unusable afterwards."""

    def __enter__(self) -> DenseSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rank={self.rank}, num_workers={self.num_workers}, "
                f"embedding_gradient_scale={self.embedding_gradient_scale})")


def dense_variables(model: Any) -> list[Any]:
    """``model``'s variables except ``HeraldEmbedding`` storage (per-worker, never broadcast)."""
    from herald_tf.keras.model import herald_embeddings

    excluded = {id(v) for layer in herald_embeddings(model) for v in layer.weights}
    return [v for v in model.weights if id(v) not in excluded]


def tf_variable(variable: Any) -> Any:
    """The ``tf.Variable`` behind a layer weight, what ``GradientTape`` watches and TF ops read:
    a Keras 3 variable's ``.value``; a tf-keras weight (or any tf.Variable, tf.distribute
    variables included) is one itself."""
    value = getattr(variable, "value", None)
    return value if isinstance(value, tf.Variable) else variable


def iter_present(grads: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    """``(index, grad)`` of the gradients that are not ``None``."""
    return ((i, g) for i, g in enumerate(grads) if g is not None)
