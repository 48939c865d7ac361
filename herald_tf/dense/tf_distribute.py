"""``tf_distribute``: dense sync by a ``tf.distribute`` strategy that Keras drives itself.

Several processes: ``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG`` (the cluster
spec TensorFlow, Kubeflow's TFJob and herald-run write; ``chief`` and ``worker`` tasks are the
data-parallel workers, chief first). One process: ``MirroredStrategy`` over its devices. Build
and compile the model inside ``scope()``; Keras' ``apply_gradients`` then sums the replicas'
dense gradients, so ``HeraldModel.train_step`` leaves them alone. The strategy must be created
before TensorFlow runs any op (collective ops are configured at start-up): call
``make_dense_sync`` first thing in the program.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import resource_variable_ops

from herald_tf.dense.types import DenseSync, DenseSyncKind, iter_present, tf_variable

_WORKER_JOBS = ("chief", "worker")


def _plain_variable(next_creator: Any, **kwargs: Any) -> tf.Variable:
    kwargs.pop("experimental_enable_variable_lifting", None)
    # Constructing the class directly skips the creator stack, the strategy's creator included.
    return resource_variable_ops.ResourceVariable(**kwargs)


@contextlib.contextmanager
def per_worker_variables() -> Iterator[None]:
    """Variables created inside are plain variables of this process, even in a strategy scope.

    DESIGN §4a: a worker's embedding cache storage must not be mirrored (each worker holds
    different rows, and a mirrored variable has no handle in the cross-replica context where
    Keras builds models). Wrap the layer's ``add_weight`` calls for storage in it. Replicas of
    one process share such a variable.
    """
    with tf.variable_creator_scope(_plain_variable):
        yield


def _cluster_position(resolver: Any) -> tuple[int, int]:
    """(rank, number of workers) of this task in a TF_CONFIG cluster: chief first, then workers."""
    spec = resolver.cluster_spec().as_dict()
    tasks = [(job, i) for job in _WORKER_JOBS for i in range(len(spec.get(job, [])))]
    me = (resolver.task_type, int(resolver.task_id or 0))
    if me not in tasks:
        raise ValueError(f"Expected TF_CONFIG's task to be a chief or worker of the cluster. "
                         f"Received: task={me}, cluster jobs={sorted(spec)}")
    return tasks.index(me), len(tasks)


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose ``reduce`` takes what Keras 3's ``fit`` passes it.

    With more than one worker, Keras 3 (keras-team/keras#20585) reduces the first
    (x, y, sample_weight) batch as one nested value (to infer input shapes) and reduces scalar
    step outputs (loss, metrics) with ``axis=0``; MultiWorkerMirroredStrategy refuses both.
    This reduces leaf by leaf, and a scalar across replicas only, which is what Keras means.
    """

    def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
        def leaf(v: Any) -> Any:
            leaf_axis = axis
            if axis is not None and _per_replica_rank(self, v) == 0:
                leaf_axis = None
            return super(_MultiWorkerStrategy, self).reduce(reduce_op, v, leaf_axis)

        if isinstance(value, tf.distribute.DistributedValues) or not tf.nest.is_nested(value):
            return leaf(value)
        return tf.nest.map_structure(leaf, value)


def _per_replica_rank(strategy: tf.distribute.Strategy, value: Any) -> int | None:
    """Rank of one replica's part of ``value`` (None when unknown)."""
    local = strategy.experimental_local_results(value)[0]
    rank = getattr(getattr(local, "shape", None), "rank", None)
    return rank


