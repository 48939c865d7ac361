"""The look-ahead scheduler thread hands out steps in order, bounded, with errors surfaced."""

from __future__ import annotations

import numpy as np
import pytest
from sched_helpers import assert_same_step, zipf_trace

from herald_tf.scheduler import (
    ReferenceEngine,
    Scheduler,
    SchedulerConfig,
    SchedulerError,
    global_batches,
)


def test_scheduler_thread_matches_direct_scheduling_and_drops_partial_batch(
    native_lib: str,
) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=4, num_fields=3, cache_capacity=10)
    trace = zipf_trace(2, 5, 8, 3, 40, 1.0)[:-3]  # 4 full global batches + a partial one
    reference = ReferenceEngine(cfg)
    with Scheduler(cfg, global_batches(trace, 8), engine="native") as sched:
        got = list(sched)
    assert [s.step for s in got] == [0, 1, 2, 3]
    for t, scheduled in enumerate(got):
        assert_same_step(scheduled, reference.step(trace[t * 8:(t + 1) * 8]))
    assert sched.traffic == reference.traffic


def test_scheduler_runs_at_most_lookahead_steps_ahead(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=1, batch_size=1, num_fields=1, cache_capacity=1,
                          lookahead=2)
    consumed = []

    def batches():
        for t in range(50):
            consumed.append(t)
            yield np.array([[t]], dtype=np.int64)

    sched = Scheduler(cfg, batches()).start()
    first = sched.next()
    assert first.step == 0
    import time

    time.sleep(0.2)
    assert len(consumed) <= 1 + cfg.lookahead + 2  # taken + queued + one in hand
    sched.close()


def test_errors_in_the_scheduler_thread_reach_the_consumer(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=1, num_fields=2, cache_capacity=1)
    bad = [np.zeros((2, 2), dtype=np.int64), np.zeros((2, 3), dtype=np.int64)]
    with Scheduler(cfg, iter(bad)) as sched:
        it = iter(sched)
        assert next(it).step == 0
        with pytest.raises(SchedulerError, match="shape"):
            next(it)
