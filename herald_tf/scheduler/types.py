"""Interfaces of the embedding scheduler: configuration, per-step plans, traffic and errors.

The scheduler turns a stream of global batches (int64 keys, shape ``(N * B, F)``) into, per
step and per worker, the ``B`` sample indices that worker trains and a :class:`StepPlan` saying
which embedding rows move (DESIGN.md §3, §5). Two engines compute the same plans bit for bit: the
C++ one (``kernels/scheduler``, bound in ``_native``) and a slow, simple Python reference
(``reference``); tests check them against each other and against an independent replay model.

Slot model (the runtime must follow it): each worker's device storage has ``cache_capacity``
*cache slots* ``[0, C)`` for rows held between steps, then ``staging_regions`` regions of
``F * B`` *staging slots* each. Step ``t`` reads a row held in the directory at its cache slot and
any other row at a staging slot of region ``t % staging_regions`` (so pulls for step t + 1 can
land while step t runs when ``staging_regions >= 2``).

Execution of one worker's plan for step t (what the replay model checks):

1. ``flush``: send these rows (value + state + version) to the PS; allowed as soon as this worker
   finished its last update of the row (the plan is known L steps ahead).
2. ``pull``: fetch rows into ``pull_slots`` once the PS version reaches ``pull_versions``;
   ``init``: write the deterministic initial row into ``init_slots``.
3. Forward and backward: gather rows by ``slots`` (B, F).
4. ``local``: apply the optimizer to these rows here; ``push``: send their gradient to the PS
   (one push per shard and step, possibly empty; the PS sums pushes and applies once).
5. ``writeback``: send these rows to the PS (evicted dirty rows; ``het``: pending gradients),
   then ``install``: copy rows from ``install_src`` to ``install_dst``. ``drop`` lists keys
   that left the directory (their slots are free); it moves nothing.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import numbers
from collections.abc import MutableSequence
from typing import Any

import numpy as np

from herald_tf.config import OptimizerKind
from herald_tf.errors import HeraldError, InvalidArgumentError

MAX_WORKERS = 64


@enum.unique
class Policy(enum.IntEnum):
    """Plan policies (DESIGN §5); values mirror ``HeraldSchedPolicy`` in scheduler_api.h."""

    PS = 0  # pull every unique key, push every gradient
    HET = 1  # HET cache: pull if missing or PS version > local + bound; push after bound updates
    HERALD = 2  # the exact plan of DESIGN §3


@enum.unique
class Allocation(enum.IntEnum):
    """Input allocators; values mirror ``HeraldSchedAllocation`` in scheduler_api.h."""

    NONE = 0  # worker w trains samples [w * B, (w + 1) * B) of the global batch
    GREEDY = 1  # Herald's greedy location-aware allocation over a snapshot of the caches
    GROUPED = 2  # greedy on marginal transfers: also groups samples that share keys


@enum.unique
class Eviction(enum.IntEnum):
    """Cache eviction orders; values mirror ``HeraldSchedEviction`` in scheduler_api.h.

    LRU evicts the smallest ``(last step used, key)``; LFU the smallest
    ``(steps used while cached, last step used, key)``.
    """

    LRU = 0
    LFU = 1


#: Bytes moved per row value for each kind, in units of one value row, by optimizer: rows moved
#: with their optimizer state (flushes, pulls of ``het`` and ``herald``) cost this many values.
STATE_FACTOR = {OptimizerKind.SGD: 1, OptimizerKind.ADAGRAD: 2, OptimizerKind.ADAM: 3}


class SchedulerError(HeraldError):
    """The scheduler failed or was used out of order (e.g. a step was skipped)."""


class SchedulerConfigError(InvalidArgumentError):
    """A :class:`SchedulerConfig` or a batch does not satisfy the scheduler's rules."""