class TfDistributeDenseSync(DenseSync):
    """Dense sync through ``tf.distribute`` (MultiWorkerMirroredStrategy or MirroredStrategy).

    Gradient scale: under a strategy Keras divides every loss (regularization included) by the
    number of replicas R in sync and sums the replicas' gradients, so the dense update uses
    Σ_r ∂(mean_r)/R = the gradient of the mean over the global batch G. The same 1/R is already
    in each replica's embedding gradient, ∂(Σ_{i in its batch} lossᵢ)/G, so the parameter
    servers' (or ``allreduce_sum``'s) sum over replicas is ∂(Σᵢ lossᵢ)/G as it stands and
    ``embedding_gradient_scale`` is 1. A custom training loop keeps this by dividing its loss
    by the global batch (``tf.nn.compute_average_loss(..., global_batch_size=G)``).

    Args:
        multi_worker: use MultiWorkerMirroredStrategy from ``TF_CONFIG`` (default: when
            ``TF_CONFIG`` names more than one chief/worker task).
        devices: MirroredStrategy's devices in the one-process case (default: all visible).
    """

    kind = DenseSyncKind.TF_DISTRIBUTE

    def __init__(self, multi_worker: bool | None = None,
                 devices: Sequence[str] | None = None) -> None:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        has_cluster = bool(resolver.cluster_spec().as_dict())
        rank, workers = _cluster_position(resolver) if has_cluster else (0, 1)
        if multi_worker is None:
            multi_worker = workers > 1
        if multi_worker:
            if not has_cluster:
                raise ValueError("MultiWorkerMirroredStrategy needs TF_CONFIG (a cluster spec "
                                 "naming every worker's host:port and this task).")
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING)
            self.strategy: tf.distribute.Strategy = _MultiWorkerStrategy(
                cluster_resolver=resolver, communication_options=options)
        else:
            self.strategy = tf.distribute.MirroredStrategy(devices=devices)
            rank, workers = 0, 1
        self._rank = rank
        self._num_workers = workers
        self._barrier_fn: Any = None

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def num_workers(self) -> int:
        """Worker processes (``num_replicas`` counts their devices too)."""
        return self._num_workers

    @property
    def num_replicas(self) -> int:
        """Replicas in sync over all workers: the R that Keras divides losses by."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def embedding_gradient_scale(self) -> float:
        return 1.0

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        return self.strategy.scope()

    def check_model(self, model: Any) -> None:
        """Refuses a model built outside ``scope()``, and ``steps_per_execution > 1`` with
        several workers: Keras 3 runs those steps in a ``tf.while_loop`` whose cross-worker
        reductions fail under MultiWorkerMirroredStrategy (keras-team/keras#19246)."""
        if getattr(model, "distribute_strategy", None) is not self.strategy:
            raise ValueError("Expected the model to be created inside the dense sync's scope() "
                             "(`with sync.scope(): model = ...; model.compile(...)`). Received: "
                             f"a model of strategy {type(model.distribute_strategy).__name__}")
        steps = int(getattr(model, "steps_per_execution", 1) or 1)
        if self._num_workers > 1 and steps > 1:
            raise ValueError("Keras 3 cannot run steps_per_execution > 1 under "
                             "MultiWorkerMirroredStrategy (keras-team/keras#19246); use 1, or the "
                             f"horovod dense sync. Received: steps_per_execution={steps}")

    def _local_replicas(self) -> int:
        return len(self.strategy.extended.worker_devices)

    def allreduce_dense(self, grads: Sequence[Any]) -> list[Any]:
        """Mean over replicas, for custom loops whose loss is each replica's own mean (replica
        context only). ``HeraldModel`` does not call it: Keras' optimizer sums 1/R-scaled
        gradients itself."""
        ctx = tf.distribute.get_replica_context()
        if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
            raise RuntimeError("allreduce_dense runs in a replica context (inside strategy.run).")
        out = list(grads)
        present = list(iter_present(grads))
        if present:
            reduced = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [g for _, g in present])
            for (i, _), g in zip(present, reduced, strict=True):
                out[i] = g
        return out

    def allreduce_sum(self, tensor: tf.Tensor, name: str | None = None) -> tf.Tensor:
        """In a replica context: the sum over replicas. In the cross-replica context (outside
        ``strategy.run``): the sum over worker processes, each contributing ``tensor`` once."""
        if tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tensor)
        local = self._local_replicas()

        def first_local_replica_only(value: tf.Tensor) -> tf.Tensor:
            ctx = tf.distribute.get_replica_context()
            keep = tf.equal(ctx.replica_id_in_sync_group % local, 0)
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                  value * tf.cast(keep, value.dtype))

        with self.strategy.scope():
            result = self.strategy.run(first_local_replica_only,
                                       args=(tf.convert_to_tensor(tensor),))
            return self.strategy.experimental_local_results(result)[0]

    def broadcast_variables(self, variables: Sequence[Any], root_rank: int = 0) -> None:
        """Mirrored variables are equal on every worker from their creation (the chief's initial
        value) and are skipped; other variables take ``root_rank``'s value."""
        for variable in variables:
            v = tf_variable(variable)
            if isinstance(v, tf.distribute.DistributedValues):
                continue
            value = v.read_value()
            if self._rank != root_rank:
                value = tf.zeros_like(value)
            v.assign(self.allreduce_sum(value))

    def barrier(self) -> None:
        if self._num_workers == 1:
            return
        if self._barrier_fn is None:
            self._barrier_fn = tf.function(
                lambda: self.allreduce_sum(tf.zeros([], tf.float32)))
        self._barrier_fn()
