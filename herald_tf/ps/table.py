"""One shard of one embedding table: key index (C++), growable row storage, and its updates.

A row is (value[dim], optimizer state[state_width], version). Rows are created on first write
(push or flush) with the deterministic initializer (herald_tf._core.init_rows) and the
optimizer's initial state; a read of an absent key returns that initial row with version 0 and
creates nothing. Updates use herald_tf._core.sparse_apply, the kernel the worker runs. Every
method validates its whole request before changing anything and does per-key work in C++ or
vectorised numpy. Not thread-safe: the owning ``ShardStore`` serialises calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from herald_tf import _core
from herald_tf.config import TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps._native import KeyIndex, apply_rows, find_duplicate, find_non_finite
from herald_tf.ps.errors import FailedPreconditionError


def check_keys(keys: np.ndarray, what: str, unique: bool) -> np.ndarray:
    """A 1-D int64 key array (optionally required distinct), else ``InvalidArgumentError``."""
    if not isinstance(keys, np.ndarray) or keys.dtype != np.int64 or keys.ndim != 1:
        raise InvalidArgumentError(
            f"Expected {what} to be a 1-D int64 array. Received: "
            f"dtype={getattr(keys, 'dtype', type(keys))}, shape={getattr(keys, 'shape', None)}"
        )
    keys = np.ascontiguousarray(keys)
    if unique:
        _refuse_duplicate(keys, find_duplicate(keys), what)
    return keys


def _refuse_duplicate(keys: np.ndarray, dup: tuple[int, int] | None, what: str) -> None:
    if dup is not None:
        raise InvalidArgumentError(
            f"Expected distinct {what} (sum gradients per key first). Received: key "
            f"{int(keys[dup[0]])} at positions {dup[0]} and {dup[1]}"
        )


def check_rows(rows: np.ndarray, n: int, width: int, what: str, table: str,
               finite: bool = True) -> np.ndarray:
    """A (n, width) float32 array with finite values, else ``InvalidArgumentError``."""
    if not isinstance(rows, np.ndarray) or rows.dtype != np.float32:
        raise InvalidArgumentError(
            f"Expected {what} of table '{table}' to be float32. Received: "
            f"dtype={getattr(rows, 'dtype', type(rows))}"
        )
    if rows.shape != (n, width):
        raise InvalidArgumentError(
            f"Expected {what} of table '{table}' with shape ({n}, {width}). Received: "
            f"shape={rows.shape}"
        )
    rows = np.ascontiguousarray(rows)
    bad = find_non_finite(rows) if finite else -1
    if bad >= 0:
        raise InvalidArgumentError(
            f"Expected finite {what} for table '{table}'. Received: {rows.reshape(-1)[bad]} at "
            f"row {bad // max(width, 1)}, column {bad % max(width, 1)}"
        )
    return rows


def _gather(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``table[rows]`` (rows in range), by the C++ gather for rows of any width."""
    if table.shape[1] == 0:  # SGD keeps no state
        return np.empty((rows.shape[0], 0), dtype=table.dtype)
    return _core.gather_rows(table, rows)


@dataclasses.dataclass
class ResolvedRows:
    """Rows of some keys in one ``TableShard`` (-1: no row yet), found before an apply.

    Valid for as long as that shard object holds the table: rows never move or go away in it,
    and a restore replaces the object, so the apply checks ``table`` is still itself.
    """

    table: TableShard
    rows: np.ndarray


@dataclasses.dataclass
class StagedUpdate:
    """One table's update of a step, summed and checked by ``TableShard.stage_update``: the
    rows to update (distinct, existing) and their gradients, as parts in row order."""

    table: TableShard
    rows: np.ndarray
    grads: list[np.ndarray]
    learning_rate: float

    def apply(self) -> int:
        """Applies the optimizer to every row once (cannot fail: all was checked); returns the
        number of rows updated."""
        t, start = self.table, 0
        for g in self.grads:
            n = g.shape[0]
            if n:
                apply_rows(t.config.optimizer, t.values, t.state, t.versions,
                           self.rows[start:start + n], g, self.learning_rate)
            start += n
        return int(self.rows.shape[0])


