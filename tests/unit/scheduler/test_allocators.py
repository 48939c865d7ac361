"""Allocation: every worker gets exactly B samples and the allocation is a permutation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sched_helpers import zipf_trace

from herald_tf.scheduler import Allocation, Policy, ReferenceEngine, SchedulerConfig
from herald_tf.scheduler._native import NativeEngine


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    allocation=st.sampled_from(list(Allocation)),
    workers=st.integers(1, 9),
    batch=st.integers(1, 9),
    fields=st.integers(1, 5),
    keys_per_field=st.integers(1, 12),
)
def test_each_worker_gets_exactly_b_samples_and_allocation_is_a_permutation(
    native_lib: str, seed: int, allocation: Allocation, workers: int, batch: int, fields: int,
    keys_per_field: int,
) -> None:
    cfg = SchedulerConfig(num_workers=workers, batch_size=batch, num_fields=fields,
                          cache_capacity=8, allocation=allocation)
    engine = NativeEngine(cfg, emit_plans=False)
    trace = zipf_trace(seed, 4, cfg.global_batch, fields, keys_per_field, 1.0)
    for t in range(4):
        samples = engine.step(trace[t * cfg.global_batch:(t + 1) * cfg.global_batch]).samples
        assert samples.shape == (workers, batch)
        np.testing.assert_array_equal(np.sort(samples.ravel()), np.arange(cfg.global_batch))


@pytest.mark.parametrize("allocation", list(Allocation))
def test_reference_allocation_is_a_permutation_with_b_per_worker(allocation: Allocation) -> None:
    cfg = SchedulerConfig(num_workers=3, batch_size=5, num_fields=2, cache_capacity=6,
                          allocation=allocation)
    engine = ReferenceEngine(cfg)
    trace = zipf_trace(1, 3, cfg.global_batch, 2, 6, 1.2)
    for t in range(3):
        samples = engine.step(trace[t * 15:(t + 1) * 15]).samples
        np.testing.assert_array_equal(np.sort(samples.ravel()), np.arange(15))


def test_no_allocation_is_the_contiguous_split(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=3, num_fields=1, cache_capacity=4,
                          allocation=Allocation.NONE)
    keys = np.arange(6, dtype=np.int64).reshape(6, 1)
    np.testing.assert_array_equal(NativeEngine(cfg).step(keys).samples, [[0, 1, 2], [3, 4, 5]])


def test_greedy_sends_a_sample_to_the_worker_owning_its_rows(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=1, num_fields=1, cache_capacity=4,
                          allocation=Allocation.GREEDY)
    engine = NativeEngine(cfg)
    engine.step(np.array([[10], [20]], dtype=np.int64))  # worker 0 owns 10, worker 1 owns 20
    samples = engine.step(np.array([[20], [10]], dtype=np.int64)).samples
    np.testing.assert_array_equal(samples, [[1], [0]])
    assert engine.traffic.rows == 0  # both rows stayed private: nothing moved


def test_grouped_puts_samples_sharing_a_key_on_one_worker(native_lib: str) -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=2, num_fields=1, cache_capacity=4,
                          allocation=Allocation.GROUPED)
    engine = NativeEngine(cfg)
    engine.step(np.array([[1], [2], [3], [4]], dtype=np.int64))
    samples = engine.step(np.array([[7], [8], [7], [8]], dtype=np.int64)).samples
    assert sorted(map(sorted, samples.tolist())) == [[0, 2], [1, 3]]
    assert engine.traffic.push_rows == 0  # no shared key: no gradient pushed


def test_allocation_other_than_none_is_refused_with_ps() -> None:
    with pytest.raises(ValueError, match="allocation=none"):
        SchedulerConfig(num_workers=2, batch_size=1, num_fields=1, cache_capacity=0,
                        policy=Policy.PS, allocation=Allocation.GREEDY)
