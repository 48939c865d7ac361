"""HET with bound b > 0: pushes are batched by b local updates, pulls tolerate b of staleness."""

from __future__ import annotations

import numpy as np
from sched_helpers import zipf_trace

from herald_tf.scheduler import Policy, SchedulerConfig
from herald_tf.scheduler._native import NativeEngine


def test_single_worker_pushes_once_every_bound_updates_and_never_pulls(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=1, batch_size=1, num_fields=1, cache_capacity=4,
                          policy=Policy.HET, bound=3)
    engine = NativeEngine(cfg)
    pushes = [len(engine.step(np.array([[42]], dtype=np.int64)).plans[0].push_keys)
              for _ in range(9)]
    assert pushes == [0, 0, 1] * 3
    assert engine.traffic.pull_rows == 0


def test_larger_bound_moves_fewer_rows(native_lib: str) -> None:
    trace = zipf_trace(11, 20, 32, 4, 100, 1.1)
    rows = []
    for bound in (0, 2, 8):
        cfg = SchedulerConfig(num_workers=4, batch_size=8, num_fields=4, cache_capacity=50,
                              policy=Policy.HET, bound=bound)
        engine = NativeEngine(cfg, emit_plans=False)
        for t in range(20):
            engine.step(trace[t * 32:(t + 1) * 32])
        rows.append(engine.traffic.rows)
    assert rows[0] > rows[1] > rows[2]


def test_evicting_a_row_with_pending_updates_pushes_them(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=1, batch_size=1, num_fields=1, cache_capacity=1,
                          policy=Policy.HET, bound=5)
    engine = NativeEngine(cfg)
    engine.step(np.array([[1]], dtype=np.int64))
    plan = engine.step(np.array([[2]], dtype=np.int64)).plans[0]
    assert plan.writeback_keys.tolist() == [1] and engine.traffic.push_rows == 1
