"""Splitting requests over shards, parallel sends, merging, retries and fault injection.

``ShardedTransport`` implements the ``Transport`` contract on top of seven per-shard calls that a
concrete transport provides (gRPC in grpc_client.py, in-process in local.py). Keys are split by
``herald_tf.ps.sharding.shard_of`` (in C++: ``_native.partition``), the per-shard calls run in
parallel on a thread pool, and replies are scattered back into request order. Idempotent calls
(pull, versions, flush, control reads) are retried on ``UnavailableError`` with exponential
backoff; pushes and checkpoint/restore control calls never are.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from herald_tf._core import line_aligned_rows
from herald_tf.config import TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps._native import find_duplicate, find_non_finite, gather_rows_checked, partition
from herald_tf.ps.errors import DeadlineExceededError, UnavailableError
from herald_tf.ps.plan_mailbox import MAX_TAKE_WAIT_S
from herald_tf.scheduler.plan_codec import PLAN_WINDOW
from herald_tf.transport.types import ByteCounters, FaultInjection, Handle, PullRows, Transport

#: Control ops that are safe to repeat.
IDEMPOTENT_CONTROL = frozenset({"connect", "health", "stats"})

#: One chunk of a shard's pull reply: (positions within the shard's keys, values, state or None,
#: versions).
PullPart = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]


class _PullSink:
    """Output arrays of one pull, filled chunk by chunk as shards answer (overlapping receive).

    Chunks of different shards write disjoint rows, so only the allocation takes the lock.
    """

    def __init__(self, n: int, filtered: bool, with_state: bool) -> None:
        self.n, self.filtered, self.with_state = n, filtered, with_state
        self._lock = threading.Lock()
        self.values: np.ndarray | None = None
        self.state: np.ndarray | None = None
        if filtered:
            self.versions = np.full(n, -1, dtype=np.int64)
            self.received = np.zeros(n, dtype=bool)
        else:  # every row comes back
            self.versions = np.empty(n, dtype=np.int64)
            self.received = np.ones(n, dtype=bool)

    def allocate(self, dim: int, width: int) -> None:
        """Allocates the outputs (once; later calls change nothing)."""
        with self._lock:
            if self.values is None:
                alloc = np.zeros if self.filtered else np.empty
                self.state = alloc((self.n, width), np.float32) if self.with_state else None
                self.values = line_aligned_rows(self.n, dim, zero=self.filtered)

    def place(self, shard_positions: np.ndarray, p: np.ndarray, st: np.ndarray | None,
              ver: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Stores a chunk's versions and state; returns (the values array, destination rows).

        ``p`` are positions relative to the shard's keys. The caller writes the chunk's values
        to ``values[dest]`` (a transport may receive them there directly).
        """
        if self.values is None:
            self.allocate(dim, st.shape[1] if st is not None else 0)
        dest = shard_positions[p]
        self.versions[dest] = ver
        if self.filtered:
            self.received[dest] = True
        if self.state is not None and st is not None:
            self.state[dest] = st
        return self.values, dest

    def add(self, shard_positions: np.ndarray, part: PullPart) -> None:
        """Scatters one chunk (positions relative to the shard's keys) into request order."""
        p, v, st, ver = part
        values, dest = self.place(shard_positions, p, st, ver, v.shape[1])
        values[dest] = v

    def result(self) -> PullRows:
        if self.values is None:  # no key at all
            self.allocate(0, 0)
        return PullRows(self.values, self.versions, self.state, self.received)


class ShardSink:
    """Where one shard's pull reply goes: ``sink(part)`` scatters a chunk into request order;
    ``sink.place(...)`` (see ``_PullSink.place``) lets a transport receive values in place."""

    def __init__(self, pull: _PullSink, shard_positions: np.ndarray) -> None:
        self._pull = pull
        self._positions = shard_positions

    def __call__(self, part: PullPart) -> None:
        self._pull.add(self._positions, part)

    def place(self, p: np.ndarray, st: np.ndarray | None, ver: np.ndarray,
              dim: int) -> tuple[np.ndarray, np.ndarray]:
        return self._pull.place(self._positions, p, st, ver, dim)


