"""The C++ engine equals the Python reference on larger traces, and its C ABI validates."""

from __future__ import annotations

import numpy as np
import pytest
from sched_helpers import assert_same_step, per_config, zipf_trace

from herald_tf.errors import InvalidArgumentError
from herald_tf.scheduler import (
    ReferenceEngine,
    SchedulerConfig,
    SchedulerConfigError,
    StepPlan,
)
from herald_tf.scheduler._native import NativeEngine


def _config_and_trace(overrides: dict, steps: int) -> tuple[SchedulerConfig, np.ndarray]:
    """4 workers, 16 samples of 5 keys each, 60 rows a cache, with `overrides`; a zipf trace."""
    base = dict(num_workers=4, batch_size=16, num_fields=5, cache_capacity=60)
    cfg = SchedulerConfig(**{**base, **overrides})
    return cfg, zipf_trace(7, steps, cfg.global_batch, 5, 300, 1.05)


@per_config
def test_native_plans_equal_reference_plans(native_lib: str, overrides: dict) -> None:
    cfg, trace = _config_and_trace(overrides, 25)
    native, reference = NativeEngine(cfg), ReferenceEngine(cfg)
    for t in range(25):
        batch = trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]
        assert_same_step(native.step(batch), reference.step(batch))
    assert native.traffic == reference.traffic


def test_same_trace_twice_gives_identical_plans(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=3, batch_size=8, num_fields=3, cache_capacity=20)
    trace = zipf_trace(3, 6, cfg.global_batch, 3, 50, 1.1)
    a, b = NativeEngine(cfg), NativeEngine(cfg)
    for t in range(6):
        batch = trace[t * 24:(t + 1) * 24]
        assert_same_step(a.step(batch), b.step(batch))


def test_wrong_batch_shape_is_refused(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=2, num_fields=3, cache_capacity=4)
    engine = NativeEngine(cfg)
    with pytest.raises(SchedulerConfigError, match="shape"):
        engine.step(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(SchedulerConfigError, match="integer keys"):
        engine.step(np.zeros((4, 3), dtype=np.float32))


def test_c_abi_refuses_a_bad_config(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=2, num_fields=3, cache_capacity=4)
    object.__setattr__(cfg, "num_workers", 65)
    with pytest.raises(InvalidArgumentError, match="num_workers"):
        NativeEngine(cfg)


def test_engine_without_plans_counts_the_same_traffic(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=8, num_fields=4, cache_capacity=30)
    trace = zipf_trace(5, 10, 16, 4, 80, 1.05)
    a, b = NativeEngine(cfg, emit_plans=False), NativeEngine(cfg)
    for t in range(10):
        assert a.step(trace[t * 16:(t + 1) * 16]).plans is None
        b.step(trace[t * 16:(t + 1) * 16])
    assert a.traffic == b.traffic


def test_one_workers_plan_equals_its_part_of_all_plans(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=3, batch_size=4, num_fields=2, cache_capacity=6)
    engine = NativeEngine(cfg)
    trace = zipf_trace(9, 3, 12, 2, 20, 1.0)
    for t in range(3):
        plans = engine.step(trace[t * 12:(t + 1) * 12]).plans
        for w in range(3):
            assert engine.worker_plan(w).equals(plans[w])


def test_only_rows_applied_by_the_puller_are_pulled_with_state(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=4, batch_size=8, num_fields=4, cache_capacity=30)
    trace = zipf_trace(6, 12, 32, 4, 60, 1.1)
    engine = NativeEngine(cfg)
    with_state = 0
    for t in range(12):
        for plan in engine.step(trace[t * 32:(t + 1) * 32]).plans:
            with_state += len(np.intersect1d(plan.pull_keys, plan.local_keys))
    traffic = engine.traffic
    assert traffic.pull_state_rows == with_state < traffic.pull_rows


@per_config
def test_lists_longer_than_their_share_of_the_plan_buffer_are_the_same(
        native_lib: str, overrides: dict) -> None:
    cfg, trace = _config_and_trace(overrides, 12)
    native, reference = NativeEngine(cfg), ReferenceEngine(cfg)
    native._capacity[:] = 1  # every longer list leaves the engine's plan buffer
    native._layout()
    for t in range(12):
        batch = trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]
        assert_same_step(native.step(batch), reference.step(batch))
    assert (native._capacity > 1).any()


