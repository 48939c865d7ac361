"""The per-worker cache directory, in Python (the reference of kernels/scheduler/directory.h).

A directory maps keys to cache slots of one worker and decides evictions. Capacity counts rows
held between steps; a row entering the directory during a step is *pending* (it sits in a
staging slot) until :meth:`CacheDirectory.assign_pending` gives it a cache slot after evictions.
Eviction order is total, so the scheduler's simulation and the runtime agree exactly: LRU evicts
the smallest ``(last_step, key)``, LFU the smallest ``(freq, last_step, key)`` where ``freq``
counts the steps the row was used since it entered. Free slots are reused last-freed-first.
"""

from __future__ import annotations

import dataclasses

from herald_tf.scheduler.types import Eviction

PENDING = -1


@dataclasses.dataclass
class Entry:
    """One row a worker holds.

    Args:
      slot: cache slot, or ``PENDING`` until assigned after the step's evictions.
      staging: staging slot of the step that brought the row in (valid while pending).
      last_step: last step the row was used.
      freq: steps the row was used since it entered the directory.
      version: ``het``: the version of the local copy (PS version at pull + local updates).
      pending_updates: ``het``: local updates not yet pushed.
      dirty: the worker owns the row (``herald``: updated locally, not flushed).
    """

    slot: int
    staging: int
    last_step: int
    freq: int = 1
    version: int = 0
    pending_updates: int = 0
    dirty: bool = False


class CacheDirectory:
    """Key -> slot map of one worker with LRU or LFU eviction; see the module docstring."""

    def __init__(self, capacity: int, eviction: Eviction) -> None:
        self.capacity = capacity
        self.eviction = Eviction(eviction)
        self._entries: dict[int, Entry] = {}
        self._free = list(range(capacity - 1, -1, -1))  # pop() gives slot 0 first
        self._pending: list[int] = []

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def get(self, key: int) -> Entry | None:
        """The entry of ``key`` or None."""
        return self._entries.get(key)

    def items(self) -> list[tuple[int, Entry]]:
        """All (key, entry) pairs (no defined order)."""
        return list(self._entries.items())

    def touch(self, key: int, step: int, staging: int) -> Entry:
        """Marks ``key`` used at ``step``, inserting it as pending (at ``staging``) if absent."""
        entry = self._entries.get(key)
        if entry is None:
            entry = Entry(slot=PENDING, staging=staging, last_step=step)
            self._entries[key] = entry
            self._pending.append(key)
        elif entry.last_step != step:
            entry.last_step = step
            entry.freq += 1
        return entry

    def remove(self, key: int) -> Entry:
        """Removes ``key`` (which must be present) and frees its slot."""
        entry = self._entries.pop(key)
        if entry.slot != PENDING:
            self._free.append(entry.slot)
        return entry

    def _order(self, item: tuple[int, Entry]) -> tuple[int, ...]:
        key, e = item
        if self.eviction == Eviction.LRU:
            return (e.last_step, key)
        return (e.freq, e.last_step, key)

    def evict_to_capacity(self) -> list[tuple[int, Entry]]:
        """Evicts in eviction order until at most ``capacity`` rows remain; returns them."""
        excess = len(self._entries) - self.capacity
        if excess <= 0:
            return []
        victims = sorted(self._entries.items(), key=self._order)[:excess]
        for key, _ in victims:
            self.remove(key)
        return victims

    def assign_pending(self) -> list[tuple[int, int, int]]:
        """Gives each surviving pending row a cache slot: [(key, staging slot, cache slot)]."""
        installs = []
        for key in self._pending:
            entry = self._entries.get(key)
            if entry is None or entry.slot != PENDING:
                continue
            entry.slot = self._free.pop()
            installs.append((key, entry.staging, entry.slot))
        self._pending = []
        return installs
