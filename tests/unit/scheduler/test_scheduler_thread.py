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


@pytest.mark.parametrize("engine", ["native", "reference"])
def test_resumed_scheduler_hands_out_the_same_plans_as_an_uninterrupted_one(
    native_lib: str, engine: str,
) -> None:
    cfg = SchedulerConfig(num_workers=3, batch_size=4, num_fields=3, cache_capacity=8)
    trace = zipf_trace(4, 9, 12, 3, 30, 1.1)
    with Scheduler(cfg, global_batches(trace, 12), engine=engine) as full:
        uninterrupted = list(full)
    with Scheduler(cfg, global_batches(trace, 12), engine=engine, start_step=5) as resumed:
        tail = list(resumed)
    assert [s.step for s in tail] == [5, 6, 7, 8]
    for a, b in zip(uninterrupted[5:], tail, strict=True):
        assert_same_step(a, b)
    assert full.traffic == resumed.traffic


def test_resuming_past_the_end_of_the_batches_is_an_error(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=1, batch_size=1, num_fields=1, cache_capacity=1)
    batches = [np.array([[1]], dtype=np.int64)] * 2
    with Scheduler(cfg, batches, start_step=3) as sched:
        with pytest.raises(SchedulerError, match="Expected 3 batches"):
            sched.next()


def test_next_after_close_raises_instead_of_hanging(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=1, batch_size=1, num_fields=1, cache_capacity=1)
    sched = Scheduler(cfg, iter([np.array([[1]], dtype=np.int64)]))
    sched.close()
    with pytest.raises(SchedulerError, match="closed"):
        sched.next()


def test_on_step_sees_every_step_with_its_batch_before_it_is_handed_out(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=4, num_fields=3, cache_capacity=10)
    trace = zipf_trace(4, 6, 8, 3, 40, 1.0)
    seen = []

    def on_step(scheduled, batch, engine) -> None:
        seen.append((scheduled.step, batch.copy()))
        assert engine.encode_plan(1, scheduled.samples[1], 0, 0)  # its lists are still there

    with Scheduler(cfg, global_batches(trace, 8), on_step=on_step, run_ahead=6) as sched:
        steps = [s.step for s in sched]
    assert steps == [t for t, _ in seen] == list(range(6))
    for t, batch in seen:
        np.testing.assert_array_equal(batch, trace[t * 8:(t + 1) * 8])
    assert sched.cpu_seconds > 0


def test_an_error_in_on_step_reaches_the_consumer(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=4, num_fields=3, cache_capacity=10)

    def on_step(scheduled, batch, engine) -> None:
        raise RuntimeError("post failed")

    with Scheduler(cfg, global_batches(zipf_trace(4, 3, 8, 3, 40, 1.0), 8),
                   on_step=on_step) as sched, pytest.raises(SchedulerError, match="post failed"):
        list(sched)
