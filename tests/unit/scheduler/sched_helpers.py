"""Trace makers and plan comparison shared by the scheduler tests."""

from __future__ import annotations

import numpy as np
import pytest

from herald_tf.scheduler.types import (
    Allocation,
    Eviction,
    Policy,
    ScheduledStep,
    StepPlan,
)

#: Overrides of a base configuration: every policy, allocator and eviction once.
CONFIGS = [
    dict(policy=Policy.PS, allocation=Allocation.NONE, cache_capacity=0),
    dict(policy=Policy.HET, allocation=Allocation.NONE, eviction=Eviction.LRU),
    dict(policy=Policy.HET, allocation=Allocation.NONE, eviction=Eviction.LFU, bound=3),
    dict(policy=Policy.HERALD, allocation=Allocation.NONE),
    dict(policy=Policy.HERALD, allocation=Allocation.GREEDY, eviction=Eviction.LFU),
    dict(policy=Policy.HERALD, allocation=Allocation.GROUPED),
]

per_config = pytest.mark.parametrize("overrides", CONFIGS, ids=lambda c: "-".join(
    str(v.name if hasattr(v, "name") else v) for v in c.values()))


def zipf_trace(seed: int, steps: int, global_batch: int, fields: int, keys_per_field: int,
               skew: float, shared_space: bool = False) -> np.ndarray:
    """(steps * global_batch, fields) int64 keys; field f draws rank ~ r^-skew among its keys.

    With ``shared_space`` all fields draw from one key space, so a sample may repeat a key."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, keys_per_field + 1, dtype=np.float64)
    p = ranks ** -skew
    p /= p.sum()
    draws = rng.choice(keys_per_field, size=(steps * global_batch, fields), p=p)
    if shared_space:
        return draws.astype(np.int64) - 3  # negative keys too
    return (np.arange(fields, dtype=np.int64) << 32) | draws.astype(np.int64)


def assert_same_step(a: ScheduledStep, b: ScheduledStep) -> None:
    """Both engines produced the same allocation and plans."""
    assert a.step == b.step
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.plans is not None and b.plans is not None
    for w, (pa, pb) in enumerate(zip(a.plans, b.plans, strict=True)):
        for name in StepPlan.LISTS + ("slots",):
            np.testing.assert_array_equal(
                getattr(pa, name), getattr(pb, name), err_msg=f"worker {w} list {name}"
            )
