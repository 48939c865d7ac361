"""The Python reference engine: slow and simple, the executable definition of the plans.

It computes exactly what the C++ engine computes (same allocation, same plans, same slots, same
traffic), one dict operation at a time. Tests compare the two on random traces and replay the
plans of both against an independent model of the PS and the caches (``replay``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from herald_tf.scheduler.allocators import make_allocator
from herald_tf.scheduler.cache_directory import CacheDirectory
from herald_tf.scheduler.policies import make_policy
from herald_tf.scheduler.state import KeyTable, StepContext, compute_read_slots
from herald_tf.scheduler.types import (
    ScheduledStep,
    SchedulerConfig,
    SchedulerConfigError,
    StepPlan,
    Traffic,
)


def check_batch(config: SchedulerConfig, keys: np.ndarray) -> np.ndarray:
    """Returns ``keys`` as a C-contiguous (N * B, F) int64 array or raises SchedulerConfigError."""
    keys = np.asarray(keys)
    if keys.dtype.kind not in "iu":
        raise SchedulerConfigError(
            f"Expected integer keys (int64). Received: keys.dtype={keys.dtype}"
        )
    expected = (config.global_batch, config.num_fields)
    if keys.shape != expected:
        raise SchedulerConfigError(
            f"Expected a global batch of shape {expected}. Received: keys.shape={keys.shape}"
        )
    return np.ascontiguousarray(keys, dtype=np.int64)


class ReferenceEngine:
    """Schedules global batches one after another; see the module docstring."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.step_id = 0
        self.table = KeyTable(config.num_workers, config.batch_size)
        self.dirs = [
            CacheDirectory(config.cache_capacity, config.eviction)
            for _ in range(config.num_workers)
        ]
        self.allocator = make_allocator(config.allocation)
        self.policy = make_policy(config)
        self.traffic = Traffic()

    def fast_forward(self, batches: Iterable[np.ndarray]) -> int:
        """Schedules ``batches`` without producing plans; returns their number."""
        done = 0
        for batch in batches:
            self.step(batch, emit_plans=False)
            done += 1
        return done

    def step(self, keys: np.ndarray, emit_plans: bool = True) -> ScheduledStep:
        """Schedules the next global batch (N * B, F) and returns its allocation and plans."""
        cfg = self.config
        keys = check_batch(cfg, keys)
        samples = self.allocator.allocate(keys, self.table)
        worker_keys: list[list[int]] = []
        order: list[int] = []
        users: dict[int, int] = {}
        for w in range(cfg.num_workers):
            mine: list[int] = []
            for key in keys[samples[w]].ravel().tolist():
                mask = users.get(key, 0)
                if mask == 0:
                    order.append(key)
                if not (mask >> w) & 1:
                    mine.append(key)
                    users[key] = mask | (1 << w)
            worker_keys.append(mine)
        names = StepPlan.LISTS[2:]
        ctx = StepContext(
            step=self.step_id, config=cfg, worker_keys=worker_keys, order=order, users=users,
            read_slots=[], held=[], lists=[{n: [] for n in names} for _ in range(cfg.num_workers)],
        )
        compute_read_slots(ctx, self.dirs)
        self.policy.plan(ctx, self.table, self.dirs, self.traffic)
        self.traffic.samples += cfg.global_batch
        self.traffic.steps += 1
        plans = None
        if emit_plans:
            plans = []
            for w in range(cfg.num_workers):
                arrays = {n: np.array(v, dtype=np.int64) for n, v in ctx.lists[w].items()}
                slot_of = ctx.read_slots[w]
                occ = keys[samples[w]]
                slots = np.array([slot_of[k] for k in occ.ravel().tolist()], dtype=np.int64)
                plans.append(StepPlan(
                    keys=np.array(worker_keys[w], dtype=np.int64),
                    key_slots=np.array([slot_of[k] for k in worker_keys[w]], dtype=np.int64),
                    slots=slots.reshape(occ.shape),
                    **arrays,
                ))
        self.step_id += 1
        return ScheduledStep(step=ctx.step, samples=samples, plans=plans)
