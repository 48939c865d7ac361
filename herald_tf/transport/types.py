"""The client interface to parameter-server shards (DESIGN §4 Transport), in ps-lite's manner.

A ``Transport`` talks to S shards. ``pull``/``push``/``flush``/``versions`` split the keys by
``herald_tf.ps.sharding.shard_of``, send one request per shard to all shards in parallel, and
return a ``Handle`` at once; ``handle.wait()`` returns the merged result or raises the first
shard's error (the error classes of ``herald_tf.ps.errors``). Control calls (connect, health,
stats, checkpoint, restore) are synchronous.

Input rules: keys are 1-D int64 (any values); in ``push`` and ``flush`` the keys of one table are
distinct (sum gradients per key first); pull keys may repeat. Rows are float32 ``(n, dim)``.

Ordering: requests from one thread to one shard are sent in call order, but two requests in
flight at once may be served in either order; a caller that needs one request's effect before
another waits on the first handle (or uses the step protocol: ``min_versions`` of a pull waits at
the server for the pushes it needs). Each worker sends exactly one push per (shard, step): one
``push`` call per step does that, sending an empty push to shards with no keys.

Thread safety: every method may be called from any number of threads at once. A transport runs
at most ``threads`` per-shard requests at a time (default 8 per shard); a pull waiting at the
server for ``min_versions`` holds one until it returns, so keep fewer waiting pulls in flight
than that (and than the server's ``--threads``), or a push queued behind them waits too.

Buffer lifetime: the arrays passed in are read before the call returns (they are encoded or
copied), so the caller may reuse them at once; arrays returned by ``wait()`` belong to the
caller. Byte counters (``byte_counts``) count the payload bytes actually sent and received, by
kind: ``keys`` (keys of every request), ``pulled_rows`` (values, state and versions of pull
replies, plus the int64 request positions when ``have_versions`` let the server skip rows),
``pushed_gradients``, ``flushed_rows`` (values, state, versions), ``control`` (control JSON
both ways, version replies, per-key versions in pull requests), and ``plans`` (encoded plans
posted by worker 0 and taken by the others, ``post_plans``/``take_plans``). Protobuf/HTTP2
framing is not counted.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import numpy as np

from herald_tf.config import TableConfig

T = TypeVar("T")

BYTE_KINDS = ("keys", "pulled_rows", "pushed_gradients", "flushed_rows", "control", "plans")


class Handle(Generic[T]):
    """A request in flight: ``wait()`` blocks for the merged result of every shard's reply."""

    def __init__(self, futures: Sequence[Future], combine: Callable[[list[Any]], T]) -> None:
        self._futures = list(futures)
        self._combine = combine
        self._lock = threading.Lock()
        self._result: tuple[T] | None = None

    def done(self) -> bool:
        """Whether every shard has answered (wait() then does not block)."""
        return all(f.done() for f in self._futures)

    def wait(self, timeout: float | None = None) -> T:
        """The result; raises the first shard's error, or ``TimeoutError`` after ``timeout``."""
        with self._lock:
            if self._result is None:
                parts = [f.result(timeout=timeout) for f in self._futures]
                self._result = (self._combine(parts),)
            return self._result[0]


@dataclasses.dataclass
class PullRows:
    """Rows of a pull in request order.

    Args:
        values: (n, dim) float32; zeros where not ``received``.
        versions: (n,) int64; -1 where not ``received``.
        state: (n, state_width) float32 when pulled ``with_state``, else None.
        received: (n,) bool; False for rows the server skipped because the caller's
            ``have_versions`` was current.
    """

    values: np.ndarray
    versions: np.ndarray
    state: np.ndarray | None
    received: np.ndarray


class ByteCounters:
    """Thread-safe byte counts by kind (see ``BYTE_KINDS``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(BYTE_KINDS, 0)

    def add(self, **counts: int) -> None:
        """Adds counts by kind."""
        with self._lock:
            for kind, n in counts.items():
                self._counts[kind] += int(n)

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts."""
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        """Sets every count to zero."""
        with self._lock:
            for kind in self._counts:
                self._counts[kind] = 0


@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """Test switch: drop the first ``drop[op]`` per-shard requests of an op before sending.

    A dropped request raises ``UnavailableError`` as a lost connection would, so tests see
    idempotent calls (pull, versions, flush, control reads) retried and pushes not retried.

    Args:
        drop: op name ("pull", "push", "flush", "versions", "control", "post_plans",
            "take_plans") → requests to drop.
    """

    drop: Mapping[str, int] = dataclasses.field(default_factory=dict)


