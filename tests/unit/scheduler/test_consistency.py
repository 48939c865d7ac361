"""Consistency property: replayed plans keep exact synchronous SGD (DESIGN §2, §3).

For random traces (keys, skew, N, B, F, cache size, policy, allocation, eviction) every plan of
the C++ engine is replayed against a model of the PS and the caches holding versions: every
read sees the latest version and every gradient is applied exactly once. The Python reference
must produce the very same plans.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sched_helpers import assert_same_step, zipf_trace

from herald_tf.scheduler import (
    Allocation,
    ConsistencyError,
    Eviction,
    Policy,
    ReferenceEngine,
    ReplayModel,
    SchedulerConfig,
    StepPlan,
)
from herald_tf.scheduler._native import NativeEngine

MODES = [
    (Policy.PS, Allocation.NONE),
    (Policy.HET, Allocation.NONE),
    (Policy.HET, Allocation.GROUPED),
    (Policy.HERALD, Allocation.NONE),
    (Policy.HERALD, Allocation.GREEDY),
    (Policy.HERALD, Allocation.GROUPED),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    mode=st.sampled_from(MODES),
    eviction=st.sampled_from(list(Eviction)),
    workers=st.integers(1, 5),
    batch=st.integers(1, 6),
    fields=st.integers(1, 4),
    keys_per_field=st.integers(1, 30),
    skew=st.floats(0.0, 2.0),
    capacity=st.integers(0, 25),
    steps=st.integers(1, 12),
    shared_space=st.booleans(),
)
def test_every_read_sees_the_latest_value_and_gradients_apply_once(
    native_lib: str, seed: int, mode: tuple[Policy, Allocation], eviction: Eviction,
    workers: int, batch: int, fields: int, keys_per_field: int, skew: float, capacity: int,
    steps: int, shared_space: bool,
) -> None:
    policy, allocation = mode
    cfg = SchedulerConfig(
        num_workers=workers, batch_size=batch, num_fields=fields,
        cache_capacity=0 if policy == Policy.PS else capacity, policy=policy,
        allocation=allocation, eviction=eviction,
    )
    trace = zipf_trace(seed, steps, cfg.global_batch, fields, keys_per_field, skew, shared_space)
    native, reference, model = NativeEngine(cfg), ReferenceEngine(cfg), ReplayModel(cfg)
    for t in range(steps):
        batch_keys = trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]
        scheduled = native.step(batch_keys)
        assert_same_step(scheduled, reference.step(batch_keys))
        model.apply(batch_keys, scheduled)
    model.check_final()
    assert native.traffic == reference.traffic


def test_replay_catches_a_stale_read(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=1, num_fields=1, cache_capacity=4)
    engine, model = NativeEngine(cfg), ReplayModel(cfg)
    import numpy as np

    same_key = np.array([[5], [5]], dtype=np.int64)
    model.apply(same_key, engine.step(same_key))
    scheduled = engine.step(same_key)
    scheduled.plans[0] = StepPlan(**{**scheduled.plans[0].__dict__,
                                     "pull_keys": np.zeros(0, np.int64),
                                     "pull_slots": np.zeros(0, np.int64),
                                     "pull_versions": np.zeros(0, np.int64)})
    with pytest.raises(ConsistencyError, match="read but neither held|stale read"):
        model.apply(same_key, scheduled)


def test_replay_catches_a_lost_flush(native_lib: str) -> None:
    import numpy as np

    cfg = SchedulerConfig(num_workers=2, batch_size=1, num_fields=1, cache_capacity=4,
                          allocation=Allocation.NONE)
    engine, model = NativeEngine(cfg), ReplayModel(cfg)
    first = np.array([[5], [6]], dtype=np.int64)  # worker 0 owns 5 dirty after this step
    model.apply(first, engine.step(first))
    second = np.array([[7], [5]], dtype=np.int64)  # worker 1 reads 5: worker 0 must flush
    scheduled = engine.step(second)
    assert scheduled.plans[0].flush_keys.tolist() == [5]
    scheduled.plans[0].flush_keys = np.zeros(0, np.int64)
    scheduled.plans[0].flush_slots = np.zeros(0, np.int64)
    with pytest.raises(ConsistencyError, match="stale read|waits for version 1, the PS has 0"):
        model.apply(second, scheduled)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=lambda m: f"{m[0].name}-{m[1].name}".lower())
def test_long_power_law_trace_stays_consistent(native_lib: str,
                                               mode: tuple[Policy, Allocation]) -> None:
    policy, allocation = mode
    cfg = SchedulerConfig(num_workers=8, batch_size=32, num_fields=8,
                          cache_capacity=0 if policy == Policy.PS else 300, policy=policy,
                          allocation=allocation)
    trace = zipf_trace(13, 60, cfg.global_batch, 8, 2000, 1.05)
    native, reference, model = NativeEngine(cfg), ReferenceEngine(cfg), ReplayModel(cfg)
    for t in range(60):
        batch_keys = trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]
        scheduled = native.step(batch_keys)
        assert_same_step(scheduled, reference.step(batch_keys))
        model.apply(batch_keys, scheduled)
    model.check_final()