def _enum(kind: type[enum.IntEnum], value: Any, what: str) -> Any:
    if isinstance(value, kind):
        return value
    try:
        if isinstance(value, str):
            return kind[value.upper()]
        if not isinstance(value, bool):  # IntEnum would take True for 1
            return kind(value)
    except (KeyError, ValueError, TypeError):
        pass
    names = ", ".join(k.name.lower() for k in kind)
    raise SchedulerConfigError(
        f"Expected {what} to be one of {names}. Received: {what}={value!r}"
    )


def _integer(value: Any, what: str) -> int:
    """``value`` as a plain int; numpy integers pass (normalised, so that ``repr`` and the plans'
    configuration digest agree between processes), bools, floats and strings do not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SchedulerConfigError(
            f"Expected {what} to be an integer. Received: {what}={value!r} "
            f"of type {type(value).__name__}"
        )
    return int(value)


#: The integer fields of :class:`SchedulerConfig`, type-checked before their ranges.
_INT_FIELDS = ("num_workers", "batch_size", "num_fields", "cache_capacity", "bound",
               "lookahead", "staging_regions", "dim")


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """Configuration of one scheduler; frozen, validated without side effects.

    Args:
      num_workers: N, workers training data-parallel (1..64).
      batch_size: B, samples per worker per step; the global batch has N * B samples.
      num_fields: F, keys per sample (one per field; 26 for Criteo).
      cache_capacity: rows each worker holds between steps (0 for ``ps``).
      policy: a :class:`Policy` (or its name).
      allocation: an :class:`Allocation`; other than ``none`` only with ``herald`` or ``het``.
      eviction: an :class:`Eviction`.
      bound: HET staleness bound (``het`` only; 0 keeps exact synchronous SGD).
      lookahead: L, global batches scheduled ahead of training (>= 2).
      staging_regions: staging slot regions, see the module docstring (>= 1).
      dim: embedding dimension, for byte accounting.
      optimizer: the sparse optimizer, for byte accounting (rows moved with state).
    """

    num_workers: int
    batch_size: int
    num_fields: int
    cache_capacity: int
    policy: Policy = Policy.HERALD
    allocation: Allocation = Allocation.GROUPED
    eviction: Eviction = Eviction.LRU
    bound: int = 0
    lookahead: int = 2
    staging_regions: int = 2
    dim: int = 16
    optimizer: OptimizerKind = OptimizerKind.SGD

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "policy", _enum(Policy, self.policy, "policy"))
        set_(self, "allocation", _enum(Allocation, self.allocation, "allocation"))
        set_(self, "eviction", _enum(Eviction, self.eviction, "eviction"))
        set_(self, "optimizer", _enum(OptimizerKind, self.optimizer, "optimizer"))
        for name in _INT_FIELDS:
            set_(self, name, _integer(getattr(self, name), name))
        checks = [
            (1 <= self.num_workers <= MAX_WORKERS, "num_workers", "in [1, 64]"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.num_fields >= 1, "num_fields", ">= 1"),
            (self.cache_capacity >= 0, "cache_capacity", ">= 0"),
            (self.bound >= 0, "bound", ">= 0"),
            (self.lookahead >= 2, "lookahead", ">= 2"),
            (self.staging_regions >= 1, "staging_regions", ">= 1"),
            (self.dim >= 1, "dim", ">= 1"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise SchedulerConfigError(
                    f"Expected {name} {rule}. Received: {name}={getattr(self, name)!r}"
                )
        if self.bound and self.policy != Policy.HET:
            raise SchedulerConfigError(
                f"Expected bound=0 unless policy is het. Received: bound={self.bound}, "
                f"policy={self.policy.name.lower()}"
            )
        if self.policy == Policy.PS and self.allocation != Allocation.NONE:
            raise SchedulerConfigError(
                "Expected allocation=none with policy ps (it has no cache to be aware of). "
                f"Received: allocation={self.allocation.name.lower()}"
            )
        if self.num_fields * self.batch_size >= 2**30 or self.cache_capacity >= 2**30:
            raise SchedulerConfigError("Expected fewer than 2**30 slots per worker.")

    @property
    def global_batch(self) -> int:
        """G = N * B, samples per step."""
        return self.num_workers * self.batch_size

    @property
    def staging_size(self) -> int:
        """Staging slots per region: F * B."""
        return self.num_fields * self.batch_size

    @property
    def total_slots(self) -> int:
        """Slots of a worker's device storage: cache plus all staging regions."""
        return self.cache_capacity + self.staging_regions * self.staging_size


