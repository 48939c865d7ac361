"""The worker runtime: carries out the scheduler's per-step plans against slot storage and the PS.

All distributed modes (``ps``, ``het``, ``herald``; DESIGN §5) are plan policies of one
``herald_tf.scheduler.Scheduler``: this module only executes plans, so the modes share one
execution path. Every worker reads the same global batches and executes its own plan; the same
directory decisions (key → slot, evictions) that the scheduler simulated are the ones used here.
Where plans come from (``RuntimeConfig.plan_source``): by default worker 0 runs the scheduler
for all workers and posts each other worker's samples and plan of step t to the PS (shard
``(t // PLAN_WINDOW) % S``, ``herald_tf.ps.plan_mailbox``) as soon as the step is scheduled, up
to ``PLAN_WINDOW`` steps ahead; the others take them, several steps at a time
(``scheduler.plan_codec``, which checks step, rank, configuration and batch). So the
scheduling CPU is spent once, not N times. With ``every_worker`` each worker runs its
own copy of the deterministic scheduler instead (no plan traffic); ``het`` with the staleness
meter always does, since the meter replays every worker's plans.

One step on worker ``rank`` (``HeraldModel.train_step`` drives it through ``tf.py_function``):

1. ``begin_step(t)``: flush the dirty rows other workers read at ``t`` (value, state, version);
   pull rows into their slots (the PS serves a row once its version reaches the plan's
   ``pull_versions``, so a pull never reads a stale value); write first-touch rows from the
   deterministic initializer.
2. Forward/backward: ``HeraldEmbedding`` gathers by the plan's slots; the gradient of each
   storage is deduplicated by slot.
3. ``end_step(t, grads)``: apply the plan's local rows with the sparse optimizer (the PS's
   kernel), push the other gradients (one push per shard and step, possibly empty), write back
   evicted dirty rows, and move new rows from staging into their cache slots.

Scope: one categorical feature of ``F`` keys per sample (``[B, F]`` int64), shared by every
``HeraldEmbedding`` of the model (e.g. the deep and wide tables of WDL).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from herald_tf import _core, ops
from herald_tf.config import OptimizerKind, TableConfig
from herald_tf.errors import HeraldError, InvalidArgumentError
from herald_tf.keras.replicated import ReplicatedPlanner
from herald_tf.keras.staleness import StalenessMeter
from herald_tf.scheduler import Allocation, Eviction, Policy, Scheduler, SchedulerConfig, StepPlan
from herald_tf.scheduler.plan_codec import (
    PLAN_WINDOW,
    batch_checksum,
    config_digest,
    decode_worker_plan,
)

#: Model-input name carrying the step id of a batch (removed before the model is called).
STEP_FEATURE = "herald_step"
MODES = ("ps", "het", "herald", "allreduce")
PLAN_SOURCES = ("rank0", "every_worker")

_POLICY = {"ps": Policy.PS, "het": Policy.HET, "herald": Policy.HERALD}

_current: list[WorkerRuntime] = []

#: One step of this worker: (step, its sample indices in the global batch, its plan, every
#: worker's plans or None where only its own is known).
_WorkerStep = tuple[int, np.ndarray, StepPlan, Sequence[StepPlan | None] | None]


def current_runtime() -> WorkerRuntime | None:
    """The runtime whose ``scope()`` is active, or None (local mode)."""
    return _current[-1] if _current else None


class PlanMismatchError(HeraldError):
    """The runtime, the data and the plan disagree (a bug or misuse, never silently ignored)."""


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How this worker trains its embedding tables.

    Args:
        mode: ``ps``, ``het`` or ``herald`` (DESIGN §5).
        num_workers: N.
        rank: this worker's rank in [0, N).
        batch_size: B, samples per worker per step (global batch N * B).
        num_fields: F, keys per sample of the categorical feature.
        cache_capacity: rows each worker's cache holds between steps (``het``/``herald``).
        eviction: ``lru`` or ``lfu``.
        bound: HET staleness bound (``het`` only; 0 is exact synchronous SGD).
        allocation: ``none``, ``greedy`` or ``grouped`` (``herald``; ``none`` otherwise).
        lookahead: global batches scheduled ahead (>= 2).
        key_feature: model-input name of the ``[B, F]`` int64 keys.
        pull_timeout_s: how long a pull may wait at the PS for the version it needs.
        measure_staleness: ``het``: measure the staleness of every read (``stats()["staleness"]``,
            ``staleness.py``; a few milliseconds per step on the host).
        plan_source: ``rank0`` (worker 0 schedules for all and posts the plans through the PS)
            or ``every_worker`` (each worker runs its own copy of the scheduler); see the
            module docstring.
        plan_timeout_s: how long a worker waits for worker 0's plan of a step (worker 0 may
            start later than the others).
    """

    mode: str
    num_workers: int
    rank: int
    batch_size: int
    num_fields: int
    cache_capacity: int = 0
    eviction: str = "lru"
    bound: int = 0
    allocation: str = "none"
    lookahead: int = 2
    key_feature: str = "categorical"
    pull_timeout_s: float = 60.0
    measure_staleness: bool = True
    plan_source: str = "rank0"
    plan_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.plan_source not in PLAN_SOURCES:
            raise InvalidArgumentError(f"Expected plan_source in {PLAN_SOURCES}. Received: "
                                       f"plan_source={self.plan_source!r}")
        if self.mode not in MODES:
            raise InvalidArgumentError(f"Expected mode in {MODES}. Received: mode={self.mode!r}")
        if not 0 <= self.rank < self.num_workers:
            raise InvalidArgumentError(
                f"Expected 0 <= rank < num_workers. Received: rank={self.rank}, "
                f"num_workers={self.num_workers}")
        if self.mode == "ps" and self.cache_capacity:
            raise InvalidArgumentError("Expected cache_capacity=0 in ps mode (it has no cache).")
        if self.mode == "allreduce" and self.cache_capacity <= 0:
            raise InvalidArgumentError(
                "Expected cache_capacity > 0 in allreduce mode: the rows each replica holds "
                f"(distinct keys of the run). Received: {self.cache_capacity}")

    def scheduler_config(self, dim: int, optimizer: OptimizerKind) -> SchedulerConfig:
        """The scheduler configuration this runtime's plans come from."""
        return SchedulerConfig(
            num_workers=self.num_workers, batch_size=self.batch_size,
            num_fields=self.num_fields, cache_capacity=self.cache_capacity,
            policy=_POLICY[self.mode],
            allocation=Allocation.NONE if self.mode == "ps" else self.allocation,
            eviction=Eviction[self.eviction.upper()], bound=self.bound,
            lookahead=self.lookahead, dim=dim, optimizer=optimizer,
        )


