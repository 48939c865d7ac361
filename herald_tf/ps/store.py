"""One parameter-server shard: named tables, the push aggregation protocol, waits, stats.

``ShardStore`` is the row-serving core, free of gRPC and TensorFlow, so a PS process wraps it in
a gRPC service (herald_tf/ps/service.py) and a worker that owns rows can serve them with the
same code (DESIGN §3). All methods are thread-safe (one lock per shard; waits release it).

Step protocol (DESIGN §2a Aggregation). Steps are numbered 0, 1, 2, ... (a restored shard
continues after its checkpoint's step). Each of the N workers sends exactly one push per
(shard, step), possibly empty. A push is validated completely on arrival (unknown table, dtype,
shape, non-finite gradient, duplicate keys, a step already applied or pushed by that rank, a
learning rate differing from the other ranks') and either refused with nothing recorded or
recorded. When all N pushes of step ``applied_step + 1`` are there, the shard sums each key's
gradients in rank order and applies the optimizer once (``_core.sparse_apply``); pushes of later
steps (up to ``push_window`` ahead) wait their turn. Nothing blocks on a missing push except
callers that ask to wait (``push(wait_applied=True)``, ``pull(min_versions=...)``,
``checkpoint``), and they get ``DeadlineExceededError`` naming the missing ranks when their
deadline passes; the pending step stays pending, so a late worker can still complete it.
A step is applied whole or not at all: when finite pushes sum to an overflow, the step is
dropped, no table changes, and the shard refuses every later push and wait with that reason
(``health()["failed_step"]``) until a checkpoint is restored; reads are still served.

A service whose client pushes to all shards at once may split a push in two (the TCP data
plane does): ``check_push`` validates without recording, ``commit_push`` records once the client
heard that every shard accepted its part, so a part one shard refuses is recorded by none.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from herald_tf.config import TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import DeadlineExceededError, FailedPreconditionError
from herald_tf.ps.plan_mailbox import PlanMailbox
from herald_tf.ps.table import ResolvedRows, TableShard, check_keys, check_rows

DEFAULT_WAIT_S = 60.0


@dataclasses.dataclass
class PushEntry:
    """Gradients of one table in one push: keys, (n, dim) float32, the step's lr.

    A push may carry a table in several entries (chunks); its keys are distinct across all of
    them and its learning rate is the same in each. ``finite_checked``: the service already
    checked every gradient finite on arrival (while receiving it), so the store does not again.
    ``distinct_checked``: the table's keys in this push were already found distinct (by
    ``check_push``, or by ``resolve_push_keys`` for a table the push carries in one entry).
    ``rows``: the keys' rows as ``resolve_push_keys`` found them, for the apply.
    """

    table: str
    keys: np.ndarray
    grads: np.ndarray
    learning_rate: float
    finite_checked: bool = False
    distinct_checked: bool = False
    rows: ResolvedRows | None = None


@dataclasses.dataclass
class _PendingStep:
    first_arrival: float
    pushes: dict[int, list[PushEntry]] = dataclasses.field(default_factory=dict)
    learning_rates: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PullResult:
    """Rows of a pull, in request order for the positions listed.

    Args:
        positions: (m,) int64 positions in the request of the rows returned (all of them unless
            ``have_versions`` filtered some out).
        values: (m, dim) float32.
        state: (m, state_width) float32, or None when not asked for.
        versions: (m,) int64.
    """

    positions: np.ndarray
    values: np.ndarray
    state: np.ndarray | None
    versions: np.ndarray


class ShardStore:
    """Shard ``shard_index`` of ``num_shards``: tables, step aggregation and row service."""

    def __init__(self, shard_index: int = 0, num_shards: int = 1, num_workers: int | None = None,
                 push_window: int = 8, wait_s: float = DEFAULT_WAIT_S) -> None:
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"Expected 0 <= shard_index < num_shards. Received: "
                             f"shard_index={shard_index}, num_shards={num_shards}")
        self.shard_index = shard_index
        self.num_shards = num_shards
        self.num_workers = num_workers
        self.push_window = push_window
        self.wait_s = wait_s
        self.tables: dict[str, TableShard] = {}
        self.applied_step = -1
        self._pending: dict[int, _PendingStep] = {}
        self._failed: tuple[int, str] | None = None  # a step that could not be applied, why
        self._cond = threading.Condition()
        self._started = time.time()
        self.plans = PlanMailbox()  # plans worker 0 scheduled for the others (plan_mailbox.py)
        self._counters = {k: 0 for k in (
            "pull_requests", "push_requests", "flush_requests", "rows_pulled", "rows_pushed",
            "rows_updated", "rows_flushed", "steps_applied", "errors")}

    # -- helpers -------------------------------------------------------------------------------

    def _table(self, name: str) -> TableShard:
        table = self.tables.get(name)
        if table is None:
            known = ", ".join(sorted(self.tables)) or "none"
            raise InvalidArgumentError(
                f"Expected a table this PS holds ({known}). Received: table='{name}'. Connect "
                "with the table's config first."
            )
        return table

    def _wait(self, ready: Any, deadline: float, what: Any) -> None:
        """Waits (lock held) until ready() or the deadline; raises with what() on timeout."""
        while not ready():
            self._refuse_after_failure()  # what it waits for will not come
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceededError(what())
            self._cond.wait(timeout=left)

    def _missing(self, step: int) -> str:
        pending = self._pending.get(step)
        have = set(pending.pushes) if pending else set()
        missing = [r for r in range(self.num_workers or 0) if r not in have]
        return f"step {step} still waits for pushes from ranks {missing}"

    # -- control -------------------------------------------------------------------------------

    def connect(self, tables: Sequence[TableConfig], num_workers: int | None = None,
                rank: int | None = None) -> dict[str, Any]:
        """Registers a worker's tables: creates unknown ones, refuses any config mismatch.

        The first connect that names ``num_workers`` fixes it (unless the server was started
        with it); a different value later is refused. Nothing changes on a refusal.
        """
        with self._cond:
            if num_workers is not None:
                if not isinstance(num_workers, int) or num_workers <= 0:
                    raise InvalidArgumentError(
                        f"Expected num_workers > 0. Received: num_workers={num_workers!r}")
                if self.num_workers is not None and self.num_workers != num_workers:
                    raise FailedPreconditionError(
                        f"Expected num_workers={self.num_workers} (this PS's cluster). Received: "
                        f"num_workers={num_workers}")
            if rank is not None and num_workers is not None and not 0 <= rank < num_workers:
                raise InvalidArgumentError(
                    f"Expected 0 <= rank < {num_workers}. Received: rank={rank}")
            for cfg in tables:
                have = self.tables.get(cfg.name)
                if have is not None and have.config != cfg:
                    raise FailedPreconditionError(
                        f"Expected table '{cfg.name}' to match the PS's config "
                        f"{have.config.to_dict()}. Received: {cfg.to_dict()}. Every worker must "
                        "use the same dim, seed, initializer and optimizer."
                    )
            if num_workers is not None:
                self.num_workers = num_workers
            for cfg in tables:
                if cfg.name not in self.tables:
                    self.tables[cfg.name] = TableShard(cfg)
            return self.health()

    def health(self) -> dict[str, Any]:
        """Liveness and progress: shard, applied step, pending steps and their missing ranks."""
        with self._cond:
            now = time.time()
            return {
                "ok": True,
                "shard_index": self.shard_index,
                "num_shards": self.num_shards,
                "num_workers": self.num_workers,
                "applied_step": self.applied_step,
                "failed_step": None if self._failed is None else {
                    "step": self._failed[0], "error": self._failed[1]},
                "tables": sorted(self.tables),
                "pending_steps": {
                    str(step): {"ranks": sorted(p.pushes), "age_s": round(now - p.first_arrival, 3)}
                    for step, p in sorted(self._pending.items())
                },
                "uptime_s": round(now - self._started, 3),
            }

    def stats(self) -> dict[str, Any]:
        """Counters and per-table sizes (rows and bytes held)."""
        with self._cond:
            tables = {}
            for name, t in self.tables.items():
                n = t.size
                tables[name] = {"rows": n, "bytes": n * (4 * (t.dim + t.state_width) + 8),
                                "dim": t.dim, "state_width": t.state_width}
            return {**self._counters, **self.plans.stats(), "applied_step": self.applied_step,
                    "tables": tables,
                    "shard_index": self.shard_index, "num_shards": self.num_shards}

    def post_plans(self, step: int, ranks: Sequence[int], plans: Sequence[bytes]) -> None:
        """Stores worker 0's plans of ``step`` for other ranks (``PlanMailbox.post``); refused
        whole for a rank outside 1..N-1 or a rank given twice."""
        workers = self.num_workers
        if len(ranks) != len(plans) or len(set(ranks)) != len(ranks):
            raise InvalidArgumentError(
                f"Expected one plan per distinct rank in a plan post. Received: ranks "
                f"{list(ranks)} with {len(plans)} plans at step {step}")
        bad = [r for r in ranks if r <= 0 or (workers is not None and r >= workers)]
        if bad:
            allowed = f"1..{workers - 1}" if workers is not None else ">= 1"
            raise InvalidArgumentError(
                f"Expected plans for ranks {allowed} (worker 0 schedules and keeps its own). "
                f"Received: ranks {bad} at step {step}")
        self.plans.post(step, dict(zip(ranks, plans, strict=True)))

    def count_error(self) -> None:
        """Counts one refused request (called by the service)."""
        with self._cond:
            self._counters["errors"] += 1

    # -- rows ----------------------------------------------------------------------------------

    def pull(self, table: str, keys: np.ndarray, have_versions: np.ndarray | None = None,
             min_versions: np.ndarray | None = None, with_state: bool = False,
             timeout: float | None = None) -> PullResult:
        """Rows of ``keys`` (duplicates allowed); absent rows read as initial rows, version 0.

        ``min_versions``: wait until every row's version is at least this (DESIGN §2a), up to
        ``timeout`` seconds. ``have_versions``: return only rows whose version is greater (the
        caller's copies of the others are current).
        """
        keys = check_keys(keys, "pulled keys", unique=False)
        n = keys.shape[0]
        for what, arr in (("have_versions", have_versions), ("min_versions", min_versions)):
            if arr is not None and (not isinstance(arr, np.ndarray) or arr.dtype != np.int64
                                    or arr.shape != (n,)):
                raise InvalidArgumentError(
                    f"Expected {what} as ({n},) int64, one per key. Received: "
                    f"{getattr(arr, 'dtype', type(arr))}{getattr(arr, 'shape', '')}")
        with self._cond:
            self._table(table)
            if min_versions is not None and n:
                deadline = time.monotonic() + (self.wait_s if timeout is None else timeout)

                def short() -> str:
                    v = self._table(table).versions_of(keys)
                    i = int(np.flatnonzero(v < min_versions)[0])
                    nxt = self.applied_step + 1
                    return (f"pull of table '{table}' waited for key {int(keys[i])} to reach "
                            f"version {int(min_versions[i])} (it is at {int(v[i])}); "
                            f"{self._missing(nxt)}")

                # the table is looked up on every wake-up: a restore may replace it meanwhile
                self._wait(lambda: bool((self._table(table).versions_of(keys)
                                         >= min_versions).all()), deadline, short)
            values, state, versions = self._table(table).read(keys, with_state)
            self._counters["pull_requests"] += 1
            if have_versions is not None:
                positions = np.flatnonzero(versions > have_versions).astype(np.int64)
                if positions.shape[0] != n:
                    values, versions = values[positions], versions[positions]
                    state = state[positions] if state is not None else None
            else:
                positions = np.arange(n, dtype=np.int64)
            self._counters["rows_pulled"] += int(positions.shape[0])
            return PullResult(positions, values, state, versions)

    def versions(self, table: str, keys: np.ndarray) -> np.ndarray:
        """Version of every key (0 for a row never written)."""
        keys = check_keys(keys, "keys", unique=False)
        with self._cond:
            return self._table(table).versions_of(keys)

    def flush(self, table: str, keys: np.ndarray, values: np.ndarray, state: np.ndarray | None,
              versions: np.ndarray) -> None:
        """Writes back dirty rows (value, optimizer state, version); versions never go back."""
        with self._cond:
            t = self._table(table)
            keys, values, state, versions = t.check_flush(keys, values, state, versions)
            t.write(keys, values, state, versions)
            self._counters["flush_requests"] += 1
            self._counters["rows_flushed"] += int(keys.shape[0])
            self._cond.notify_all()

    def push(self, step: int, rank: int, entries: Sequence[PushEntry], wait_applied: bool = False,
             timeout: float | None = None) -> int:
        """Records rank's one push of ``step`` (see the module docstring); returns applied step.

        With ``wait_applied`` it returns only once the step is applied, or raises
        ``DeadlineExceededError`` after ``timeout`` seconds (the push stays recorded).
        """
        with self._cond:
            return self._record_push(step, rank, self._check_push(step, rank, entries),
                                     wait_applied, timeout)

    def check_push(self, step: int, rank: int, entries: Sequence[PushEntry]) -> list[PushEntry]:
        """Validates a push as ``push`` does, recording nothing; returns the checked entries.

        The first phase of a push that the client commits only once every shard accepted its
        part (the data plane's two-phase push), so a part refused by one shard is recorded by
        none. ``commit_push`` records the entries returned here.
        """
        with self._cond:
            return [dataclasses.replace(e, finite_checked=True, distinct_checked=True)
                    for e in self._check_push(step, rank, entries)]

    def commit_push(self, step: int, rank: int, checked: Sequence[PushEntry],
                    wait_applied: bool = False, timeout: float | None = None,
                    on_recorded: Callable[[int], None] | None = None) -> int:
        """Records a push that ``check_push`` accepted, as ``push`` would; returns the applied step.

        The step, the rank's turn, the tables and the learning rate are checked again (a restore
        or another push may have come in between); the gradients' contents are not.
        ``on_recorded(applied step)``, unless ``wait_applied``, is called once the push is
        recorded and before the steps it completes are applied, with the step applied by then:
        a service answers the caller from it while the update runs. No one sees the shard
        before that update, which holds the shard's lock throughout.
        """
        with self._cond:
            return self._record_push(step, rank, self._check_push(step, rank, checked),
                                     wait_applied, timeout,
                                     None if wait_applied else on_recorded)

    def resolve_push_keys(self, table: str, keys: np.ndarray) -> ResolvedRows:
        """Checks a push's keys of ``table`` distinct and finds their rows, for a service to run
        while the push's gradients are still arriving: the push's check and apply then skip
        that work (``PushEntry.distinct_checked``, ``PushEntry.rows``). Changes nothing."""
        what = f"pushed keys of table '{table}'"
        keys = check_keys(keys, what, unique=False)
        with self._cond:
            return self._table(table).resolve_distinct(keys, what)

    def _record_push(self, step: int, rank: int, checked: list[PushEntry], wait_applied: bool,
                     timeout: float | None,
                     on_recorded: Callable[[int], None] | None = None) -> int:
        """Records a checked push, applies the steps it completes, and waits if asked (lock
        held)."""
        pending = self._pending.get(step)
        if pending is None:
            pending = self._pending[step] = _PendingStep(time.time())
        pending.pushes[rank] = checked
        for e in checked:
            pending.learning_rates.setdefault(e.table, e.learning_rate)
        self._counters["push_requests"] += 1
        self._counters["rows_pushed"] += sum(int(e.keys.shape[0]) for e in checked)
        if on_recorded is not None:
            try:
                on_recorded(self._complete_through())
            finally:
                self._apply_ready()  # recorded: applied whether or not the answer got out
            return self.applied_step
        self._apply_ready()
        if wait_applied:
            deadline = time.monotonic() + (self.wait_s if timeout is None else timeout)
            self._wait(lambda: self.applied_step >= step, deadline,
                       lambda: self._missing(min(step, self.applied_step + 1)))
        return self.applied_step

    def _check_push(self, step: int, rank: int, entries: Sequence[PushEntry]) -> list[PushEntry]:
        self._refuse_after_failure()
        if self.num_workers is None:
            raise FailedPreconditionError(
                "Expected the number of workers to be known before a push. Connect with "
                "num_workers first (or start the PS with --num-workers).")
        if not isinstance(rank, int) or not 0 <= rank < self.num_workers:
            raise InvalidArgumentError(
                f"Expected 0 <= rank < {self.num_workers}. Received: rank={rank!r}")
        if not isinstance(step, int) or step <= self.applied_step:
            raise FailedPreconditionError(
                f"Expected a step after {self.applied_step}, the last one this shard applied. "
                f"Received: step={step!r} from rank {rank}. Each worker sends exactly one push "
                "per (shard, step), in step order.")
        if step > self.applied_step + self.push_window:
            raise FailedPreconditionError(
                f"Expected a step at most {self.push_window} ahead of the applied step "
                f"{self.applied_step}. Received: step={step} from rank {rank}; "
                f"{self._missing(self.applied_step + 1)}")
        pending = self._pending.get(step)
        if pending is not None and rank in pending.pushes:
            raise FailedPreconditionError(
                f"Expected one push per (shard, step). Received: a second push of step {step} "
                f"from rank {rank}")
        out = []
        lrs: dict[str, float] = {}
        keys_of: dict[str, list[np.ndarray]] = {}
        for e in entries:
            t = self._table(e.table)
            keys = check_keys(e.keys, f"pushed keys of table '{e.table}'", unique=False)
            grads = check_rows(e.grads, keys.shape[0], t.dim, "gradients", e.table,
                               finite=not e.finite_checked)
            lr = float(e.learning_rate)
            if not math.isfinite(lr) or lr < 0:
                raise InvalidArgumentError(
                    f"Expected a finite learning rate >= 0 for table '{e.table}'. Received: {lr}")
            lr32 = float(np.float32(lr))
            if lrs.setdefault(e.table, lr32) != lr32:
                raise InvalidArgumentError(
                    f"Expected one learning rate per table in a push. Received: {lrs[e.table]} "
                    f"and {lr32} for '{e.table}'")
            if pending is not None and e.table in pending.learning_rates and \
                    pending.learning_rates[e.table] != lr32:
                raise FailedPreconditionError(
                    f"Expected every rank to push step {step} of table '{e.table}' with learning "
                    f"rate {pending.learning_rates[e.table]}. Received: {lr} from rank {rank}")
            keys_of.setdefault(e.table, []).append(keys)
            out.append(PushEntry(e.table, keys, grads, lr32, rows=e.rows))
        for name, parts in keys_of.items():  # distinct across all chunks of a table
            if not all(e.distinct_checked for e in entries if e.table == name):
                check_keys(np.concatenate(parts) if len(parts) > 1 else parts[0],
                           f"pushed keys of table '{name}'", unique=True)
        return out

    def _complete(self, step: int) -> _PendingStep | None:
        """The pending step if every worker pushed it, else None (lock held)."""
        pending = self._pending.get(step)
        if pending is None or len(pending.pushes) < (self.num_workers or 0):
            return None
        return pending

    def _complete_through(self) -> int:
        """The step applied once every complete pending step is (lock held)."""
        step = self.applied_step
        while self._complete(step + 1) is not None:
            step += 1
        return step

    def _apply_ready(self) -> None:
        """Applies every complete step in order (lock held).

        A step's tables are all summed and checked before any of them changes, so a step is
        applied whole or not at all. One that cannot be (summed gradients that overflow) is
        dropped and the shard stops there (``_refuse_after_failure``): every later step builds
        on it, so the error goes to the caller that completed the step now and to every push
        and wait after it, until a restore; the rows stay as of the step before.
        """
        while True:
            step = self.applied_step + 1
            pending = self._complete(step)
            if pending is None:
                return
            try:
                updates = []
                for name in sorted(pending.learning_rates):
                    keys, grads, distinct, rows = self._step_parts(pending, name)
                    updates.append(self.tables[name].stage_update(
                        keys, grads, pending.learning_rates[name], distinct, rows))
            except Exception as e:
                del self._pending[step]
                self._failed = (step, f"{type(e).__name__}: {e}")
                self._cond.notify_all()
                if isinstance(e, InvalidArgumentError):
                    raise InvalidArgumentError(
                        f"{e}. Step {step} is not applied on shard {self.shard_index}, and the "
                        "shard applies no later step until a checkpoint is restored.") from e
                raise
            for update in updates:
                self._counters["rows_updated"] += update.apply()
            del self._pending[step]
            self.applied_step = step
            self._counters["steps_applied"] += 1
            self._cond.notify_all()

    def _step_parts(self, pending: _PendingStep, name: str
                    ) -> tuple[list[np.ndarray], list[np.ndarray], bool, list[Any]]:
        """Table ``name``'s parts of a complete step in rank order: (keys, gradients, whether one
        rank pushed it, rows resolved on arrival)."""
        keys, grads, rows, ranks = [], [], [], 0
        for r in range(self.num_workers or 0):
            mine = [e for e in pending.pushes[r] if e.table == name]
            ranks += bool(mine)
            keys += [e.keys for e in mine]
            grads += [e.grads for e in mine]
            rows += [e.rows for e in mine]
        return keys, grads, ranks == 1, rows

    def _refuse_after_failure(self) -> None:
        """Raises once a step could not be applied (lock held): nothing after it can be."""
        if self._failed is not None:
            step, why = self._failed
            raise FailedPreconditionError(
                f"Expected a shard that applies its steps. Received: a request after step {step} "
                f"could not be applied on shard {self.shard_index} ({why}); its rows stay as of "
                f"step {self.applied_step}. Restore a checkpoint to go on.")

    # -- checkpoints (file format in herald_tf/ps/checkpoint.py) --------------------------------

    def snapshot(self, step: int, timeout: float | None = None) -> dict[str, Any]:
        """A consistent copy of every row as of ``step`` (waits until applied, up to timeout)."""
        with self._cond:
            deadline = time.monotonic() + (self.wait_s if timeout is None else timeout)
            self._wait(lambda: self.applied_step >= step, deadline,
                       lambda: f"checkpoint of step {step}: "
                               f"{self._missing(self.applied_step + 1)}")
            if self.applied_step != step:
                raise FailedPreconditionError(
                    f"Expected to checkpoint the step this shard applied last. Received: step="
                    f"{step}, but shard {self.shard_index} already applied step "
                    f"{self.applied_step}")
            return {
                "step": step,
                "num_workers": self.num_workers,
                "tables": {name: (t.config, t.export()) for name, t in self.tables.items()},
            }

    def replace(self, step: int, tables: dict[str, tuple[TableConfig, dict[str, np.ndarray]]],
                num_workers: int | None) -> None:
        """Replaces all state by restored rows (pending pushes and plans are dropped)."""
        new_tables = {}
        for name, (cfg, arrays) in tables.items():
            t = TableShard(cfg, capacity_hint=max(16, int(arrays["keys"].shape[0])))
            t.load(arrays["keys"], arrays["values"], arrays["state"], arrays["versions"])
            new_tables[name] = t
        with self._cond:
            self.tables = new_tables
            self.applied_step = step
            self._pending.clear()
            self._failed = None
            if num_workers is not None:
                self.num_workers = num_workers
            self._cond.notify_all()
        self.plans.clear()  # posted for steps after the checkpoint by a run that did not go on