class Transport(abc.ABC):
    """Client of S parameter-server shards; see the module docstring for the contract."""

    num_shards: int

    @abc.abstractmethod
    def pull(self, table: str, keys: np.ndarray, *, have_versions: np.ndarray | None = None,
             min_versions: np.ndarray | None = None, with_state: bool = False,
             timeout: float | None = None) -> Handle[PullRows]:
        """Rows of ``keys``; ``min_versions`` waits at the server, ``have_versions`` filters."""

    @abc.abstractmethod
    def push(self, step: int, rank: int,
             grads: Mapping[str, tuple[np.ndarray, np.ndarray]],
             learning_rates: Mapping[str, float], *, wait_applied: bool = False,
             timeout: float | None = None) -> Handle[int]:
        """This rank's one push of ``step`` to every shard: table → (keys, grads (n, dim)).

        Returns the lowest applied step over the shards once every shard accepted (or, with
        ``wait_applied``, applied) the push. Never retried: a failed push is reported. The
        gradients are validated (table, width, finite, distinct keys) before anything is sent,
        so a bad push reaches no shard; a push that fails at some shards only (a lost
        connection, a step conflict) may be recorded at the others: treat it as fatal for the
        step (resume from a checkpoint).
        """

    @abc.abstractmethod
    def flush(self, table: str, keys: np.ndarray, values: np.ndarray,
              state: np.ndarray | None, versions: np.ndarray) -> Handle[None]:
        """Writes back dirty rows with their optimizer state and versions (idempotent).

        Validated before sending (table, widths, finite, distinct keys). A shard refuses rows
        older than its own (``FailedPreconditionError``); the other shards' rows are written
        (rows are independent), so after fixing the cause the whole flush may be re-sent.
        """

    @abc.abstractmethod
    def versions(self, table: str, keys: np.ndarray) -> Handle[np.ndarray]:
        """The server's version of every key (0 for a row never written)."""

    @abc.abstractmethod
    def control(self, op: str, args: Mapping[str, Any] | None = None,
                shards: Sequence[int] | None = None) -> list[Any]:
        """Runs a control op on the given shards (default all), in parallel; results by shard."""

    @abc.abstractmethod
    def post_plans(self, step: int, plans: Mapping[int, bytes]) -> None:
        """Worker 0's encoded plans of ``step`` for other ranks (rank → bytes), stored at shard
        ``(step // PLAN_WINDOW) % S`` until taken (``herald_tf.ps.plan_mailbox``).
        Synchronous; retried (a repeated post replaces identical plans). A full mailbox raises
        ``ResourceExhaustedError``."""

    @abc.abstractmethod
    def take_plans(self, step: int, rank: int, timeout: float,
                   max_plans: int = 1) -> list[bytes]:
        """The plan worker 0 posted for ``rank`` at ``step``, followed by those of the next steps
        already posted at the same shard (at most ``max_plans`` in all), waiting up to
        ``timeout`` seconds for the first (``DeadlineExceededError`` after). Synchronous;
        retried."""

    @abc.abstractmethod
    def byte_counts(self) -> dict[str, int]:
        """Payload bytes moved so far, by kind."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases channels and threads; the transport is unusable afterwards."""

    # -- control calls built on control() ------------------------------------------------------

    def connect(self, tables: Sequence[TableConfig], num_workers: int,
                rank: int | None = None) -> list[dict[str, Any]]:
        """Registers the tables on every shard; a config mismatch raises FailedPreconditionError.

        Returns every shard's health (its ``applied_step`` tells where a restored PS resumes).
        """
        return self.control("connect", {"tables": [t.to_dict() for t in tables],
                                         "num_workers": num_workers, "rank": rank})

    def health(self) -> list[dict[str, Any]]:
        """Every shard's health."""
        return self.control("health")

    def stats(self) -> list[dict[str, Any]]:
        """Every shard's counters and table sizes."""
        return self.control("stats")

    def checkpoint(self, step: int, directory: str | None = None,
                   timeout: float | None = None) -> str:
        """Checkpoints every shard at ``step`` (after it is applied), then writes the manifest.

        Returns the manifest path. ``directory`` defaults to each server's --checkpoint-dir.
        """
        args = {"step": step, "directory": directory, "timeout_s": timeout}
        self.control("checkpoint", args)
        return self.control("commit", args, shards=[0])[0]["manifest"]

    def restore(self, step: int | None = None, directory: str | None = None) -> int:
        """Restores every shard from a checkpoint (default: the latest); returns its step."""
        steps = self.control("restore", {"step": step, "directory": directory})
        return int(steps[0]["step"])

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
