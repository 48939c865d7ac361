"""State of the Python reference scheduler: per-key facts and the context of one step."""

from __future__ import annotations

import dataclasses

from herald_tf.scheduler.cache_directory import PENDING, CacheDirectory
from herald_tf.scheduler.types import CacheView, SchedulerConfig


class KeyTable(CacheView):
    """Per-key facts shared by all workers: version, owner, holders, touched.

    ``version`` is the number of updates applied (``herald``, ``ps``) or of gradients pushed
    (``het``, HET's server clock). ``holders`` is the bitmask of workers whose directory holds
    the key. The touched set is exact here (the C++ engine uses an exact hash set too).
    """

    def __init__(self, num_workers: int, batch_size: int) -> None:
        self.num_workers = num_workers
        self.batch_size = batch_size
        self.version: dict[int, int] = {}
        self.applied: dict[int, int] = {}  # het: PS updates (steps with pushes)
        self._owner: dict[int, int] = {}
        self._holders: dict[int, int] = {}
        self._touched: set[int] = set()

    def holders(self, key: int) -> int:
        """Bitmask of workers whose directory holds ``key``."""
        return self._holders.get(key, 0)

    def owner(self, key: int) -> int:
        """Worker owning ``key`` dirty, or -1."""
        return self._owner.get(key, -1)

    def touched(self, key: int) -> bool:
        """True once ``key`` was used at an earlier step."""
        return key in self._touched

    def set_owner(self, key: int, worker: int) -> None:
        """Sets the owner (-1: the PS)."""
        if worker < 0:
            self._owner.pop(key, None)
        else:
            self._owner[key] = worker

    def add_holder(self, key: int, worker: int) -> None:
        """Marks ``worker`` as holding ``key``."""
        self._holders[key] = self._holders.get(key, 0) | (1 << worker)

    def remove_holder(self, key: int, worker: int) -> None:
        """Marks ``worker`` as no longer holding ``key``."""
        self._holders[key] = self._holders.get(key, 0) & ~(1 << worker)

    def touch(self, key: int) -> None:
        """Adds ``key`` to the touched set."""
        self._touched.add(key)


@dataclasses.dataclass
class StepContext:
    """One step being planned by the reference engine.

    Args:
      step: step id t.
      config: the scheduler config.
      worker_keys: per worker, its unique keys in order of first occurrence.
      order: all unique keys of the step, in order of first occurrence (worker-major).
      users: key -> bitmask of workers using it at this step.
      read_slots: per worker, key -> slot where it is read.
      held: per worker, keys held in its directory at step start.
      lists: per worker, plan list name -> python list (see StepPlan.LISTS).
    """

    step: int
    config: SchedulerConfig
    worker_keys: list[list[int]]
    order: list[int]
    users: dict[int, int]
    read_slots: list[dict[int, int]]
    held: list[set[int]]
    lists: list[dict[str, list[int]]]

    def add(self, worker: int, name: str, *values: int) -> None:
        """Appends ``values`` to the lists ``name``_keys, ``name``_slots, ... of ``worker``."""
        suffixes = {
            "flush": ("keys", "slots"), "pull": ("keys", "slots", "versions"),
            "init": ("keys", "slots"), "local": ("keys", "slots"), "push": ("keys",),
            "drop": ("keys",), "writeback": ("keys", "slots"),
            "install": ("keys", "src", "dst"),
        }[name]
        for suffix, value in zip(suffixes, values, strict=True):
            self.lists[worker][f"{name}_{suffix}"].append(value)


def compute_read_slots(ctx: StepContext, dirs: list[CacheDirectory]) -> None:
    """Fills ``ctx.read_slots`` and ``ctx.held``: held rows at their cache slot, the others at
    consecutive staging slots of region ``step % staging_regions``."""
    cfg = ctx.config
    base = cfg.cache_capacity + (ctx.step % cfg.staging_regions) * cfg.staging_size
    for w, keys in enumerate(ctx.worker_keys):
        slots: dict[int, int] = {}
        held: set[int] = set()
        staged = 0
        for key in keys:
            entry = dirs[w].get(key)
            if entry is not None and entry.slot != PENDING:
                slots[key] = entry.slot
                held.add(key)
            else:
                slots[key] = base + staged
                staged += 1
        ctx.read_slots.append(slots)
        ctx.held.append(held)