def test_plans_handed_out_are_not_overwritten_by_later_steps(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=4, batch_size=16, num_fields=5, cache_capacity=60)
    trace = zipf_trace(8, 10, cfg.global_batch, 5, 300, 1.05)
    engine = NativeEngine(cfg)
    steps, copies = [], []
    for t in range(10):
        step = engine.step(trace[t * cfg.global_batch:(t + 1) * cfg.global_batch])
        steps.append(step)
        copies.append([StepPlan(**{n: getattr(p, n).copy() for n in StepPlan.LISTS + ("slots",)})
                       for p in step.plans])
    for step, kept in zip(steps, copies, strict=True):
        for plan, copy in zip(step.plans, kept, strict=True):
            assert plan.equals(copy)


@pytest.mark.parametrize("share", [None, 1], ids=["in-buffer", "copied-out"])
def test_a_plan_first_read_after_later_steps_equals_one_read_at_once(
        native_lib: str, share: int | None) -> None:
    cfg = SchedulerConfig(num_workers=4, batch_size=16, num_fields=5, cache_capacity=60)
    trace = zipf_trace(8, 10, cfg.global_batch, 5, 300, 1.05)
    eager, lazy = NativeEngine(cfg), NativeEngine(cfg)
    if share is not None:  # lists longer than their share are copied out of the engine
        lazy._capacity[:] = share
        lazy._layout()
    read_at_once, unread = [], []
    for t in range(10):
        batch = trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]
        read_at_once.append(list(eager.step(batch).plans))
        unread.append(lazy.step(batch).plans)
    for plans, later in zip(read_at_once, unread, strict=True):
        for w in reversed(range(cfg.num_workers)):
            assert later[w].equals(plans[w])


def test_step_plans_can_be_replaced_but_not_added_or_removed(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=4, num_fields=2, cache_capacity=6)
    plans = NativeEngine(cfg).step(zipf_trace(1, 1, 8, 2, 20, 1.0)).plans
    replacement = StepPlan(keys=np.array([7], np.int64))
    plans[1] = replacement
    assert plans[1] is replacement and plans[-1] is replacement and len(plans) == 2
    assert plans[:1] == [plans[0]]
    with pytest.raises(IndexError):
        plans[2]  # noqa: B018
    with pytest.raises(TypeError, match="one plan per worker"):
        plans.append(replacement)
    with pytest.raises(TypeError, match="one plan per worker"):
        del plans[0]


@per_config
def test_an_engine_writing_one_workers_plan_gives_that_plan_and_the_same_decisions(
        native_lib: str, overrides: dict) -> None:
    cfg, trace = _config_and_trace(overrides, 12)
    every, one = NativeEngine(cfg), NativeEngine(cfg, emit_worker=2)
    for t in range(12):
        batch = trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]
        a, b = every.step(batch), one.step(batch)
        np.testing.assert_array_equal(a.samples, b.samples)
        assert b.plans[2].equals(a.plans[2])
        assert one.worker_plan(2).equals(a.plans[2])
        assert [b.plans[w] for w in (0, 1, 3)] == [None, None, None]
    assert every.traffic == one.traffic


def test_an_engine_writing_one_workers_plan_refuses_another_worker(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=4, num_fields=2, cache_capacity=6)
    engine = NativeEngine(cfg, emit_worker=0)
    engine.step(zipf_trace(1, 1, 8, 2, 20, 1.0))
    with pytest.raises(InvalidArgumentError, match="worker=1"):
        engine.worker_plan(1)
    with pytest.raises(InvalidArgumentError, match="emit_worker"):
        NativeEngine(cfg, emit_worker=2)