_I64 = np.int64


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=_I64)


@dataclasses.dataclass
class StepPlan:
    """What one worker does with embedding rows at one step; arrays are int64.

    Args:
      keys: unique keys this worker reads at the step, in order of first occurrence.
      key_slots: slot where each of ``keys`` is read (cache or staging slot).
      slots: (B, F) slot of every key occurrence of the worker's samples (for the lookup gather).
      flush_keys, flush_slots: dirty rows (value + state) this worker sends to the PS before the
        step, because another worker reads them at this step; can be sent as soon as this worker
        finished its last update of the row.
      pull_keys, pull_slots, pull_versions: rows to fetch from the PS into a slot before the step;
        the PS serves a row once its version reaches ``pull_versions``. A pulled row that is also
        in ``local_keys`` (or any ``het`` pull) comes with its optimizer state; other pulled rows
        are only read (the PS applies their update), so their value suffices.
      init_keys, init_slots: rows never touched before: set from the deterministic initializer.
      local_keys, local_slots: rows this worker updates itself after the backward pass.
      push_keys: rows whose gradient this worker pushes to the PS after the backward pass.
      drop_keys: keys leaving this worker's directory after the step (evicted or invalidated).
      writeback_keys, writeback_slots: rows sent to the PS after the step because they are evicted
        dirty (``herald``: value + state) or evicted with pending updates (``het``: gradient).
      install_keys, install_src, install_dst: rows copied from a staging slot to a cache slot
        after the step (new rows entering the directory).
    """

    keys: np.ndarray = dataclasses.field(default_factory=_empty)
    key_slots: np.ndarray = dataclasses.field(default_factory=_empty)
    slots: np.ndarray = dataclasses.field(default_factory=_empty)
    flush_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    flush_slots: np.ndarray = dataclasses.field(default_factory=_empty)
    pull_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    pull_slots: np.ndarray = dataclasses.field(default_factory=_empty)
    pull_versions: np.ndarray = dataclasses.field(default_factory=_empty)
    init_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    init_slots: np.ndarray = dataclasses.field(default_factory=_empty)
    local_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    local_slots: np.ndarray = dataclasses.field(default_factory=_empty)
    push_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    drop_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    writeback_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    writeback_slots: np.ndarray = dataclasses.field(default_factory=_empty)
    install_keys: np.ndarray = dataclasses.field(default_factory=_empty)
    install_src: np.ndarray = dataclasses.field(default_factory=_empty)
    install_dst: np.ndarray = dataclasses.field(default_factory=_empty)

    #: Names of the array fields, in the order the C ABI numbers them (HeraldSchedList).
    LISTS = (
        "keys", "key_slots", "flush_keys", "flush_slots", "pull_keys", "pull_slots",
        "pull_versions", "init_keys", "init_slots", "local_keys", "local_slots", "push_keys",
        "drop_keys", "writeback_keys", "writeback_slots", "install_keys", "install_src",
        "install_dst",
    )

    def equals(self, other: StepPlan) -> bool:
        """True when every array of both plans is identical."""
        names = self.LISTS + ("slots",)
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in names)


