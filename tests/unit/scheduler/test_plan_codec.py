"""plan_codec: a worker's samples and plan survive the bytes worker 0 sends, and a plan made
for another step, rank, configuration or batch is refused."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from sched_helpers import per_config, zipf_trace

from herald_tf.errors import InvalidArgumentError
from herald_tf.scheduler import (
    Allocation,
    Policy,
    SchedulerConfig,
    StepPlan,
)
from herald_tf.scheduler._native import NativeEngine
from herald_tf.scheduler.plan_codec import (
    PlanDecodeError,
    batch_checksum,
    config_digest,
    decode_worker_plan,
)

CFG = SchedulerConfig(num_workers=3, batch_size=16, num_fields=5, cache_capacity=60,
                      policy=Policy.HERALD, allocation=Allocation.GROUPED)

def _steps(n: int, config: SchedulerConfig = CFG, trace: np.ndarray | None = None
           ) -> list[tuple[np.ndarray, object, dict[int, bytes]]]:
    """(keys, scheduled step, every worker's encoded plan) of n steps; plans are encoded right
    after their step, from the engine's lists, as worker 0 does."""
    g = config.global_batch
    if trace is None:
        trace = zipf_trace(3, n, g, config.num_fields, 200, 1.05)
    engine = NativeEngine(config)
    digest = config_digest(config)
    out = []
    for t in range(n):
        keys = trace[t * g:(t + 1) * g]
        scheduled = engine.step(keys)
        out.append((keys, scheduled, {
            r: engine.encode_plan(r, scheduled.samples[r], digest, batch_checksum(keys))
            for r in range(config.num_workers)}))
    return out


def _assert_round_trip(config: SchedulerConfig, steps: list) -> None:
    for keys, scheduled, blobs in steps:
        for rank, blob in blobs.items():
            samples, plan = decode_worker_plan(blob, scheduled.step, rank,
                                               config_digest(config), batch_checksum(keys))
            np.testing.assert_array_equal(samples, scheduled.samples[rank])
            assert plan.equals(scheduled.plans[rank])
            assert all(getattr(plan, n).dtype == np.int64 for n in StepPlan.LISTS)
            assert plan.slots.shape == (config.batch_size, config.num_fields)


@per_config
def test_every_workers_decoded_plan_equals_the_engines(native_lib: str, overrides: dict) -> None:
    config = dataclasses.replace(CFG, **overrides)
    _assert_round_trip(config, _steps(15, config))


def test_a_step_reading_more_than_65535_keys_round_trips(native_lib: str) -> None:
    config = SchedulerConfig(num_workers=2, batch_size=2600, num_fields=26, cache_capacity=1000)
    g = config.global_batch
    trace = np.arange(2 * g * 26, dtype=np.int64).reshape(2 * g, 26)  # every key distinct
    _assert_round_trip(config, _steps(2, config, trace))


def test_compact_plans_are_smaller_than_their_lists(native_lib: str) -> None:
    _, scheduled, blobs = _steps(8)[-1]
    plan = scheduled.plans[1]
    raw = 8 * sum(getattr(plan, n).size for n in (*StepPlan.LISTS, "slots"))
    assert len(blobs[1]) < 0.6 * raw


def test_an_engine_without_a_workers_plan_cannot_encode_it(native_lib: str) -> None:
    engine = NativeEngine(CFG, emit_worker=0)
    scheduled = engine.step(zipf_trace(3, 1, CFG.global_batch, 5, 200, 1.05))
    with pytest.raises(InvalidArgumentError, match="emitted"):
        engine.encode_plan(1, scheduled.samples[1], 0, 0)


@pytest.mark.parametrize(("change", "match"), [
    (dict(step=1), "step 1, rank 1. Received: the plan of step 0"),
    (dict(rank=2), "rank 2. Received: the plan of step 0, rank 1"),
    (dict(digest=1), "scheduler configuration"),
    (dict(checksum=1), "same data in the same order"),
])
def test_a_plan_made_for_something_else_is_refused(native_lib: str, change: dict,
                                                   match: str) -> None:
    keys, _, blobs = _steps(1)[0]
    expect = dict(step=0, rank=1, digest=config_digest(CFG), checksum=batch_checksum(keys))
    with pytest.raises(PlanDecodeError, match=match):
        decode_worker_plan(blobs[1], **{**expect, **change})


def _reorder_samples(keys: np.ndarray) -> np.ndarray:
    return keys[::-1]


def _swap_two_keys_between_samples(keys: np.ndarray) -> np.ndarray:
    # the same multiset of keys (and the same sum), two samples' field 0 exchanged
    out = keys.copy()
    i = int(np.flatnonzero(keys[:, 0] != keys[0, 0])[0])
    out[[0, i], 0] = keys[[i, 0], 0]
    return out


@pytest.mark.parametrize("reorder", [_reorder_samples, _swap_two_keys_between_samples],
                         ids=["samples_reversed", "keys_swapped_between_samples"])
def test_a_plan_for_the_same_keys_in_another_order_is_refused(
        native_lib: str, reorder: Callable[[np.ndarray], np.ndarray]) -> None:
    keys, _, blobs = _steps(1)[0]
    reordered = reorder(keys)
    assert np.array_equal(np.sort(reordered, axis=None), np.sort(keys, axis=None))
    assert not np.array_equal(reordered, keys)
    with pytest.raises(PlanDecodeError, match="same data in the same order"):
        decode_worker_plan(blobs[1], 0, 1, config_digest(CFG), batch_checksum(reordered))


def test_the_batch_checksum_depends_on_the_batch_shape() -> None:
    keys = np.arange(12, dtype=np.int64)
    assert batch_checksum(keys.reshape(3, 4)) != batch_checksum(keys.reshape(4, 3))


def test_the_batch_checksum_is_the_same_for_equal_keys_of_any_layout() -> None:
    keys = np.arange(24, dtype=np.int64).reshape(6, 4)
    assert batch_checksum(keys) == batch_checksum(np.asfortranarray(keys))
    assert batch_checksum(keys) == batch_checksum(keys.astype(">i8"))


@pytest.mark.parametrize("blob", [b"", b"x" * 400, b"truncated"], ids=["empty", "other",
                                                                        "short"])
def test_bytes_that_are_no_plan_are_refused(native_lib: str, blob: bytes) -> None:
    with pytest.raises(PlanDecodeError, match="Expected"):
        decode_worker_plan(blob, 0, 1, 0, 0)


@pytest.mark.parametrize("cut", [1, 4, 100])
def test_a_truncated_or_padded_plan_is_refused(native_lib: str, cut: int) -> None:
    keys, _, blobs = _steps(1)[0]
    expect = (0, 1, config_digest(CFG), batch_checksum(keys))
    for bad in (blobs[1][:-cut], blobs[1] + bytes(cut)):
        with pytest.raises(PlanDecodeError, match="consistent plan bytes"):
            decode_worker_plan(bad, *expect)


def test_positions_outside_the_keys_are_refused(native_lib: str) -> None:
    keys, _, blobs = _steps(3)[-1]
    blob = bytearray(blobs[1])
    blob[-2:] = b"\xff\xff"  # the last install position
    with pytest.raises(PlanDecodeError, match="positions into the plan"):
        decode_worker_plan(bytes(blob), 2, 1, config_digest(CFG), batch_checksum(keys))


def test_configurations_that_plan_differently_have_different_digests() -> None:
    assert config_digest(CFG) == config_digest(dataclasses.replace(CFG))
    assert config_digest(CFG) != config_digest(dataclasses.replace(CFG, cache_capacity=61))
    assert config_digest(CFG) != config_digest(
        dataclasses.replace(CFG, allocation=Allocation.GREEDY))


def test_the_batch_checksum_of_an_empty_batch_depends_only_on_its_shape() -> None:
    empty = np.empty((0, 26), np.int64)
    assert batch_checksum(empty) == batch_checksum(empty.copy())
    assert batch_checksum(empty) != batch_checksum(np.empty((0, 3), np.int64))
