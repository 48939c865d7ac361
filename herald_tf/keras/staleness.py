"""The staleness a ``het`` worker actually trained with, measured from the plans it executed.

HET (DESIGN §1, §5) counts updates: a row's **PS clock** is the number of local updates that
workers have pushed for it so far (a push carries all of that worker's pending updates of the
row); a cached copy's **version** is the PS clock when it was pulled (or initialised) plus the
updates its worker applied to it since. The **staleness of a read** is the PS clock minus the
version of the copy read, at the step of the read (pushes of the step come after its reads). A
pulled or initialised row has staleness 0; HET serves a cached copy only while its staleness is
at most ``bound``, so with ``bound`` 0 every read is exact.

Every worker sees every worker's plan of every step (they run the same deterministic scheduler),
so ``StalenessMeter`` replays what each worker pushes and applies, independently of the
scheduler's own bookkeeping, and records for this worker: reads, stale reads (staleness > 0), the
largest staleness and their sum. It also predicts each pulled row's PS version (steps at which
the PS applied pushes of it) and compares it with the version the PS returned, so the replay is
checked against the real servers. Cost per step: a few vectorised hash-table operations (the
PS's C++ key index, keys → PS clock and PS version, over the keys read and pushed) and a few
numpy operations per worker on slot-indexed arrays (pending updates per worker slot, this
worker's copy versions): an int32 per slot and worker, and an int64 per slot of this worker.

After a resume the meter starts empty: a copy cached before the resumed step is not measured
until it is pulled again, clocks count the pushes since the resumed step, and pulled versions are
not compared (``resumed``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from herald_tf.ps import KeyIndex


class _KeyClock:
    """int64 key → (PS clock, PS version), both 0 for a key never pushed; vectorised.

    The PS's C++ key index numbers the keys; the clocks and versions are int64 arrays by row.
    """

    def __init__(self) -> None:
        self._index = KeyIndex()
        self._values = np.zeros((2, 0), np.int64)  # row 0: clocks, row 1: versions

    def get(self, keys: np.ndarray, which: int) -> np.ndarray:
        """The clocks (``which`` 0) or versions (1) of ``keys``."""
        rows = self._index.lookup(keys)
        out = np.zeros(keys.shape[0], np.int64)
        known = rows >= 0
        out[known] = self._values[which, rows[known]]
        return out

    def add(self, keys: np.ndarray, clocks: np.ndarray) -> None:
        """Adds ``clocks`` to the clocks and 1 to the versions of distinct ``keys``."""
        rows, _ = self._index.lookup_or_insert(keys)
        if len(self._index) > self._values.shape[1]:
            grown = np.zeros((2, max(len(self._index), 2 * self._values.shape[1])), np.int64)
            grown[:, :self._values.shape[1]] = self._values
            self._values = grown
        self._values[0, rows] += clocks
        self._values[1, rows] += 1


def _grown(array: np.ndarray, slots: np.ndarray, fill: int) -> np.ndarray:
    """``array`` long enough to index every slot of ``slots`` (new entries ``fill``)."""
    need = int(slots.max()) + 1 if slots.size else 0
    if need <= array.size:
        return array
    grown = np.full(max(need, 2 * array.size), fill, array.dtype)
    grown[:array.size] = array
    return grown


def _members(keys: np.ndarray, of: np.ndarray) -> np.ndarray:
    """Which of ``keys`` are in ``of`` (np.isin through a hash index instead of sorting)."""
    index = KeyIndex(of.shape[0])
    index.lookup_or_insert(of)
    return index.lookup(keys) >= 0


def _slots_of(plan: Any, keys: np.ndarray) -> np.ndarray:
    """Slots at which ``keys`` (a subset of ``plan.keys``) are read at the plan's step."""
    if keys.size == 0:
        return np.zeros(0, np.int64)
    index = KeyIndex(plan.keys.shape[0])
    index.lookup_or_insert(plan.keys)  # plan.keys are distinct: row i holds plan.keys[i]
    return plan.key_slots[index.lookup(keys)]