@dataclasses.dataclass
class ScheduledStep:
    """One scheduled global batch.

    Args:
      step: the step id (0, 1, ...), which the runtime asserts against its own counter.
      samples: (N, B) indices into the global batch: row w lists worker w's samples in order;
        together a permutation of ``range(N * B)``.
      plans: one :class:`StepPlan` per worker (a list, or the native engine's lazily made
        ``StepPlans``; None for a worker whose plan was not written, see ``emit_worker``), or
        ``None`` when plans were not requested.
    """

    step: int
    samples: np.ndarray
    plans: MutableSequence[StepPlan | None] | None


@dataclasses.dataclass
class Traffic:
    """Embedding rows moved so far, by kind, over ``samples`` scheduled samples.

    Args:
      samples: samples scheduled.
      steps: global batches scheduled.
      pull_rows: rows pulled from the PS.
      pull_state_rows: those of ``pull_rows`` that carry their optimizer state (the puller
        applies the optimizer itself: ``herald`` private rows, every ``het`` pull).
      push_rows: gradient rows pushed to the PS (``het`` write-backs included).
      flush_rows: rows flushed to the PS (before another worker reads them, or evicted dirty).
    """

    samples: int = 0
    steps: int = 0
    pull_rows: int = 0
    pull_state_rows: int = 0
    push_rows: int = 0
    flush_rows: int = 0

    @property
    def rows(self) -> int:
        """All rows moved: pulls + pushes + flushes."""
        return self.pull_rows + self.push_rows + self.flush_rows

    def rows_per_sample(self) -> float:
        """Rows moved per scheduled sample."""
        return self.rows / max(self.samples, 1)

    def bytes_by_kind(self, dim: int, optimizer: OptimizerKind) -> dict[str, int]:
        """Bytes per kind for float32 rows of ``dim``: gradients and pulls of rows the PS updates
        cost one value row; flushes and pulls of rows updated by the puller carry the state."""
        value = 4 * dim
        state = STATE_FACTOR[OptimizerKind(optimizer)] * value
        return {
            "pull": self.pull_state_rows * state + (self.pull_rows - self.pull_state_rows) * value,
            "push": self.push_rows * value,
            "flush": self.flush_rows * state,
        }

    def bytes_per_sample(self, dim: int, optimizer: OptimizerKind) -> float:
        """All bytes moved per scheduled sample."""
        return sum(self.bytes_by_kind(dim, optimizer).values()) / max(self.samples, 1)


class Allocator(abc.ABC):
    """Reference allocator: chooses which worker trains each sample of a global batch."""

    @abc.abstractmethod
    def allocate(self, keys: np.ndarray, view: CacheView) -> np.ndarray:
        """Returns (N, B) sample indices, a permutation of ``range(N * B)``.

        ``keys`` is the (N * B, F) global batch; ``view`` tells where rows are at step start.
        """


class CacheView(abc.ABC):
    """What an allocator may know of the caches at the start of a step (a snapshot)."""

    num_workers: int
    batch_size: int

    @abc.abstractmethod
    def holders(self, key: int) -> int:
        """Bitmask of workers holding a usable copy of ``key``."""

    @abc.abstractmethod
    def owner(self, key: int) -> int:
        """Worker holding the only up-to-date (dirty) copy of ``key``, or -1 for the PS."""

    @abc.abstractmethod
    def touched(self, key: int) -> bool:
        """True once ``key`` has been used at an earlier step (it then exists on the PS)."""


class PlanPolicy(abc.ABC):
    """Reference plan policy: decides the row movements of one step and updates the state.

    ``ctx`` is a ``state.StepContext`` (read slots already computed), ``table`` the
    ``state.KeyTable``, ``dirs`` the workers' ``cache_directory.CacheDirectory``; the policy
    appends to ``ctx.lists`` and adds its transfers to ``traffic``.
    """

    @abc.abstractmethod
    def plan(self, ctx: Any, table: Any, dirs: list[Any], traffic: Traffic) -> None:
        """Plans step ``ctx.step`` and applies its effect to ``table`` and ``dirs``."""
