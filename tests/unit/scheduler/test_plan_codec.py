"""plan_codec: a worker's samples and plan survive the bytes worker 0 sends, and a plan made
for another step, rank, configuration or batch is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sched_helpers import zipf_trace

from herald_tf.scheduler import Allocation, Policy, SchedulerConfig, StepPlan
from herald_tf.scheduler._native import NativeEngine
from herald_tf.scheduler.plan_codec import (
    PlanDecodeError,
    batch_checksum,
    config_digest,
    decode_worker_plan,
    encode_worker_plan,
)

CFG = SchedulerConfig(num_workers=3, batch_size=16, num_fields=5, cache_capacity=60,
                      policy=Policy.HERALD, allocation=Allocation.GROUPED)


def _steps(n: int) -> list[tuple[np.ndarray, object]]:
    trace = zipf_trace(3, n, CFG.global_batch, 5, 200, 1.05)
    engine = NativeEngine(CFG)
    g = CFG.global_batch
    return [(trace[t * g:(t + 1) * g], engine.step(trace[t * g:(t + 1) * g])) for t in range(n)]


def _encoded(keys: np.ndarray, scheduled: object, rank: int) -> bytes:
    return encode_worker_plan(scheduled.step, rank, scheduled.samples[rank],
                              scheduled.plans[rank], config_digest(CFG), batch_checksum(keys))


def test_every_workers_decoded_plan_equals_the_engines(native_lib: str) -> None:
    for keys, scheduled in _steps(12):
        for rank in range(CFG.num_workers):
            samples, plan = decode_worker_plan(_encoded(keys, scheduled, rank), scheduled.step,
                                               rank, config_digest(CFG), batch_checksum(keys))
            np.testing.assert_array_equal(samples, scheduled.samples[rank])
            assert plan.equals(scheduled.plans[rank])
            assert all(getattr(plan, n).dtype == np.int64 for n in StepPlan.LISTS)
            assert plan.slots.shape == (CFG.batch_size, CFG.num_fields)


@pytest.mark.parametrize(("change", "match"), [
    (dict(step=1), "plan of step 1"),
    (dict(rank=2), "plan of rank 2"),
    (dict(digest=1), "scheduler configuration"),
    (dict(checksum=1), "same data in the same order"),
])
def test_a_plan_made_for_something_else_is_refused(native_lib: str, change: dict,
                                                   match: str) -> None:
    keys, scheduled = _steps(1)[0]
    expect = dict(step=0, rank=1, digest=config_digest(CFG), checksum=batch_checksum(keys))
    with pytest.raises(PlanDecodeError, match=match):
        decode_worker_plan(_encoded(keys, scheduled, 1), **{**expect, **change})


@pytest.mark.parametrize("blob", [b"", b"x" * 400, b"truncated"], ids=["empty", "other",
                                                                        "short"])
def test_bytes_that_are_no_plan_are_refused(blob: bytes) -> None:
    with pytest.raises(PlanDecodeError, match="Expected"):
        decode_worker_plan(blob, 0, 1, 0, 0)


def test_a_truncated_plan_is_refused(native_lib: str) -> None:
    keys, scheduled = _steps(1)[0]
    blob = _encoded(keys, scheduled, 1)
    with pytest.raises(PlanDecodeError, match="plan bytes"):
        decode_worker_plan(blob[:-4], 0, 1, config_digest(CFG), batch_checksum(keys))


def test_configurations_that_plan_differently_have_different_digests() -> None:
    assert config_digest(CFG) == config_digest(dataclasses.replace(CFG))
    assert config_digest(CFG) != config_digest(dataclasses.replace(CFG, cache_capacity=61))
    assert config_digest(CFG) != config_digest(
        dataclasses.replace(CFG, allocation=Allocation.GREEDY))