class StalenessMeter:
    """Measures the HET staleness of this worker's reads; see the module docstring.

    Args:
        num_workers: N.
        rank: this worker's rank.
    """

    def __init__(self, num_workers: int, rank: int) -> None:
        self.rank = rank
        self._ps = _KeyClock()
        # Per worker slot: updates applied to the copy there and not pushed yet.
        self._pending = [np.zeros(0, np.int32) for _ in range(num_workers)]
        # Per slot of this worker: the version of the copy there (-1: unknown, e.g. resumed).
        self._version = np.zeros(0, np.int64)
        self._expected_pull_versions = np.zeros(0, np.int64)
        self.resumed = False  # set after a resume: the replay does not know the PS versions
        self.seconds = 0.0  # spent measuring
        self.reads = 0
        self.stale_reads = 0
        self.max_staleness = 0
        self.total_staleness = 0
        self.version_mismatches = 0  # pulled rows whose PS version differs from the replay

    def before_step(self, plan: Any) -> None:
        """Measures this worker's reads of the step (``plan``: its own ``StepPlan``)."""
        start = time.perf_counter()
        self._version = _grown(self._version, plan.key_slots, -1)
        keys, slots = plan.keys, plan.key_slots
        clock = self._ps.get(keys, 0)
        fresh = _members(keys, np.concatenate([plan.pull_keys, plan.init_keys]))
        version = self._version[slots]
        measured = ~fresh & (version >= 0)  # copies cached before a resume are not measured
        staleness = clock[measured] - version[measured]
        self.reads += int(fresh.sum() + measured.sum())
        stale = staleness[staleness > 0]
        if stale.size:
            self.stale_reads += int(stale.size)
            self.max_staleness = max(self.max_staleness, int(stale.max()))
            self.total_staleness += int(stale.sum())
        self._version[slots[fresh]] = clock[fresh]
        self._expected_pull_versions = self._ps.get(plan.pull_keys, 1)
        self.seconds += time.perf_counter() - start

    def check_pulled_versions(self, versions: np.ndarray) -> None:
        """Compares the PS versions of the step's pulled rows (in ``pull_keys`` order) with the
        replay."""
        if self.resumed:
            return
        self.version_mismatches += int((self._expected_pull_versions != versions).sum())

    def after_step(self, plans: Sequence[Any]) -> None:
        """Replays every worker's updates and pushes of the step (``plans``: all workers')."""
        start = time.perf_counter()
        pushed_keys, pushed_counts = [], []
        for worker, plan in enumerate(plans):
            slots = np.concatenate([_slots_of(plan, plan.push_keys), plan.writeback_slots])
            pending = self._pending[worker] = _grown(
                self._pending[worker], np.concatenate([plan.key_slots, slots, plan.install_dst]),
                0)
            pending[plan.local_slots] += 1
            pushed_keys += [plan.push_keys, plan.writeback_keys]
            pushed_counts.append(pending[slots])
            pending[slots] = 0
            pending[plan.install_dst] = pending[plan.install_src]  # staging -> cache slot
            pending[plan.install_src] = 0
        own = plans[self.rank]
        self._version[own.local_slots] += 1
        self._version = _grown(self._version, own.install_dst, -1)
        self._version[own.install_dst] = self._version[own.install_src]
        keys, counts = np.concatenate(pushed_keys), np.concatenate(pushed_counts)
        if keys.size:  # the PS applies a key's pushes of a step once: one clock step per key
            distinct = KeyIndex(keys.shape[0])
            ids, _ = distinct.lookup_or_insert(keys)
            clock = np.bincount(ids, weights=counts, minlength=len(distinct)).astype(np.int64)
            self._ps.add(distinct.keys(), clock)
        self.seconds += time.perf_counter() - start

    def stats(self) -> dict[str, Any]:
        """Reads measured, stale reads, largest and mean staleness of the stale reads."""
        return {
            "reads": self.reads,
            "stale_reads": self.stale_reads,
            "max": self.max_staleness,
            "mean_of_stale": self.total_staleness / max(self.stale_reads, 1),
            "version_mismatches": self.version_mismatches,
            "seconds": self.seconds,
        }
