"""The scheduler service: runs ahead of training over a look-ahead window in a background thread.

Usage by a training runtime (one process may schedule for all workers; every worker running its
own copy on the same batches gets identical results, the engine being deterministic)::

    with Scheduler(config, global_batches(keys, config.global_batch)) as sched:
        for scheduled in sched:                 # ScheduledStep, in step order 0, 1, ...
            mine = scheduled.samples[rank]      # (B,) indices into that global batch
            plan = scheduled.plans[rank]        # StepPlan: flush, pull, local, push, ...

The thread computes step t + L while step t trains (``lookahead`` = L); the C++ engine releases
the GIL. The partial last global batch is dropped. Errors in the thread are re-raised by the
consumer as ``SchedulerError``.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from herald_tf.scheduler.reference import ReferenceEngine
from herald_tf.scheduler.types import ScheduledStep, SchedulerConfig, SchedulerError, Traffic

_END = object()


def global_batches(keys: np.ndarray, global_batch: int) -> Iterator[np.ndarray]:
    """Consecutive (global_batch, F) slices of ``keys``; the partial last one is dropped."""
    for start in range(0, len(keys) - global_batch + 1, global_batch):
        yield keys[start:start + global_batch]


def make_engine(config: SchedulerConfig, engine: str = "auto",
                emit_plans: bool = True, emit_worker: int | None = None) -> object:
    """A scheduling engine: ``native`` (C++), ``reference`` (Python) or ``auto`` (native if
    its library loads, else reference, which is far slower). ``emit_worker``: the native engine
    writes only that worker's plan (the others are None); the reference engine writes all."""
    if engine not in ("auto", "native", "reference"):
        raise ValueError(f"Expected engine auto, native or reference. Received: {engine!r}")
    if engine != "reference":
        from herald_tf.scheduler import _native

        if engine == "native" or _native.available():
            return _native.NativeEngine(config, emit_plans=emit_plans, emit_worker=emit_worker)
        warnings.warn(
            "herald_tf's native scheduler library is not available: using the Python reference "
            "engine, which is orders of magnitude slower. Build libherald_core.so (or set "
            f"{_native.CORE_LIB_VAR}).",
            RuntimeWarning,
            stacklevel=2,
        )
    return ReferenceEngine(config)


class Scheduler:
    """Schedules global batches ahead of training; see the module docstring.

    Args:
      config: the scheduler configuration (``lookahead`` bounds how far it runs ahead).
      batches: iterable of (N * B, F) int64 global batches, in training order.
      engine: ``auto``, ``native`` or ``reference`` (see ``make_engine``).
      emit_plans: produce per-worker plans (False: allocation and traffic counters only).
      emit_worker: produce only this worker's plan (a worker running its own copy of the
        scheduler reads no other); None: every worker's.
      start_step: resume at this step: the first ``start_step`` batches of ``batches`` are
        replayed without plans to rebuild the exact state (caches, owners, versions, touched
        set) of an uninterrupted run, and the first step handed out is ``start_step``.
      run_ahead: global batches the thread may schedule ahead of the consumer (default: the
        configuration's ``lookahead``; worker 0 runs further ahead when it ships plans, so that
        the others take several steps' plans at once). Plans do not depend on it.
      on_step: called in the scheduler thread with every step handed out, its global batch and
        the engine (which still holds that step's lists, e.g. for ``NativeEngine.encode_plan``),
        before the step is queued: worker 0 posts the other workers' plans from here, so they
        are sent as far ahead as the step is scheduled. An error in it ends the thread and is
        re-raised by the consumer.
    """

    def __init__(self, config: SchedulerConfig, batches: Iterable[np.ndarray],
                 engine: str = "auto", emit_plans: bool = True, start_step: int = 0,
                 emit_worker: int | None = None,
                 on_step: Callable[[ScheduledStep, np.ndarray, object], None] | None = None,
                 run_ahead: int | None = None) -> None:
        self.config = config
        self._on_step = on_step
        self._engine = make_engine(config, engine, emit_plans, emit_worker)
        self._batches = batches
        self._queue: queue.Queue = queue.Queue(maxsize=run_ahead or config.lookahead)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start_step < 0:
            raise ValueError(f"Expected start_step >= 0. Received: start_step={start_step}")
        self._start_step = start_step
        self._next_step = start_step
        self._traffic = Traffic()
        self._cpu_s = 0.0
        self._lock = threading.Lock()

    def start(self) -> Scheduler:
        """Starts the background thread (idempotent; nothing after ``close``)."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="herald-scheduler",
                                            daemon=True)
            self._thread.start()
        return self

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            batches = iter(self._batches)
            if self._start_step:
                head = itertools.islice(batches, self._start_step)
                done = self._engine.fast_forward(head)
                if done != self._start_step:
                    raise SchedulerError(
                        f"Expected {self._start_step} batches before the resumed step. "
                        f"Received: {done}"
                    )
                with self._lock:
                    self._traffic = self._engine.traffic
            for batch in batches:
                if self._stop.is_set():
                    return
                if len(batch) < self.config.global_batch:
                    break  # the partial last global batch is dropped
                start = time.thread_time()
                scheduled = self._engine.step(batch)
                if self._on_step is not None:
                    self._on_step(scheduled, batch, self._engine)
                with self._lock:
                    self._traffic = self._engine.traffic
                    self._cpu_s += time.thread_time() - start
                if not self._put(scheduled):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(e)
            return
        self._put(_END)

    def _get(self) -> object:
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    if self._queue.empty():
                        raise SchedulerError(
                            "The scheduler was closed or its thread ended."
                        ) from None

    def __iter__(self) -> Iterator[ScheduledStep]:
        self.start()
        while True:
            item = self._get()
            if item is _END:
                self._put(_END)  # later iterations end too
                return
            if isinstance(item, BaseException):
                self._put(item)  # later iterations fail too
                raise SchedulerError(f"The scheduler thread failed: {item}") from item
            if item.step != self._next_step:
                raise SchedulerError(
                    f"Expected step {self._next_step}. Received: step={item.step}"
                )
            self._next_step += 1
            yield item

    def next(self) -> ScheduledStep:
        """The next scheduled step; raises StopIteration at the end of the batches."""
        return next(iter(self))

    @property
    def traffic(self) -> Traffic:
        """Rows moved by the steps scheduled so far (possibly ahead of training)."""
        with self._lock:
            return self._traffic

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds the thread spent on the steps scheduled so far, possibly ahead of the
        consumer (the engine's step and ``on_step``; a resume's replay not included)."""
        with self._lock:
            return self._cpu_s

    def close(self) -> None:
        """Stops the thread and waits for it (the current step finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
