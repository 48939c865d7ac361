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
checked against the real servers. Cost per step: a few vectorised hash-table operations per
worker over the keys of the step (``tf.lookup`` tables, host memory).

After a resume the meter starts empty: a copy cached before the resumed step is not measured
until it is pulled again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


class _KeyCounts:
    """int64 key → int64 count (missing keys read ``default``), vectorised over numpy keys.

    The table is made on first use: creating it initialises TensorFlow's eager context, which
    must not happen before a MultiWorkerMirroredStrategy is created.
    """

    def __init__(self, default: int = 0) -> None:
        self._default = default
        self._table: Any = None

    def _made(self) -> Any:
        if self._table is None:
            self._table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.int64,
                                                                  self._default)
        return self._table

    def get(self, keys: np.ndarray) -> np.ndarray:
        if keys.size == 0:
            return np.zeros(0, np.int64)
        return self._made().lookup(tf.constant(keys, tf.int64)).numpy()

    def set(self, keys: np.ndarray, values: np.ndarray) -> None:
        """``keys`` must be distinct."""
        if keys.size:
            self._made().insert(tf.constant(keys, tf.int64), tf.constant(values, tf.int64))

    def add(self, keys: np.ndarray, values: Any) -> None:
        """Adds ``values`` to the counts of distinct ``keys``."""
        self.set(keys, self.get(keys) + values)


def _summed(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys and the sum of their counts."""
    unique, inverse = np.unique(keys, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64)


class StalenessMeter:
    """Measures the HET staleness of this worker's reads; see the module docstring.

    Args:
        num_workers: N.
        rank: this worker's rank.
    """

    def __init__(self, num_workers: int, rank: int) -> None:
        self.rank = rank
        self._clock = _KeyCounts()  # key -> PS clock (updates pushed)
        self._applied = _KeyCounts()  # key -> PS version (steps at which the PS applied it)
        self._version = _KeyCounts(-1)  # key -> version of this worker's copy (-1: unknown)
        self._pending = [_KeyCounts() for _ in range(num_workers)]  # updates not pushed yet
        self.reads = 0
        self.stale_reads = 0
        self.max_staleness = 0
        self.total_staleness = 0
        self.version_mismatches = 0  # pulled rows whose PS version differs from the replay

    def before_step(self, plan: Any) -> None:
        """Measures this worker's reads of the step (``plan``: its own ``StepPlan``)."""
        fresh = np.concatenate([plan.pull_keys, plan.init_keys])
        cached = np.setdiff1d(plan.keys, fresh, assume_unique=True)
        version = self._version.get(cached)
        known = version >= 0  # copies cached before a resume are not measured
        staleness = self._clock.get(cached[known]) - version[known]
        self.reads += int(plan.keys.size - (~known).sum())
        if staleness.size:
            self.stale_reads += int((staleness > 0).sum())
            self.max_staleness = max(self.max_staleness, int(staleness.max()))
            self.total_staleness += int(staleness[staleness > 0].sum())
        self._version.set(fresh, self._clock.get(fresh))

    def check_pulled_versions(self, keys: np.ndarray, versions: np.ndarray) -> None:
        """Compares the versions the PS returned for pulled ``keys`` with the replay."""
        self.version_mismatches += int((self._applied.get(keys) != versions).sum())

    def after_step(self, plans: list[Any]) -> None:
        """Replays every worker's updates and pushes of the step (``plans``: all workers')."""
        pushed_keys, pushed_counts = [], []
        for worker, plan in enumerate(plans):
            pending = self._pending[worker]
            pending.add(plan.local_keys, 1)
            keys = np.union1d(plan.push_keys, plan.writeback_keys)
            pushed_keys.append(keys)
            pushed_counts.append(pending.get(keys))
            pending.set(keys, np.zeros(keys.size, np.int64))
        own = plans[self.rank].local_keys
        self._version.add(own, 1)
        keys, counts = _summed(np.concatenate(pushed_keys), np.concatenate(pushed_counts))
        self._clock.add(keys, counts)
        self._applied.add(keys, 1)  # the PS applies a key's pushes of a step once

    def stats(self) -> dict[str, Any]:
        """Reads measured, stale reads, largest and mean staleness of the stale reads."""
        return {
            "reads": self.reads,
            "stale_reads": self.stale_reads,
            "max": self.max_staleness,
            "mean_of_stale": self.total_staleness / max(self.stale_reads, 1),
            "version_mismatches": self.version_mismatches,
        }
