"""Plans of the ``allreduce`` mode: every worker holds whole tables, no parameter server.

Every worker sees the same global batches, so it assigns slots to keys in order of first
appearance over the global batches and creates new rows from the deterministic initializer:
the replicas' storage stays identical without any exchange of rows. Each step, the
embedding gradients are summed over the workers as dense ``[slots, dim]`` tensors (small tables
only) and every worker applies the same sparse update to the rows the global batch used
(``HeraldModel.train_step``). The plans have the shape of the scheduler's, so the runtime
executes them with the same code: ``init`` rows are the global batch's new keys, ``local`` rows
are every row the global batch used.

Slots are assigned when a batch is drawn, which tf.data does ahead of training, but a new row is
written only when its step begins (``rows_written``): until then evaluation reads the key's
initial value, not the unwritten slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from herald_tf.errors import InvalidArgumentError
from herald_tf.scheduler import ScheduledStep, StepPlan


def _first_appearance(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys in order of first appearance, and the index of each key among them."""
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return unique[order], rank[inverse.ravel()]


class ReplicatedPlanner:
    """Yields ``ScheduledStep``s for the ``allreduce`` mode (same iteration as ``Scheduler``).

    Args:
        num_workers: N.
        rank: this worker's rank; only its plan is produced.
        batch_size: B.
        capacity: rows each replica holds (distinct keys over the whole run).
        batches: (N * B, F) int64 global batches in training order.
        start_step: resume here: earlier batches only assign slots.
    """

    def __init__(self, num_workers: int, rank: int, batch_size: int, capacity: int,
                 batches: Iterable[np.ndarray], start_step: int = 0) -> None:
        self.num_workers, self.rank, self.batch_size = num_workers, rank, batch_size
        self.capacity = capacity
        self._batches = batches
        self._start_step = start_step
        self._slot_of: dict[int, int] = {}
        # Slots are assigned in step order and contiguously, so the written rows are the slots
        # below a mark: per drawn step, the mark once its rows are written.
        self._slots_through: dict[int, int] = {}
        self._written = 0

    def _assign(self, unique: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Slots of ``unique`` keys, creating slots for new ones: (slots, new keys, new slots)."""
        slots = np.fromiter((self._slot_of.get(k, -1) for k in unique.tolist()), np.int64,
                            unique.size)
        new = slots < 0
        first = len(self._slot_of)
        if first + int(new.sum()) > self.capacity:
            raise InvalidArgumentError(
                f"Expected at most {self.capacity} distinct keys in allreduce mode (the tables' "
                f"capacity). Received: {first + int(new.sum())} so far; raise the capacity.")
        slots[new] = np.arange(first, first + int(new.sum()), dtype=np.int64)
        self._slot_of.update(zip(unique[new].tolist(), slots[new].tolist()))
        return slots, unique[new], slots[new]

    def slots_of(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each key, -1 for a key whose row is not written yet (never trained, or only
        in a batch drawn ahead): evaluation reads its initial value."""
        written = self._written
        slots = np.fromiter((self._slot_of.get(k, -1) for k in keys.tolist()), np.int64,
                            keys.size)
        slots[slots >= written] = -1
        return slots

    def rows_written(self, step: int) -> None:
        """The runtime wrote the new rows of ``step`` (called in step order, by ``begin_step``)."""
        self._written = max(self._written, self._slots_through.pop(step, self._written))

    def __iter__(self) -> Iterator[ScheduledStep]:
        n, b = self.num_workers, self.batch_size
        samples = np.arange(n * b, dtype=np.int64).reshape(n, b)
        for step, keys in enumerate(self._batches):
            unique, _ = _first_appearance(keys)
            global_slots, new_keys, new_slots = self._assign(unique)
            if step < self._start_step:  # resume: the checkpoint restored these rows
                self._written = len(self._slot_of)
                continue
            self._slots_through[step] = len(self._slot_of)
            local = keys[samples[self.rank]]
            local_unique, local_index = _first_appearance(local)
            slot_of = dict(zip(unique.tolist(), global_slots.tolist()))
            local_slots = np.fromiter((slot_of[k] for k in local_unique.tolist()), np.int64,
                                      local_unique.size)
            plan = StepPlan(keys=local_unique, key_slots=local_slots,
                            slots=local_slots[local_index].reshape(local.shape),
                            init_keys=new_keys, init_slots=new_slots,
                            local_keys=unique, local_slots=global_slots)
            plans: list[StepPlan | None] = [None] * n
            plans[self.rank] = plan
            yield ScheduledStep(step=step, samples=samples, plans=plans)

    def close(self) -> None:
        """Nothing runs in the background."""
