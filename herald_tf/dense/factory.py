"""``make_dense_sync``: the one place a :class:`DenseSync` backend is chosen and configured."""

from __future__ import annotations

from collections.abc import Sequence

from herald_tf import env
from herald_tf.dense.types import DenseSync, DenseSyncKind


def make_dense_sync(name: DenseSyncKind | str | None = None, *, rank: int | None = None,
                    num_workers: int | None = None, coordinator: str | None = None,
                    cycle_time_ms: float | None = None,
                    devices: Sequence[str] | None = None) -> DenseSync:
    """The dense sync backend ``name`` for this worker process; call it before building models.

    Args:
        name: ``none``, ``horovod`` or ``tf_distribute`` (default ``$HERALD_DENSE_SYNC``, else
            ``none``).
        rank: this worker's rank (default ``$HERALD_RANK``); Horovod only.
        num_workers: number of workers (default ``$HERALD_NUM_WORKERS``); ``none`` refuses more
            than one, ``horovod`` checks its size against it.
        coordinator: ``host:port`` of Horovod's Gloo rendezvous, hosted by rank 0 (default
            ``$HERALD_COORDINATOR``); ignored when horovodrun started the process.
        cycle_time_ms: Horovod's cycle time when ``HOROVOD_CYCLE_TIME`` is unset.
        devices: MirroredStrategy's devices (tf_distribute in one process).
    """
    kind = DenseSyncKind.parse(name if name is not None else env.dense_sync_name() or "none")
    rank = rank if rank is not None else env.rank()
    num_workers = num_workers if num_workers is not None else env.num_workers()
    if kind is DenseSyncKind.NONE:
        from herald_tf.dense.none import NoneDenseSync

        if num_workers is not None and num_workers > 1:
            raise ValueError(f"Dense sync 'none' trains one process; use horovod or "
                             f"tf_distribute for several. Received: num_workers={num_workers}")
        return NoneDenseSync()
    if kind is DenseSyncKind.HOROVOD:
        from herald_tf.dense.horovod import DEFAULT_CYCLE_TIME_MS, HorovodDenseSync

        return HorovodDenseSync(
            rank=rank, num_workers=num_workers,
            coordinator=coordinator if coordinator is not None else env.coordinator(),
            cycle_time_ms=cycle_time_ms if cycle_time_ms is not None else DEFAULT_CYCLE_TIME_MS,
            local_size=env.local_size())
    from herald_tf.dense.tf_distribute import TfDistributeDenseSync

    sync = TfDistributeDenseSync(devices=devices)
    if num_workers is not None and sync.num_workers != num_workers:
        raise ValueError(f"TF_CONFIG names {sync.num_workers} workers, expected {num_workers} "
                         f"($HERALD_NUM_WORKERS).")
    if rank is not None and sync.rank != rank:
        raise ValueError(f"TF_CONFIG makes this task rank {sync.rank}, expected {rank} "
                         f"($HERALD_RANK).")
    return sync