def _take_rows(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``rows[positions]`` of a 2-D array (np.take is several times faster than fancy indexing
    of whole rows)."""
    return np.take(rows, positions, axis=0)


def _keys(keys: np.ndarray, what: str = "keys") -> np.ndarray:
    if not isinstance(keys, np.ndarray) or keys.dtype != np.int64 or keys.ndim != 1:
        raise InvalidArgumentError(
            f"Expected {what} to be a 1-D int64 numpy array. Received: "
            f"dtype={getattr(keys, 'dtype', type(keys))}, shape={getattr(keys, 'shape', None)}")
    return np.ascontiguousarray(keys)


def _rows(rows: np.ndarray, n: int, what: str) -> np.ndarray:
    if not isinstance(rows, np.ndarray) or rows.dtype != np.float32 or rows.ndim != 2 or \
            rows.shape[0] != n:
        raise InvalidArgumentError(
            f"Expected {what} to be a float32 array of shape ({n}, width). Received: "
            f"dtype={getattr(rows, 'dtype', type(rows))}, shape={getattr(rows, 'shape', None)}")
    return np.ascontiguousarray(rows)


def _versions(v: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if v is None:
        return None
    if not isinstance(v, np.ndarray) or v.dtype != np.int64 or v.shape != (n,):
        raise InvalidArgumentError(
            f"Expected {what} as a ({n},) int64 array. Received: "
            f"dtype={getattr(v, 'dtype', type(v))}, shape={getattr(v, 'shape', None)}")
    return np.ascontiguousarray(v)


def _check_distinct(table: str, keys: np.ndarray, positions: np.ndarray | None = None) -> None:
    dup = find_duplicate(keys)
    if dup is not None:
        at = dup if positions is None else (int(positions[dup[0]]), int(positions[dup[1]]))
        raise InvalidArgumentError(
            f"Expected distinct keys in a push or flush of table '{table}' (sum gradients "
            f"per key first). Received: key {int(keys[dup[0]])} at positions {at}")


def _non_finite(what: str, table: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"Expected finite {what} for table '{table}'. Received: a non-finite value")


class ShardedTransport(Transport):
    """Common client logic; subclasses implement the ``_*_shard`` calls and count bytes."""

    def __init__(self, num_shards: int, faults: FaultInjection | None = None,
                 retries: int = 3, backoff_s: float = 0.05, threads: int | None = None) -> None:
        if num_shards <= 0:
            raise ValueError(f"Expected num_shards > 0. Received: {num_shards}")
        self.num_shards = num_shards
        self.counters = ByteCounters()
        self._faults_left = dict((faults or FaultInjection()).drop)
        self._faults_lock = threading.Lock()
        self._retries = retries
        self._backoff_s = backoff_s
        self._tables: dict[str, TableConfig] = {}
        self._pool = ThreadPoolExecutor(max_workers=threads or max(16, 8 * num_shards),
                                        thread_name_prefix="herald-transport")
        # a push's per-shard checks and copies; apart from _pool, which waiting pulls may fill
        self._prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="herald-prep")

    # -- per-shard calls -----------------------------------------------------------------------

    @abc.abstractmethod
    def _pull_shard(self, shard: int, table: str, keys: np.ndarray, have: np.ndarray | None,
                    need: np.ndarray | None, with_state: bool,
                    timeout: float | None, sink: ShardSink) -> None:
        """Pulls from one shard, handing each reply chunk to ``sink`` as it arrives."""

    @abc.abstractmethod
    def _push_shard(self, shard: int, step: int, rank: int,
                    entries: list[tuple[str, np.ndarray, np.ndarray, float]],
                    wait_applied: bool, timeout: float | None) -> int:
        """One push to one shard; returns the shard's applied step."""

    @abc.abstractmethod
    def _flush_shard(self, shard: int, table: str, keys: np.ndarray, values: np.ndarray,
                     state: np.ndarray | None, versions: np.ndarray) -> None:
        """Flush to one shard."""

    @abc.abstractmethod
    def _versions_shard(self, shard: int, table: str, keys: np.ndarray) -> np.ndarray:
        """Versions from one shard."""

    @abc.abstractmethod
    def _control_shard(self, shard: int, op: str, args: Mapping[str, Any]) -> Any:
        """One control op on one shard."""

    @abc.abstractmethod
    def _post_plans_shard(self, shard: int, step: int, plans: Mapping[int, bytes]) -> None:
        """Posts plans of one step to one shard's plan mailbox."""

    @abc.abstractmethod
    def _take_plans_shard(self, shard: int, step: int, rank: int, wait_s: float,
                          max_plans: int) -> list[bytes]:
        """One take from a shard's plan mailbox (empty: not posted within ``wait_s``)."""

    # -- plumbing ------------------------------------------------------------------------------

    def _attempt(self, op: str, call: Callable[[], Any], idempotent: bool) -> Any:
        for attempt in range(self._retries + 1 if idempotent else 1):
            try:
                with self._faults_lock:
                    drop = self._faults_left.get(op, 0) > 0
                    if drop:
                        self._faults_left[op] -= 1
                if drop:
                    raise UnavailableError(f"{op} request dropped by fault injection")
                return call()
            except UnavailableError:
                if not idempotent or attempt == self._retries:
                    raise
                time.sleep(self._backoff_s * (2 ** attempt))
        raise AssertionError("unreachable")

    def _submit(self, op: str, call: Callable[[], Any], idempotent: bool) -> Any:
        return self._pool.submit(self._attempt, op, call, idempotent)

    def _pull_call(self, shard: int, table: str, keys: np.ndarray, have: np.ndarray | None,
                   need: np.ndarray | None, with_state: bool, timeout: float | None,
                   sink: ShardSink) -> Callable[[], None]:
        return lambda: self._pull_shard(shard, table, keys, have, need, with_state, timeout,
                                        sink)

    def _check_rows(self, table: str, keys: np.ndarray, rows: np.ndarray, what: str,
                    state: bool = False, contents: bool = True) -> None:
        """Checks a push/flush before anything is sent, so no shard records part of a bad one.

        Table and width are checked against the configs given to ``connect`` (when it was
        called on this transport); every shard re-validates on arrival. ``contents``: also
        check that the rows are finite and the keys distinct (push does it per shard).
        """
        cfg = self._tables.get(table)
        if self._tables and cfg is None:
            raise InvalidArgumentError(
                f"Expected a table given to connect ({', '.join(sorted(self._tables))}). "
                f"Received: table='{table}'")
        if cfg is not None:
            width = cfg.state_width if state else cfg.dim
            if rows.shape[1] != width:
                raise InvalidArgumentError(
                    f"Expected {what} of table '{table}' with shape ({keys.shape[0]}, {width}). "
                    f"Received: shape={rows.shape}")
        if not contents:
            return
        if find_non_finite(rows) >= 0:
            raise _non_finite(what, table)
        _check_distinct(table, keys)

    def _push_part(self, table: str, keys: np.ndarray, grads: np.ndarray,
                   pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One shard's (keys, gradients) of a push, checked: distinct keys (a key repeats only
        within its shard), finite gradients (checked while gathering them)."""
        shard_keys = keys[pos]
        _check_distinct(table, shard_keys, pos)
        rows, bad = gather_rows_checked(grads, pos)
        if bad >= 0:
            raise _non_finite("gradients", table)
        return shard_keys, rows

    def _split_push(self, grads: Mapping[str, tuple[np.ndarray, np.ndarray]],
                    learning_rates: Mapping[str, float]
                    ) -> list[tuple[str, np.ndarray, np.ndarray, float, list[np.ndarray]]]:
        """Each pushed table as (name, keys, gradients, learning rate, positions of each shard's
        keys), its arguments checked (types, shapes, a learning rate, the connected table's
        width); the gradients' contents are not."""
        out = []
        for table, (k, g) in grads.items():
            k = _keys(k, f"pushed keys of table '{table}'")
            g = _rows(g, k.shape[0], f"gradients of table '{table}'")
            if table not in learning_rates:
                raise InvalidArgumentError(
                    f"Expected a learning rate for every pushed table. Received: none for "
                    f"'{table}'")
            self._check_rows(table, k, g, "gradients", contents=False)
            out.append((table, k, g, float(learning_rates[table]), self._split(k)))
        return out

    def _split(self, keys: np.ndarray) -> list[np.ndarray]:
        """Positions of each shard's keys: ``split_by_shard`` in one C++ pass."""
        return partition(keys, self.num_shards)

    # -- Transport -----------------------------------------------------------------------------

    def pull(self, table: str, keys: np.ndarray, *, have_versions: np.ndarray | None = None,
             min_versions: np.ndarray | None = None, with_state: bool = False,
             timeout: float | None = None) -> Handle[PullRows]:
        keys = _keys(keys)
        n = keys.shape[0]
        have = _versions(have_versions, n, "have_versions")
        need = _versions(min_versions, n, "min_versions")
        parts = self._split(keys)
        sink = _PullSink(n, have is not None, with_state)
        cfg = self._tables.get(table)
        if cfg is not None and n:
            # allocated by the caller's thread, whose malloc arena gets the array back when the
            # caller drops it: the next pull reuses those pages instead of faulting in new ones
            sink.allocate(cfg.dim, cfg.state_width)
        futures = [self._submit("pull", self._pull_call(
            s, table, keys[pos], None if have is None else have[pos],
            None if need is None else need[pos], with_state, timeout,
            ShardSink(sink, pos)), idempotent=True)
            for s, pos in enumerate(parts)]
        return Handle(futures, lambda _: sink.result())

    def push(self, step: int, rank: int, grads: Mapping[str, tuple[np.ndarray, np.ndarray]],
             learning_rates: Mapping[str, float], *, wait_applied: bool = False,
             timeout: float | None = None) -> Handle[int]:
        per_shard: list[list[tuple[str, np.ndarray, np.ndarray, float]]] = [
            [] for _ in range(self.num_shards)]
        for table, k, g, lr, split in self._split_push(grads, learning_rates):
            parts = [(s, pos) for s, pos in enumerate(split) if pos.shape[0]]
            # every shard's part is checked and copied (on 2 threads) before anything is sent
            done = [self._prep_pool.submit(self._push_part, table, k, g, pos)
                    for _, pos in parts[1:]]
            checked = [self._push_part(table, k, g, parts[0][1])] if parts else []
            checked += [f.result() for f in done]
            for (s, _), (shard_keys, rows) in zip(parts, checked, strict=True):
                per_shard[s].append((table, shard_keys, rows, lr))
        futures = [self._submit("push", (
            lambda s=s, e=entries: self._push_shard(s, step, rank, e, wait_applied, timeout)),
            idempotent=False) for s, entries in enumerate(per_shard)]
        return Handle(futures, min)

    def flush(self, table: str, keys: np.ndarray, values: np.ndarray,
              state: np.ndarray | None, versions: np.ndarray) -> Handle[None]:
        keys = _keys(keys, "flushed keys")
        n = keys.shape[0]
        values = _rows(values, n, "flushed values")
        if state is not None:
            state = _rows(state, n, "flushed optimizer state")
        versions = _versions(versions, n, "flushed versions")
        if versions is None:
            raise InvalidArgumentError("Expected the versions of the flushed rows. Received: None")
        self._check_rows(table, keys, values, "flushed values")
        if state is not None:
            self._check_rows(table, keys, state, "flushed optimizer state", state=True)
        futures = []
        for s, pos in enumerate(self._split(keys)):
            if pos.shape[0] == 0:
                continue
            futures.append(self._submit("flush", (
                lambda s=s, p=pos: self._flush_shard(
                    s, table, keys[p], _take_rows(values, p),
                    None if state is None else _take_rows(state, p), versions[p])),
                idempotent=True))
        return Handle(futures, lambda _: None)

    def versions(self, table: str, keys: np.ndarray) -> Handle[np.ndarray]:
        keys = _keys(keys)
        parts = self._split(keys)
        futures = [self._submit("versions", (
            lambda s=s, p=pos: self._versions_shard(s, table, keys[p])), idempotent=True)
            for s, pos in enumerate(parts)]

        def combine(replies: list[np.ndarray]) -> np.ndarray:
            out = np.zeros(keys.shape[0], dtype=np.int64)
            for pos, v in zip(parts, replies, strict=True):
                out[pos] = v
            return out

        return Handle(futures, combine)

    def control(self, op: str, args: Mapping[str, Any] | None = None,
                shards: Sequence[int] | None = None) -> list[Any]:
        targets = range(self.num_shards) if shards is None else shards
        futures = [self._submit("control", (
            lambda s=s: self._control_shard(s, op, dict(args or {}))),
            idempotent=op in IDEMPOTENT_CONTROL) for s in targets]
        return Handle(futures, list).wait()

    def connect(self, tables: Sequence[TableConfig], num_workers: int,
                rank: int | None = None) -> list[dict[str, Any]]:
        result = super().connect(tables, num_workers, rank)
        self._tables.update({t.name: t for t in tables})
        return result

    def _plan_shard(self, step: int) -> int:
        # a window of consecutive steps at one shard: one post per step, and one take brings a
        # worker the rest of the window; windows rotate over the shards
        return (step // PLAN_WINDOW) % self.num_shards

    def post_plans(self, step: int, plans: Mapping[int, bytes]) -> None:
        if step < 0:
            raise InvalidArgumentError(f"Expected a plan step >= 0. Received: step={step}")
        self._attempt("post_plans", lambda: self._post_plans_shard(
            self._plan_shard(step), step, plans), idempotent=True)

    def take_plans(self, step: int, rank: int, timeout: float,
                   max_plans: int = 1) -> list[bytes]:
        shard = self._plan_shard(step)
        deadline = time.monotonic() + timeout
        while True:
            # short waits at the server (it caps them), so a taker never holds a server thread
            # for long; asking again until our own deadline
            wait_s = max(0.0, min(deadline - time.monotonic(), MAX_TAKE_WAIT_S))
            plans = self._attempt("take_plans", lambda w=wait_s: (
                self._take_plans_shard(shard, step, rank, w, max_plans)), idempotent=True)
            if plans:
                return plans
            if time.monotonic() >= deadline:
                raise DeadlineExceededError(
                    f"Expected worker 0 to post the plan of step {step} for rank {rank} (at PS "
                    f"shard {shard}) within {timeout} s. Received: none; is worker 0 running the "
                    "same job (plan_source='rank0')?")

    def byte_counts(self) -> dict[str, int]:
        return self.counters.snapshot()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._prep_pool.shutdown(wait=False, cancel_futures=True)