class TableShard:
    """The rows of one table that live on one shard."""

    def __init__(self, config: TableConfig, capacity_hint: int = 1024) -> None:
        self.config = config
        self.dim = config.dim
        self.state_width = config.state_width
        self.index = KeyIndex(capacity_hint)
        cap = max(int(capacity_hint), 16)
        # rows start on cache lines: a 256-byte row then takes 4 lines, not 5, in every random
        # read and write of the apply and the pull's gather
        self.values = _core.line_aligned_rows(cap, self.dim)
        self.state = _core.line_aligned_rows(cap, self.state_width)
        self.versions = np.zeros(cap, dtype=np.int64)

    @property
    def size(self) -> int:
        """Number of rows held."""
        return len(self.index)

    def _reserve(self, total: int) -> None:
        cap = self.values.shape[0]
        if total <= cap:
            return
        new_cap = max(total, 2 * cap)
        for name in ("values", "state", "versions"):
            old = getattr(self, name)
            new = (np.zeros(new_cap, dtype=old.dtype) if old.ndim == 1 else
                   _core.line_aligned_rows(new_cap, old.shape[1], zero=True))
            new[: self.size] = old[: self.size]
            setattr(self, name, new)

    def _rows_creating(self, keys: np.ndarray) -> np.ndarray:
        """Rows of ``keys``, creating absent ones (initial value, initial state, version 0)."""
        before = self.size
        self._reserve(before + keys.shape[0])
        rows, is_new = self.index.lookup_or_insert(keys)
        if is_new.any():
            new_keys = keys[is_new]
            new_rows = rows[is_new]  # == before, before + 1, ... in order
            cfg = self.config
            self.values[new_rows] = _core.init_rows(cfg.initializer, cfg.seed, new_keys, self.dim)
            if self.state_width:
                self.state[new_rows] = _core.init_state(cfg.optimizer, new_keys.shape[0], self.dim)
            self.versions[new_rows] = 0
        return rows

    def resolve_distinct(self, keys: np.ndarray, what: str) -> ResolvedRows:
        """The rows of ``keys`` now (-1 where absent), for a later ``apply``, checking the keys
        distinct in the same pass (``InvalidArgumentError`` naming ``what``); creates none."""
        rows, dup = self.index.lookup_distinct(keys)
        _refuse_duplicate(keys, dup, what)
        return ResolvedRows(self, rows)

    def _rows_for_apply(self, all_keys: np.ndarray, rows: Sequence[ResolvedRows | None]
                        ) -> np.ndarray:
        """Rows of ``all_keys`` (the parts' keys in order), creating absent ones; parts resolved
        against this shard need a lookup only for the keys absent when they were resolved."""
        if not rows or any(r is None or r.table is not self for r in rows):
            return self._rows_creating(all_keys)
        found = rows[0].rows if len(rows) == 1 else np.concatenate([r.rows for r in rows])
        absent = found < 0
        if absent.any():  # another push may have created some meanwhile: looked up again
            found = found.copy()
            found[absent] = self._rows_creating(all_keys[absent])
        return found

    def versions_of(self, keys: np.ndarray) -> np.ndarray:
        """Version of every key (0 for an absent row)."""
        rows = self.index.lookup(keys)
        out = np.zeros(keys.shape[0], dtype=np.int64)
        present = rows >= 0
        out[present] = self.versions[rows[present]]
        return out

    def read(self, keys: np.ndarray, with_state: bool) -> tuple[np.ndarray, np.ndarray | None,
                                                                np.ndarray]:
        """(values, state or None, versions) of ``keys``; absent rows read as initial rows."""
        rows = self.index.lookup(keys)
        present = rows >= 0
        if present.all():
            # the C++ gather fetches rows ahead (they are scattered over the table)
            return (_gather(self.values, rows), _gather(self.state, rows) if with_state else None,
                    np.take(self.versions, rows))
        n = keys.shape[0]
        values = np.empty((n, self.dim), dtype=np.float32)
        versions = np.zeros(n, dtype=np.int64)
        state = np.empty((n, self.state_width), dtype=np.float32) if with_state else None
        pr = rows[present]
        values[present] = self.values[pr]
        versions[present] = self.versions[pr]
        absent = ~present
        cfg = self.config
        values[absent] = _core.init_rows(cfg.initializer, cfg.seed, keys[absent], self.dim)
        if state is not None:
            state[present] = self.state[pr]
            if self.state_width:
                state[absent] = _core.init_state(cfg.optimizer, int(absent.sum()), self.dim)
        return values, state, versions

    def check_flush(self, keys: np.ndarray, values: np.ndarray, state: np.ndarray | None,
                    versions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                   np.ndarray]:
        """Validates a flush (distinct keys, shapes, finite, version not behind the server's)."""
        name = self.config.name
        keys = check_keys(keys, f"flushed keys of table '{name}'", unique=True)
        n = keys.shape[0]
        values = check_rows(values, n, self.dim, "flushed values", name)
        if self.state_width:
            if state is None:
                raise InvalidArgumentError(
                    f"Expected optimizer state with each flushed row of table '{name}' "
                    f"({self.state_width} floats per row). Received: none"
                )
            state = check_rows(state, n, self.state_width, "flushed optimizer state", name)
        if not isinstance(versions, np.ndarray) or versions.dtype != np.int64 or \
                versions.shape != (n,):
            raise InvalidArgumentError(
                f"Expected flushed versions of table '{name}' as ({n},) int64. Received: "
                f"{getattr(versions, 'dtype', type(versions))}{getattr(versions, 'shape', '')}"
            )
        current = self.versions_of(keys)
        behind = versions < current
        if behind.any():
            i = int(np.flatnonzero(behind)[0])
            raise FailedPreconditionError(
                f"Expected flushed rows at least as new as the server's. Received: key "
                f"{int(keys[i])} of table '{name}' with version {int(versions[i])}, the server "
                f"holds version {int(current[i])} (a stale write-back would lose updates)"
            )
        return keys, values, state, versions

    def write(self, keys: np.ndarray, values: np.ndarray, state: np.ndarray | None,
              versions: np.ndarray) -> None:
        """Stores validated rows (value, state, version), creating absent ones."""
        rows = self._rows_creating(keys)
        self.values[rows] = values
        if self.state_width and state is not None:
            self.state[rows] = state
        self.versions[rows] = versions

    def stage_update(self, keys: list[np.ndarray], grads: list[np.ndarray],
                     learning_rate: float, distinct: bool = False,
                     rows: Sequence[ResolvedRows | None] = ()) -> StagedUpdate:
        """Sums validated gradient parts in order and checks the sums, writing no row value.

        ``keys[i]``/``grads[i]`` are the parts (chunks) of every rank's push, in increasing rank
        order, each rank's keys distinct. A key's summed gradient is ((g_r0 + g_r1) + g_r2) ...
        so the result does not depend on arrival order. ``distinct`` says no key appears twice
        over all parts (one rank pushed): then each part is applied as it is, without copies.
        ``rows``: each part's rows as resolved on arrival (``resolve_distinct``), when all were.
        Sums that overflow raise ``InvalidArgumentError``; keys first touched here get their
        rows (initial value, version 0: what a pull reads for them anyway) even then, and
        nothing else changes. ``StagedUpdate.apply`` then applies the optimizer once per key,
        so a step of several tables can be checked whole before any table changes.
        """
        all_keys = (np.empty(0, np.int64) if not keys else keys[0] if len(keys) == 1
                    else np.concatenate(keys))
        if all_keys.shape[0] == 0:
            return StagedUpdate(self, np.empty(0, np.int64), [], learning_rate)
        found = self._rows_for_apply(all_keys, rows)
        if distinct:  # the parts as validated on arrival (distinct keys, finite): no re-check
            return StagedUpdate(self, found, list(grads), learning_rate)
        # one hash pass and the lookup op's deterministic sum (from zero, in part order) in C++
        # (numpy's unique and per-part fancy adds took 2-3x as long); the rows are then distinct
        # by construction and only the sums need a finite check (finite parts may overflow)
        unique_rows, inverse = _core.unique_slots(found, self.values.shape[0])
        summed = _core.sum_rows_by_index(grads, inverse, unique_rows.shape[0])
        check_rows(summed, unique_rows.shape[0], self.dim, "summed gradients", self.config.name)
        return StagedUpdate(self, unique_rows, [summed], learning_rate)

    def apply(self, keys: list[np.ndarray], grads: list[np.ndarray], learning_rate: float,
              distinct: bool = False, rows: Sequence[ResolvedRows | None] = ()) -> int:
        """``stage_update`` then its ``apply``: the optimizer once per key; returns the number of
        rows updated."""
        return self.stage_update(keys, grads, learning_rate, distinct, rows).apply()

    def export(self) -> dict[str, np.ndarray]:
        """Copies of every row: keys, values, state, versions (row order)."""
        n = self.size
        return {
            "keys": self.index.keys(),
            "values": self.values[:n].copy(),
            "state": self.state[:n].copy(),
            "versions": self.versions[:n].copy(),
        }

    def load(self, keys: np.ndarray, values: np.ndarray, state: np.ndarray,
             versions: np.ndarray) -> None:
        """Inserts rows exported by ``export`` (keys distinct, not yet present)."""
        rows = self._rows_creating(keys)
        self.values[rows] = values
        if self.state_width:
            self.state[rows] = state
        self.versions[rows] = versions
