"""ctypes binding of the C++ scheduler engine (kernels/scheduler/scheduler_api.h).

The engine is compiled into libherald_core.so (loaded by ``herald_tf._core.load_core``). For
development before the project's build includes it, ``HERALD_CORE_LIB`` may name a library built
with ``g++ -O3 -std=c++17 -ffp-contract=off -fPIC -shared -I. kernels/scheduler/*.cc -o LIB``.
ctypes releases the GIL during calls, so a scheduler thread overlaps with training.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
from collections.abc import Iterable, MutableSequence

import numpy as np

from herald_tf._core import Status as _Status
from herald_tf._core import StatusCode as _core_codes
from herald_tf._core import check_status as _check
from herald_tf.errors import InvalidArgumentError, LibraryNotFoundError
from herald_tf.scheduler.reference import check_batch
from herald_tf.scheduler.types import (
    ScheduledStep,
    SchedulerConfig,
    StepPlan,
    Traffic,
)

API_VERSION = 6
#: Environment variable naming a library that exports the scheduler ABI (development and tests).
CORE_LIB_VAR = "HERALD_CORE_LIB"
_NUM_LISTS = 19
_OCCURRENCE = 18
#: Lists not bounded by the worker's unique keys: flush, drop, write-back and install lists.
_SMALL_LISTS = [2, 3, 12, 13, 14, 15, 16, 17]


class _Config(ctypes.Structure):
    _fields_ = [
        ("num_workers", ctypes.c_int32),
        ("batch_size", ctypes.c_int32),
        ("num_fields", ctypes.c_int32),
        ("policy", ctypes.c_int32),
        ("allocation", ctypes.c_int32),
        ("eviction", ctypes.c_int32),
        ("bound", ctypes.c_int32),
        ("staging_regions", ctypes.c_int32),
        ("cache_capacity", ctypes.c_int64),
        ("emit_plans", ctypes.c_int32),
        ("emit_worker", ctypes.c_int32),
    ]


class _Traffic(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in
                ("samples", "steps", "pull_rows", "pull_state_rows", "push_rows", "flush_rows")]


class _Stamp(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in ("step", "rank", "digest", "checksum")]


_I64P = ctypes.POINTER(ctypes.c_int64)
_U8P = ctypes.POINTER(ctypes.c_uint8)
_ST = ctypes.POINTER(_Status)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.herald_sched_api_version.restype = ctypes.c_int
    # first: an older library may lack functions declared below
    version = lib.herald_sched_api_version()
    if version != API_VERSION:
        raise LibraryNotFoundError(
            f"The scheduler library has ABI version {version}, herald_tf expects {API_VERSION}: "
            "rebuild the native library from this source tree."
        )
    lib.herald_sched_create.argtypes = [ctypes.POINTER(_Config), ctypes.POINTER(ctypes.c_void_p),
                                        _ST]
    lib.herald_sched_destroy.argtypes = [ctypes.c_void_p]
    lib.herald_sched_destroy.restype = None
    lib.herald_sched_step.argtypes = [ctypes.c_void_p, _I64P, ctypes.c_int64, ctypes.c_int64,
                                      _I64P, _ST]
    lib.herald_sched_step_into.argtypes = [ctypes.c_void_p, _I64P, ctypes.c_int64,
                                           ctypes.c_int64, _I64P, _I64P, _I64P, _I64P, _ST]
    lib.herald_sched_traffic.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Traffic), _ST]
    lib.herald_sched_list_size.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                           _I64P, _ST]
    lib.herald_sched_copy_list.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                           _I64P, ctypes.c_int64, _ST]
    lib.herald_sched_set_emit_plans.argtypes = [ctypes.c_void_p, ctypes.c_int32, _ST]
    lib.herald_sched_encode_plan.argtypes = [ctypes.c_void_p, ctypes.c_int32, _I64P,
                                             ctypes.POINTER(_Stamp), _U8P, ctypes.c_int64,
                                             _I64P, _ST]
    lib.herald_plan_decoded_sizes.argtypes = [ctypes.c_char_p, ctypes.c_int64,
                                              ctypes.POINTER(_Stamp), _I64P, _ST]
    lib.herald_plan_decode.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.POINTER(_Stamp),
                                       _I64P, ctypes.c_int64, _ST]
    # keys as an address: ctypes' pointer cast would cost as much as the checksum
    lib.herald_plan_batch_checksum.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                               _I64P, _ST]
    return lib


@functools.cache
def load_library() -> ctypes.CDLL:
    """The library exporting ``herald_sched_*``: ``$HERALD_CORE_LIB`` or libherald_core.so."""
    path = os.environ.get(CORE_LIB_VAR)
    if path:
        try:
            return _declare(ctypes.CDLL(path))
        except OSError as e:
            raise LibraryNotFoundError(f"Cannot load {CORE_LIB_VAR}={path}: {e}") from e
    try:
        from herald_tf import _core

        lib = _core.load_core()
    except (ImportError, OSError) as e:
        raise LibraryNotFoundError(
            f"The scheduler's native library is not available ({e}). Build libherald_core.so, "
            f"or set {CORE_LIB_VAR} to a library built from kernels/scheduler/*.cc."
        ) from e
    if not hasattr(lib, "herald_sched_create"):
        raise LibraryNotFoundError(
            "libherald_core.so was built without kernels/scheduler/*.cc: rebuild it, or set "
            f"{CORE_LIB_VAR} to a library built from kernels/scheduler/*.cc."
        )
    return _declare(lib)


def available() -> bool:
    """True when the native engine can be loaded."""
    try:
        load_library()
    except LibraryNotFoundError:
        return False
    return True


def _plan_of(lists: list[np.ndarray], shape: tuple[int, int]) -> StepPlan:
    """A StepPlan of one worker's lists in HeraldSchedList order; ``shape``: (B, F) of the
    occurrence slots."""
    # StepPlan's fields by position: keys, key_slots, slots, then the C order from flush_keys.
    return StepPlan(lists[0], lists[1], lists[_OCCURRENCE].reshape(shape),
                    *lists[2:_OCCURRENCE])


class StepPlans(MutableSequence):
    """The N plans of one step, views of the step's plan buffer. A worker's plan is made when it
    is first read: a worker process reads only its own (``plans[rank]``), and making the 19
    views of all N plans each step would cost more than the engine's plan pass for one worker.
    With ``emit_worker`` set, the other workers' plans are None (the engine did not write
    them). Plans may be replaced (``plans[w] = plan``), not added or removed."""

    def __init__(self, region: np.ndarray, starts: list[int], sizes: list[int],
                 config: SchedulerConfig, outside: dict[int, np.ndarray],
                 emit_worker: int | None = None) -> None:
        self._region = region
        self._emit_worker = emit_worker
        self._starts = starts
        self._sizes = sizes
        self._shape = (config.batch_size, config.num_fields)
        self._outside = outside  # lists copied out of the engine (longer than their share)
        self._made: list[StepPlan | None] = [None] * config.num_workers

    def _make(self, w: int) -> StepPlan:
        base = w * _NUM_LISTS
        return _plan_of([self._outside[i] if i in self._outside else
                         self._region[self._starts[i]:self._starts[i] + self._sizes[i]]
                         for i in range(base, base + _NUM_LISTS)], self._shape)

    def __len__(self) -> int:
        return len(self._made)

    def __getitem__(self, w):  # noqa: ANN001, ANN204 (int or slice, as a list)
        if isinstance(w, slice):
            return [self[i] for i in range(len(self._made))[w]]
        plan = self._made[w]
        index = range(len(self._made))[w]
        if plan is None and self._emit_worker in (None, index):
            plan = self._made[w] = self._make(index)
        return plan

    def __setitem__(self, w: int, plan: StepPlan) -> None:
        self._made[range(len(self._made))[w]] = plan  # an index, as for a list of N plans

    def __delitem__(self, w: int) -> None:
        raise TypeError("A step has one plan per worker: plans cannot be removed")

    def insert(self, index: int, value: StepPlan) -> None:
        """Not supported: a step has one plan per worker."""
        raise TypeError("A step has one plan per worker: plans cannot be added")


class NativeEngine:
    """The C++ engine behind the interface of ``ReferenceEngine``.

    Not thread-safe: one thread drives an engine (the ``Scheduler``'s background thread).
    """

    def __init__(self, config: SchedulerConfig, emit_plans: bool = True,
                 emit_worker: int | None = None) -> None:
        self.config = config
        self.emit_plans = emit_plans
        self.emit_worker = emit_worker
        self._lib = load_library()
        c = _Config(
            num_workers=config.num_workers, batch_size=config.batch_size,
            num_fields=config.num_fields, policy=int(config.policy),
            allocation=int(config.allocation), eviction=int(config.eviction),
            bound=config.bound, staging_regions=config.staging_regions,
            cache_capacity=config.cache_capacity, emit_plans=int(emit_plans),
            emit_worker=-1 if emit_worker is None else emit_worker,
        )
        handle = ctypes.c_void_p()
        status = _Status()
        _check(self._lib.herald_sched_create(ctypes.byref(c), ctypes.byref(handle),
                                             ctypes.byref(status)), status)
        self._handle = handle
        self._sizes = np.empty((config.num_workers, _NUM_LISTS), dtype=np.int64)
        self._sizes_ptr = self._sizes.ctypes.data_as(_I64P)
        # Entries reserved per plan list in each step's plan buffer (herald_sched_step_into).
        # A worker's unique keys (<= B * F) bound its keys, pull, init, local and push lists;
        # the others start at a quarter of that. A list longer than its share is copied out,
        # and its share is twice that length from the next step on.
        per_worker = config.batch_size * config.num_fields
        self._capacity = np.full((config.num_workers, _NUM_LISTS), per_worker, dtype=np.int64)
        self._capacity[:, _SMALL_LISTS] = max(per_worker // 4, 1)
        if emit_worker is not None:  # the other workers' lists stay empty
            others = np.arange(config.num_workers) != emit_worker
            self._capacity[others] = 0
        self._capacity_ptr = self._capacity.ctypes.data_as(_I64P)
        self._layout()
        self._region: np.ndarray | None = None  # the last step's plan buffer (read by _list)
        self._wire = np.empty(1 << 16, np.uint8)  # encode_plan's output, grown when too small
        self.step_id = 0

    def _layout(self) -> None:
        """Where each list's share of the plan buffer starts, and the buffer's length."""
        caps = self._capacity.ravel().tolist()
        ends = np.cumsum(caps).tolist()
        self._starts = [0] + ends[:-1]
        self._total = ends[-1]

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.herald_sched_destroy(handle)
            self._handle = None

    @property
    def traffic(self) -> Traffic:
        """Rows moved so far."""
        t = _Traffic()
        status = _Status()
        _check(self._lib.herald_sched_traffic(self._handle, ctypes.byref(t),
                                              ctypes.byref(status)), status)
        return Traffic(samples=t.samples, steps=t.steps, pull_rows=t.pull_rows,
                       pull_state_rows=t.pull_state_rows, push_rows=t.push_rows,
                       flush_rows=t.flush_rows)

    def _list(self, worker: int, index: int) -> np.ndarray:
        status = _Status()
        size = ctypes.c_int64()
        _check(self._lib.herald_sched_list_size(self._handle, worker, index, ctypes.byref(size),
                                                ctypes.byref(status)), status)
        out = np.empty(size.value, dtype=np.int64)
        _check(self._lib.herald_sched_copy_list(
            self._handle, worker, index, out.ctypes.data_as(_I64P), size.value,
            ctypes.byref(status)), status)
        return out

    def worker_plan(self, worker: int) -> StepPlan:
        """Plan of one worker for the last step (a worker process needs only its own)."""
        if self.emit_worker is not None and worker != self.emit_worker:
            raise InvalidArgumentError(
                f"Expected the worker whose plans this engine writes ({self.emit_worker}). "
                f"Received: worker={worker}")
        cfg = self.config
        fields = {n: self._list(worker, i) for i, n in enumerate(StepPlan.LISTS)}
        occ = self._list(worker, _OCCURRENCE).reshape(cfg.batch_size, cfg.num_fields)
        return StepPlan(slots=occ, **fields)

    def encode_plan(self, worker: int, samples: np.ndarray, digest: int,
                    checksum: int) -> bytes:
        """``worker``'s samples (B,) and plan of the last step in the shipped form
        (``plan_codec``), read from the engine's lists; stamped with the step, worker,
        configuration ``digest`` and batch ``checksum``."""
        samples = np.ascontiguousarray(samples, dtype=np.int64)
        if samples.shape != (self.config.batch_size,):
            raise InvalidArgumentError(f"Expected ({self.config.batch_size},) samples. "
                                       f"Received: {samples.shape}")
        stamp = _Stamp(self.step_id - 1, worker, digest, checksum)
        size = ctypes.c_int64()
        status = _Status()
        while True:
            code = self._lib.herald_sched_encode_plan(
                self._handle, worker, samples.ctypes.data_as(_I64P), ctypes.byref(stamp),
                self._wire.ctypes.data_as(_U8P), self._wire.size, ctypes.byref(size),
                ctypes.byref(status))
            if code != _core_codes.OUT_OF_RANGE or size.value <= self._wire.size:
                break
            self._wire = np.empty(2 * size.value, np.uint8)
        _check(code, status)
        return self._wire[:size.value].tobytes()

    def _plans(self, region: np.ndarray) -> StepPlans:
        """All workers' plans of the last step, as views of ``region``, the buffer the engine
        wrote them into (a fresh one each step, so earlier plans stay as they were)."""
        starts, sizes = self._starts, self._sizes.ravel().tolist()  # this step's layout
        outside: dict[int, np.ndarray] = {}
        over = self._sizes > self._capacity
        if over.any():  # lists longer than their share are not in region: copy them out now
            for w, index in zip(*np.nonzero(over)):
                outside[int(w) * _NUM_LISTS + int(index)] = self._list(int(w), int(index))
            self._capacity[over] = 2 * self._sizes[over]
            self._layout()  # the next step's
        return StepPlans(region, starts, sizes, self.config, outside, self.emit_worker)

    def fast_forward(self, batches: Iterable[np.ndarray]) -> int:
        """Schedules ``batches`` without producing plans (same decisions, faster): restores the
        state of a checkpointed step by replaying the batches before it. Returns their number."""
        status = _Status()
        done = 0
        if self.emit_plans:
            _check(self._lib.herald_sched_set_emit_plans(self._handle, 0, ctypes.byref(status)),
                   status)
        try:
            for batch in batches:
                self.step(batch, emit_plans=False)
                done += 1
        finally:
            if self.emit_plans:
                _check(self._lib.herald_sched_set_emit_plans(self._handle, 1,
                                                             ctypes.byref(status)), status)
        return done

    def step(self, keys: np.ndarray, emit_plans: bool | None = None) -> ScheduledStep:
        """Schedules the next global batch (N * B, F); plans only if the engine emits them."""
        cfg = self.config
        keys = check_batch(cfg, keys)
        samples = np.empty((cfg.num_workers, cfg.batch_size), dtype=np.int64)
        status = _Status()
        plans = None
        if self.emit_plans and emit_plans is not False:
            # A fresh buffer: the plans handed out before stay untouched.
            region = np.empty(self._total, dtype=np.int64)
            _check(self._lib.herald_sched_step_into(
                self._handle, keys.ctypes.data_as(_I64P), keys.shape[0], keys.shape[1],
                samples.ctypes.data_as(_I64P), region.ctypes.data_as(_I64P), self._capacity_ptr,
                self._sizes_ptr, ctypes.byref(status)), status)
            self._region = region
            plans = self._plans(region)
        else:
            _check(self._lib.herald_sched_step(
                self._handle, keys.ctypes.data_as(_I64P), keys.shape[0], keys.shape[1],
                samples.ctypes.data_as(_I64P), ctypes.byref(status)), status)
        step = self.step_id
        self.step_id += 1
        return ScheduledStep(step=step, samples=samples, plans=plans)


def batch_checksum(keys: np.ndarray) -> int:
    """The library's order-sensitive checksum of a global batch's keys (``herald_plan_batch_
    checksum``): int64 keys, row-major, a 1-D batch as one column."""
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    rows, cols = keys.shape[0], int(np.prod(keys.shape[1:]))
    out = ctypes.c_int64()
    status = _Status()
    _check(load_library().herald_plan_batch_checksum(
        keys.ctypes.data, rows, cols, ctypes.byref(out), ctypes.byref(status)), status)
    return int(out.value)


def decode_plan(blob: bytes, step: int, rank: int, digest: int,
                checksum: int) -> tuple[np.ndarray, StepPlan]:
    """(samples, plan) of a shipped plan, after the library checked that it is the plan of this
    ``step`` and ``rank`` under a configuration with ``digest`` for a batch with ``checksum``
    (``InvalidArgumentError`` naming the first disagreement otherwise)."""
    lib = load_library()
    stamp = _Stamp(step, rank, digest, checksum)
    sizes = np.empty(_NUM_LISTS + 2, np.int64)
    status = _Status()
    _check(lib.herald_plan_decoded_sizes(blob, len(blob), ctypes.byref(stamp),
                                         sizes.ctypes.data_as(_I64P), ctypes.byref(status)),
           status)
    counts = sizes.tolist()
    fields = counts.pop()
    out = np.empty(sum(counts), np.int64)
    _check(lib.herald_plan_decode(blob, len(blob), ctypes.byref(stamp),
                                  out.ctypes.data_as(_I64P), out.size, ctypes.byref(status)),
           status)
    bounds = [0, *itertools.accumulate(counts)]
    v = [out[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]
    samples = v[_NUM_LISTS]
    return samples, _plan_of(v[:_NUM_LISTS], (samples.size, fields))