@dataclasses.dataclass
class StepTimes:
    """Seconds spent by kind over the steps run so far (DESIGN §6 step-time split)."""

    embedding_comm: float = 0.0  # flush + pull + push + write-back, on this worker
    local_apply: float = 0.0
    steps: int = 0


class WorkerRuntime:
    """Executes scheduler plans for one worker; see the module docstring.

    Args:
        config: this worker's ``RuntimeConfig``.
        transport: a ``herald_tf.transport.Transport`` to the PS shards.
        batches: iterable of global batches, each a mapping of numpy arrays with ``N * B`` rows
            (the keys under ``config.key_feature``, the label under ``label``); every worker
            must see the same sequence.
        label: name of the label array in ``batches``.
    """

    def __init__(self, config: RuntimeConfig, transport: Any,
                 batches: Iterable[Mapping[str, np.ndarray]], label: str = "label") -> None:
        self.config = config
        self.transport = transport
        self._batches = batches
        self._label = label
        self.tables: list[Any] = []  # HeraldEmbedding layers, in creation order
        self._plans: dict[int, StepPlan] = {}
        self._prefetched: dict[int, list[Any]] = {}  # step -> pull handles issued early
        self._pending_grads: dict[str, np.ndarray] = {}
        self._pending: dict[int, Mapping[str, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._scheduler: Scheduler | ReplicatedPlanner | None = None
        self._scheduled: Iterator[_WorkerStep] | None = None  # set once training starts
        self._next_step = 0
        self._current: StepPlan | None = None
        self._connected = False
        self._feature_specs: dict[str, tf.TensorSpec] = {}
        self._dirty: dict[int, int] = {}  # key -> slot of rows this worker updated last
        self.times = StepTimes()
        self._plan_cpu_s = 0.0  # taking and decoding worker 0's plans (plan_source="rank0")
        self.rows_moved = collections.Counter()
        self.lookups = collections.Counter()
        # het: the staleness of every read, replayed from all workers' plans (staleness.py).
        self._staleness = (StalenessMeter(config.num_workers, config.rank)
                           if config.mode == "het" and config.measure_staleness else None)
        self._all_plans: dict[int, Sequence[StepPlan]] = {}

    # -- model construction -------------------------------------------------------------------

    @contextlib.contextmanager
    def scope(self) -> Iterator[WorkerRuntime]:
        """Builds ``HeraldEmbedding`` layers created inside for this runtime (like a strategy
        scope): their storage holds the cache and staging slots the scheduler plans with."""
        _current.append(self)
        try:
            yield self
        finally:
            _current.pop()

    def register(self, layer: Any) -> None:
        """Called by a ``HeraldEmbedding`` built in ``scope()``."""
        if self._scheduled is not None:
            raise PlanMismatchError("Expected every HeraldEmbedding to be built before training.")
        self.tables.append(layer)

    @property
    def total_slots(self) -> int:
        """Slots of each table's storage: cache slots, then the staging regions (allreduce:
        the whole table)."""
        if self.config.mode == "allreduce":
            return self.config.cache_capacity
        return self._scheduler_config().total_slots

    def _scheduler_config(self) -> SchedulerConfig:
        first = self.tables[0].table if self.tables else TableConfig("t", 1)
        return self.config.scheduler_config(first.dim, first.optimizer.kind)

    # -- data ---------------------------------------------------------------------------------

    def _keys_for_scheduler(self) -> Iterator[np.ndarray]:
        step = 0
        for batch in self._batches:
            keys = np.ascontiguousarray(batch[self.config.key_feature], dtype=np.int64)
            if keys.shape[0] < self.config.num_workers * self.config.batch_size:
                return  # the partial last global batch is dropped
            if step >= self._next_step:  # earlier steps are only re-planned (resume)
                with self._lock:
                    self._pending[step] = batch
            step += 1
            yield keys

    def _start(self) -> None:
        if self._scheduled is not None:
            return
        if not self.tables:
            raise PlanMismatchError("Expected HeraldEmbedding layers built in runtime.scope().")
        rank = self.config.rank
        if self.config.mode == "allreduce":
            self._scheduler = ReplicatedPlanner(
                self.config.num_workers, rank, self.config.batch_size,
                self.config.cache_capacity, self._keys_for_scheduler(), self._next_step)
            self._scheduled = self._own_steps(self._scheduler)
            return
        self._connect()
        config = self._scheduler_config()
        # worker 0 schedules for all unless every worker runs its own copy (see the module
        # docstring); the staleness meter replays every worker's plans, so it needs a copy
        shipped = (self.config.plan_source == "rank0" and self.config.num_workers > 1
                   and self._staleness is None)
        if shipped and rank != 0:
            self._scheduled = self._taken_steps(config_digest(config))
            return
        # After resume_at(S), steps before S are re-planned without plans: the scheduler's state
        # is a deterministic function of the batches, so this restores it exactly.
        self._scheduler = Scheduler(
            config, self._keys_for_scheduler(), start_step=self._next_step,
            emit_worker=None if shipped or self._staleness is not None else rank,
            on_step=functools.partial(self._post_plans, config_digest(config)) if shipped
            else None,
            run_ahead=max(PLAN_WINDOW, self.config.lookahead) if shipped else None)
        self._scheduled = self._own_steps(self._scheduler)

    def _own_steps(self, scheduled_steps: Iterable[Any]) -> Iterator[_WorkerStep]:
        rank = self.config.rank
        for s in scheduled_steps:
            yield s.step, s.samples[rank], s.plans[rank], s.plans

    def _post_plans(self, digest: int, scheduled: Any, keys: np.ndarray, engine: Any) -> None:
        """Worker 0 (scheduler thread): posts the other workers' plans of a scheduled step."""
        if not hasattr(engine, "encode_plan"):
            raise PlanMismatchError(
                "Expected the native scheduler library for plan_source='rank0' (worker 0 encodes "
                "the plans it ships with it). Build libherald_core.so, or use "
                "plan_source='every_worker'.")
        checksum = batch_checksum(keys)
        self.transport.post_plans(scheduled.step, {
            r: engine.encode_plan(r, scheduled.samples[r], digest, checksum)
            for r in range(1, self.config.num_workers)})

    def _taken_steps(self, digest: int) -> Iterator[_WorkerStep]:
        """A worker other than 0: its samples and plan of every step, as worker 0 posted them.
        One take also brings the plans of the next steps already posted (worker 0 posts up to
        PLAN_WINDOW steps ahead), so there are fewer round trips than steps."""
        start, rank = self._next_step, self.config.rank
        taken: collections.deque[bytes] = collections.deque()
        for step, keys in enumerate(self._keys_for_scheduler()):
            if step < start:
                continue
            cpu_before = time.thread_time()
            if not taken:
                taken.extend(self.transport.take_plans(step, rank, self.config.plan_timeout_s,
                                                       max_plans=PLAN_WINDOW))
            samples, plan = decode_worker_plan(taken.popleft(), step, rank, digest,
                                               batch_checksum(keys))
            self._plan_cpu_s += time.thread_time() - cpu_before
            yield step, samples, plan, None

    def _connect(self) -> None:
        if not self._connected:
            self.transport.connect([t.table for t in self.tables], self.config.num_workers,
                                   self.config.rank)
            self._connected = True

    def local_batches(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """This worker's batches in step order: (features with the step id, labels).

        After ``resume_at(S)`` the first step is S.
        """
        self._start()
        for step, mine, plan, all_plans in self._scheduled:
            with self._lock:
                batch = self._pending.pop(step)
                self._plans[step] = plan
                if self._staleness is not None:
                    self._all_plans[step] = all_plans
            features = {name: np.asarray(a)[mine] for name, a in batch.items()
                        if name != self._label}
            # Per sample, so that tf.distribute sees a batch dimension on every input.
            features[STEP_FEATURE] = np.full(len(mine), step, np.int64)
            yield features, np.asarray(batch[self._label])[mine]

    def dataset(self, feature_specs: Mapping[str, tf.TensorSpec],
                steps: int | None = None) -> tf.data.Dataset:
        """A ``tf.data.Dataset`` of this worker's batches (feed it to ``model.fit``).

        ``feature_specs`` names the model inputs (without the batch dimension), e.g.
        ``{"categorical": tf.TensorSpec([26], tf.int64), "dense": tf.TensorSpec([13])}``.
        ``steps``, when known, is how many batches training takes from here (from the resume
        step): the dataset then ends after them, so tf.data's prefetching never asks the runtime
        for a batch past the last step (which would plan it, or wait for its plan).
        """
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise InvalidArgumentError(f"Expected steps to be a positive int or None. Received: "
                                       f"{steps!r}")
        self._feature_specs = dict(feature_specs)
        spec, label_spec = self.batch_spec(with_step=True)

        def generate() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
            for features, labels in self.local_batches():
                yield ({k: features[k] for k in spec}, labels.astype(np.float32))

        options = tf.data.Options()
        # No autotuning: this pipeline has nothing to tune, and deleting an autotuned iterator
        # (as fit does when it returns) often waits out the rest of the autotuner's period, up to
        # 60 s, because TensorFlow wakes that thread before marking it cancelled (README "Known
        # issues").
        options.autotune.enabled = False
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = tf.data.Dataset.from_generator(generate, output_signature=(spec, label_spec))
        return (dataset if steps is None else dataset.take(steps)).with_options(options)

    def batch_spec(self, with_step: bool = False) -> tuple[dict[str, tf.TensorSpec],
                                                           tf.TensorSpec]:
        """(features, label) specs of one local batch, as ``dataset`` yields them."""
        b = self.config.batch_size
        spec = {k: tf.TensorSpec([b, *s.shape], s.dtype) for k, s in self._feature_specs.items()}
        if with_step:
            spec[STEP_FEATURE] = tf.TensorSpec([b], tf.int64)
        return spec, tf.TensorSpec([b], tf.float32)

    def distributed_dataset(self, strategy: tf.distribute.Strategy,
                            feature_specs: Mapping[str, tf.TensorSpec],
                            steps: int | None = None) -> Any:
        """``dataset`` for a tf.distribute strategy, one worker's batches per replica unsplit
        (``distribute_datasets_from_function``; DESIGN §4a); pass ``steps`` when known."""
        if strategy.num_replicas_in_sync != self.config.num_workers:
            raise InvalidArgumentError(
                f"Expected one replica per worker ({self.config.num_workers}). Received: "
                f"{strategy.num_replicas_in_sync} replicas in sync")
        _untuned_device_datasets()
        return strategy.distribute_datasets_from_function(
            lambda _: self.dataset(feature_specs, steps))

    # -- one step -----------------------------------------------------------------------------

    def begin_step(self, step: Any) -> np.int64:
        """Flushes, pulls and initialises this worker's rows for ``step`` (py_function body)."""
        step = int(np.asarray(step).reshape(-1)[0])
        if step != self._next_step:
            raise PlanMismatchError(f"Expected the batch of step {self._next_step}. Received: the "
                                f"batch of step {step} (data and plans are out of lockstep)")
        with self._lock:
            plan = self._plans.pop(step)
        self._current = plan
        if self._staleness is not None:
            self._staleness.before_step(plan)
        start = time.perf_counter()
        if plan.flush_keys.size:
            for layer in self.tables:
                self._send_rows(layer, plan.flush_keys, plan.flush_slots).wait()
            self.rows_moved["flush"] += plan.flush_keys.size
            self._forget_dirty(plan.flush_keys)
        if plan.pull_keys.size:
            # Issued while the previous step ran when its plan was known (the PS serves each
            # row once it reaches the plan's version, so an early request reads nothing stale).
            handles = self._prefetched.pop(step, None)
            self.lookups["overlapped_pull_steps"] += handles is not None
            handles = handles or self._request_pulls(plan)
            for layer, handle in zip(self.tables, handles):
                rows = handle.wait()
                self._write_rows(layer, plan.pull_slots, rows.values,
                                 rows.state if self._pull_state else None, rows.versions)
                if self._staleness is not None and layer is self.tables[0]:
                    self._staleness.check_pulled_versions(rows.versions)
            self.rows_moved["pull"] += plan.pull_keys.size
        with self._lock:
            upcoming = self._plans.get(step + 1)
        if upcoming is not None and upcoming.pull_keys.size:
            # Overlap the next step's pulls with this step (one step ahead: each waiting pull
            # holds a transport thread per shard).
            self._prefetched[step + 1] = self._request_pulls(upcoming)
        self.times.embedding_comm += time.perf_counter() - start
        if plan.init_keys.size:
            for layer in self.tables:
                t = layer.table
                values = _core.init_rows(t.initializer, t.seed, plan.init_keys, t.dim)
                state = _core.init_state(t.optimizer, plan.init_keys.size, t.dim)
                self._write_rows(layer, plan.init_slots, values, state,
                                 np.zeros(plan.init_keys.size, np.int64))
        if self.config.mode == "allreduce":  # replica reads may now return these rows
            self._scheduler.rows_written(step)
        self.lookups["keys"] += plan.keys.size
        self.lookups["cached"] += plan.keys.size - plan.pull_keys.size - plan.init_keys.size
        return np.int64(step)

    @property
    def _pull_state(self) -> bool:
        return self.config.mode != "ps"  # rows a worker may update itself come with their state

    def _request_pulls(self, plan: StepPlan) -> list[Any]:
        return [self.transport.pull(layer.table.name, plan.pull_keys,
                                    min_versions=plan.pull_versions, with_state=self._pull_state,
                                    timeout=self.config.pull_timeout_s)
                for layer in self.tables]

    def slots(self, keys: Any) -> np.ndarray:
        """Slot of every key of this worker's batch at the current step (py_function body)."""
        plan = self._current
        if plan is None:
            raise PlanMismatchError("Expected begin_step before the embedding lookup.")
        keys = np.asarray(keys)
        slots = plan.slots.reshape(keys.shape)
        self._check_keys(plan, keys, slots)
        return slots.astype(np.int64)

    @staticmethod
    def _check_keys(plan: StepPlan, keys: np.ndarray, slots: np.ndarray) -> None:
        """The keys the model received are the plan's: slot → key agrees everywhere."""
        flat = slots.ravel()
        if plan.key_slots.size == 0:
            ok = flat.size == 0
        else:
            order = np.argsort(plan.key_slots, kind="stable")
            pos = np.minimum(np.searchsorted(plan.key_slots, flat, sorter=order), order.size - 1)
            index = order[pos]
            ok = bool(np.array_equal(plan.key_slots[index], flat)
                      and np.array_equal(plan.keys[index], keys.ravel()))
        if not ok:
            raise PlanMismatchError("Expected the batch's keys to match this step's plan "
                                    "(data and plans are out of lockstep).")

    def read_rows(self, table: str, keys: Any) -> np.ndarray:
        """Current rows of ``keys`` from the PS for evaluate/predict; creates no rows."""
        keys = np.asarray(keys, dtype=np.int64)
        if self.config.mode == "allreduce":
            return self._read_replica(table, keys)
        self._connect()
        return self.transport.pull(table, keys, timeout=self.config.pull_timeout_s).wait().values

    def _deferred_gradients(self) -> dict[str, np.ndarray] | None:
        """het with bound > 0: per table, the gradients of each slot not pushed yet."""
        if self.config.mode != "het" or self.config.bound == 0:
            return None
        if not self._pending_grads:
            self._pending_grads = {t.table.name: np.zeros((self.total_slots, t.table.dim),
                                                          np.float32) for t in self.tables}
        return self._pending_grads

    def _read_replica(self, table: str, keys: np.ndarray) -> np.ndarray:
        layer = next(t for t in self.tables if t.table.name == table)
        self._start()
        slots = self._scheduler.slots_of(keys)
        known = slots >= 0
        rows = _core.init_rows(layer.table.initializer, layer.table.seed, keys, layer.table.dim)
        if known.any():
            rows[known] = ops.gather_rows(layer.storage, slots[known]).numpy()
        return rows

    def apply_slots(self) -> np.ndarray:
        """allreduce mode: every slot the global batch used (each replica updates them all)."""
        if self._current is None:
            raise PlanMismatchError("Expected begin_step before apply_slots.")
        return self._current.local_slots

    def end_step(self, step: Any, *grads: Any) -> np.int64:
        """Applies local rows, pushes gradients, writes back and installs (py_function body).

        ``grads`` are (indices, values) per table, in ``self.tables`` order: the deduplicated
        gradient of each storage w.r.t. the step's loss, already scaled to ∂(Σ loss)/G by the
        model's dense sync (DESIGN §2a; ``HeraldModel.compile(dense_sync=...)``).
        """
        step = int(np.asarray(step).reshape(-1)[0])
        plan = self._current
        if plan is None or step != self._next_step:
            raise PlanMismatchError(
                f"Expected end_step of step {self._next_step}. Received: {step}")
        if self.config.mode == "allreduce":  # HeraldModel applied the all-reduced gradients
            self._current = None
            self._next_step += 1
            self.times.steps += 1
            return np.int64(step)
        start = time.perf_counter()
        pushes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        rates: dict[str, float] = {}
        push_slots = _slots_of(plan, plan.push_keys)
        deferred = self._deferred_gradients()
        for layer, indices, values in zip(self.tables, grads[0::2], grads[1::2]):
            indices, values = np.asarray(indices), np.asarray(values)
            local = _rows_for(indices, values, plan.local_slots)
            # one rate for the local apply and the push, so the PS applies the same value
            rate = _learning_rate(layer, step)
            if plan.local_keys.size:
                ops.sparse_apply(layer.storage, layer.optimizer_state, layer.versions,
                                 plan.local_slots, local, layer.table.optimizer, rate)
            if deferred is None:
                pushes[layer.table.name] = (plan.push_keys,
                                            _rows_for(indices, values, push_slots))
            else:
                # het with bound b > 0: a copy's updates are pushed together once b are
                # pending, or when it is evicted (write-back), in this step's one push.
                pending = deferred[layer.table.name]
                pending[plan.local_slots] += local
                slots = np.concatenate([push_slots, plan.writeback_slots])
                pushes[layer.table.name] = (np.concatenate([plan.push_keys,
                                                            plan.writeback_keys]),
                                            pending[slots].copy())
                pending[slots] = 0.0
            rates[layer.table.name] = rate
        if self.config.mode == "herald":
            # herald: a locally applied row is owned (dirty) until flushed or written back.
            # het: the local copy only serves reads within the bound; its gradient is pushed.
            self._dirty.update(zip(plan.local_keys.tolist(), plan.local_slots.tolist()))
        self.times.local_apply += time.perf_counter() - start
        start = time.perf_counter()
        self.transport.push(step, self.config.rank, pushes, rates, wait_applied=True).wait()
        self.rows_moved["push"] += plan.push_keys.size
        if plan.writeback_keys.size and deferred is None:
            for layer in self.tables:
                self._send_rows(layer, plan.writeback_keys, plan.writeback_slots).wait()
            self.rows_moved["flush"] += plan.writeback_keys.size
            self._forget_dirty(plan.writeback_keys)
        elif plan.writeback_keys.size:
            self.rows_moved["push"] += plan.writeback_keys.size
        self.times.embedding_comm += time.perf_counter() - start
        if plan.install_keys.size:
            for layer in self.tables:
                self._copy_rows(layer, plan.install_src, plan.install_dst)
            for pending in (deferred or {}).values():
                pending[plan.install_dst] = pending[plan.install_src]
                pending[plan.install_src] = 0.0
            for key, dst in zip(plan.install_keys.tolist(), plan.install_dst.tolist()):
                if key in self._dirty:
                    self._dirty[key] = dst
        self._forget_dirty(plan.drop_keys)
        if self._staleness is not None:
            with self._lock:
                plans = self._all_plans.pop(step)
            self._staleness.after_step(plans)
        self._current = None
        self._next_step += 1
        self.times.steps += 1
        return np.int64(step)

    @property
    def next_step(self) -> int:
        """The step the runtime runs next (= steps completed)."""
        return self._next_step

    def dirty_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys, slots) of the rows this worker owns dirty (herald)."""
        return (np.fromiter(self._dirty.keys(), np.int64, len(self._dirty)),
                np.fromiter(self._dirty.values(), np.int64, len(self._dirty)))

    def resume_at(self, step: int, dirty_keys: np.ndarray, dirty_slots: np.ndarray) -> None:
        """Continues a checkpointed run at ``step`` (storage restored by the caller)."""
        if self._scheduled is not None:
            raise PlanMismatchError("Expected resume_at before the first batch is drawn.")
        self._next_step = int(step)
        if self._staleness is not None:
            self._staleness.resumed = True
        self._dirty = dict(zip(np.asarray(dirty_keys).tolist(), np.asarray(dirty_slots).tolist()))

    def flush_dirty(self) -> int:
        """Writes every row this worker updated locally and still holds back to the PS.

        Called before evaluation and at the end of training so that the PS holds every row's
        latest value (``herald`` keeps private rows dirty in the owner's cache). Harmless to
        training: the PS copy is then current, and the owner keeps updating its copy.
        """
        if not self._dirty:
            return 0
        keys, slots = self.dirty_rows()
        for layer in self.tables:
            self._send_rows(layer, keys, slots).wait()
        self.rows_moved["flush"] += keys.size
        self._dirty.clear()
        return int(keys.size)

    def _forget_dirty(self, keys: np.ndarray) -> None:
        for key in keys.tolist():
            self._dirty.pop(key, None)

    # -- rows between storage and the PS --------------------------------------------------------

    def _send_rows(self, layer: Any, keys: np.ndarray, slots: np.ndarray) -> Any:
        values = ops.gather_rows(layer.storage, slots).numpy()
        state = (ops.gather_rows(layer.optimizer_state, slots).numpy()
                 if layer.table.state_width else None)
        versions = tf.gather(ops.local_variable(layer.versions), slots).numpy()
        return self.transport.flush(layer.table.name, keys, values, state, versions)

    def _write_rows(self, layer: Any, slots: np.ndarray, values: np.ndarray,
                    state: np.ndarray | None, versions: np.ndarray) -> None:
        ops.scatter_rows(layer.storage, slots, values)
        if layer.table.state_width:
            if state is None:
                state = _core.init_state(layer.table.optimizer, slots.size, layer.table.dim)
            ops.scatter_rows(layer.optimizer_state, slots, state)
        ops.local_variable(layer.versions).scatter_update(tf.IndexedSlices(versions, slots))

    def _copy_rows(self, layer: Any, src: np.ndarray, dst: np.ndarray) -> None:
        values = ops.gather_rows(layer.storage, src)
        state = ops.gather_rows(layer.optimizer_state, src) if layer.table.state_width else None
        versions = tf.gather(ops.local_variable(layer.versions), src).numpy()
        self._write_rows(layer, dst, values.numpy(), None if state is None else state.numpy(),
                         versions)

    # -- reporting and shutdown ----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Rows moved, bytes by kind (transport counters), cache hit ratio and time split."""
        keys = max(self.lookups["keys"], 1)
        return {
            "steps": self.times.steps,
            "rows": dict(self.rows_moved),
            "bytes": self.transport.byte_counts() if self.transport is not None else {},
            "cache_hit_ratio": self.lookups["cached"] / keys,
            # CPU of this worker's scheduling: its scheduler thread (worker 0 also encodes and
            # posts the others' plans there), or taking and decoding its plans
            "scheduler_cpu_s": getattr(self._scheduler, "cpu_seconds", 0.0) + self._plan_cpu_s,
            "overlapped_pull_steps": self.lookups["overlapped_pull_steps"],
            "embedding_comm_s": self.times.embedding_comm,
            "local_apply_s": self.times.local_apply,
            # het: reads measured, stale reads, max and mean staleness (updates behind the PS).
            **({"staleness": self._staleness.stats()} if self._staleness is not None else {}),
        }

    def close(self) -> None:
        """Stops the scheduler thread (the transport belongs to the caller)."""
        if self._scheduler is not None:
            self._scheduler.close()


def _untuned_device_datasets() -> None:
    """Makes the per-device datasets that tf.distribute builds over a worker's dataset (through
    its ``MultiDeviceIterator``) run without tf.data autotuning, as ``WorkerRuntime.dataset``
    does for its own pipeline.

    Deleting an autotuned iterator, as ``fit`` does when it returns, can wait out the rest of the
    autotuner's period (up to 60 s; README, Known issue), and that pipeline, a generator and a
    prefetch of fixed size, has nothing to tune. TensorFlow gives it default options and offers
    no setting for them, so its module function is wrapped, once per process; a TensorFlow
    without that function is left as it is.
    """
    from tensorflow.python.data.ops import multi_device_iterator_ops as devices

    create = getattr(devices, "_create_device_dataset", None)
    if create is None or getattr(create, "herald_untuned", False):
        return
    options = tf.data.Options()
    options.autotune.enabled = False

    @functools.wraps(create)
    def untuned(*args: Any, **kwargs: Any) -> tf.data.Dataset:
        return create(*args, **kwargs).with_options(options)

    untuned.herald_untuned = True  # type: ignore[attr-defined]
    devices._create_device_dataset = untuned


def _slots_of(plan: StepPlan, keys: np.ndarray) -> np.ndarray:
    """Slots at which ``keys`` (a subset of ``plan.keys``) are read this step."""
    if keys.size == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(plan.keys, kind="stable")
    pos = np.searchsorted(plan.keys, keys, sorter=order)
    return plan.key_slots[order[pos]]


def _learning_rate(layer: Any, step: int) -> float:
    """The rows' learning rate of ``layer`` at global step ``step`` as the float32 value every
    party applies (the PS receives it with the push); a schedule's value must be finite and
    >= 0."""
    rate = float(np.float32(layer.learning_rate_at(np.int64(step))))
    if not (np.isfinite(rate) and rate >= 0):
        raise InvalidArgumentError(
            f"Expected a finite learning rate >= 0 from the schedule of HeraldEmbedding "
            f"'{layer.name}'. Received: {rate} at step {step}")
    return rate


def _rows_for(indices: np.ndarray, values: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Gradient rows of ``slots`` from a deduplicated (indices, values) gradient."""
    if slots.size == 0:
        return np.zeros((0, values.shape[1]), np.float32)
    order = np.argsort(indices, kind="stable")
    pos = np.searchsorted(indices, slots, sorter=order)
    pos = np.minimum(pos, max(order.size - 1, 0))
    found = order.size > 0 and np.all(indices[order[pos]] == slots)
    if not found:
        raise PlanMismatchError("Expected a gradient for every slot the plan updates.")
    return np.ascontiguousarray(values[order[pos]], dtype=np.float32)


def py_step(fn: Callable[..., Any], *args: Any) -> tf.Tensor:
    """Runs ``fn`` eagerly inside the training graph (stateful, so it keeps program order)."""
    return tf.py_function(fn, list(args), Tout=tf.int64)
