"""The C++ engine's plans equal saved reference digests (recorded before its optimisation).

Traces come from integer hashing only (no RNG stream or libm that could change with numpy), so
the digests are stable. Each case covers a code path of the engine: byte-lane allocators
(N <= 8, F <= 63) and their general fallbacks (N > 8, F > 63), LRU and LFU, evictions, herald,
het and ps, keys repeated inside a sample and negative keys.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from herald_tf.scheduler import SchedulerConfig
from herald_tf.scheduler._native import NativeEngine
from herald_tf.scheduler.types import StepPlan


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hashed_trace(seed: int, rows: int, fields: int, keys_per_field: int,
                 shared_space: bool = False) -> np.ndarray:
    """(rows, fields) int64 keys, skewed to small ranks (a product of two uniform ranks)."""
    i = np.arange(rows * fields, dtype=np.uint64) + np.uint64(seed) * np.uint64(1 << 40)
    k = np.uint64(keys_per_field)
    rank = (_splitmix64(i) % k) * (_splitmix64(i ^ np.uint64(0x5BD1E995)) % k) // k
    rank = rank.astype(np.int64).reshape(rows, fields)
    if shared_space:
        return rank - 3  # one key space for all fields: repeats inside a sample, negative keys
    return (np.arange(fields, dtype=np.int64) << 32) | rank


def plan_digest(config: SchedulerConfig, trace: np.ndarray) -> str:
    """sha256 over every step's allocation and plans, then the traffic counters."""
    engine = NativeEngine(config)
    g = config.global_batch
    h = hashlib.sha256()
    for t in range(len(trace) // g):
        step = engine.step(trace[t * g:(t + 1) * g])
        h.update(step.samples.tobytes())
        for plan in step.plans:
            for name in StepPlan.LISTS + ("slots",):
                a = np.ascontiguousarray(getattr(plan, name), dtype=np.int64)
                h.update(np.int64(a.size).tobytes())
                h.update(a.tobytes())
    h.update(repr(engine.traffic).encode())
    return h.hexdigest()


# (config, trace arguments, digest recorded with the engine before its optimisation)
CASES = {
    "herald-grouped-n8": (
        dict(num_workers=8, batch_size=32, num_fields=26, cache_capacity=400, policy="herald",
             allocation="grouped"),
        dict(seed=1, rows=256 * 40, fields=26, keys_per_field=3000),
        "ffbaa2223d0ef8fd903868b452ab43af4e2fe57cfbb0f61c0ed68fbca50a6e85"),
    "herald-greedy-lfu-shared": (
        dict(num_workers=5, batch_size=20, num_fields=12, cache_capacity=150, policy="herald",
             allocation="greedy", eviction="lfu"),
        dict(seed=2, rows=100 * 40, fields=12, keys_per_field=2000, shared_space=True),
        "60d47b968056904daf499a2d18ed4c7a1b1fbc858579157ec3c07804ab83f2f7"),
    "herald-grouped-n16": (
        dict(num_workers=16, batch_size=8, num_fields=10, cache_capacity=100, policy="herald",
             allocation="grouped"),
        dict(seed=3, rows=128 * 40, fields=10, keys_per_field=1500, shared_space=True),
        "44e76beb5fefcb1b5d4a24aefc80b4f36cb8c58c8d431eff1e869c50f8cff570"),
    "herald-grouped-f70": (
        dict(num_workers=4, batch_size=8, num_fields=70, cache_capacity=500, policy="herald",
             allocation="grouped"),
        dict(seed=4, rows=32 * 30, fields=70, keys_per_field=800),
        "50b865dd28404fb36095f6554e807fe448a4d5b9efb6000373c4263fcc513155"),
    "herald-greedy-f70-n12": (
        dict(num_workers=12, batch_size=4, num_fields=70, cache_capacity=300, policy="herald",
             allocation="greedy"),
        dict(seed=5, rows=48 * 30, fields=70, keys_per_field=800),
        "06a08fc72818beb7f803d488c687e94409302c1e05afc590f8b3ddf82f19a128"),
    "herald-none-no-cache": (
        dict(num_workers=3, batch_size=16, num_fields=8, cache_capacity=0, policy="herald",
             allocation="none"),
        dict(seed=6, rows=48 * 40, fields=8, keys_per_field=500),
        "6c092825881c533817c0db2df037a7b372f415403d4108ee5de5b9f6d74680a3"),
    "het-bound2-grouped": (
        dict(num_workers=8, batch_size=16, num_fields=13, cache_capacity=200, policy="het",
             allocation="grouped", bound=2),
        dict(seed=7, rows=128 * 40, fields=13, keys_per_field=2000, shared_space=True),
        "9c06ff3b8eb8a729e4f3a63ab0363fb00d8d469d10638f02fa7f33ee05a867c6"),
    "het-lfu-greedy-n9": (
        dict(num_workers=9, batch_size=10, num_fields=6, cache_capacity=80, policy="het",
             allocation="greedy", eviction="lfu"),
        dict(seed=8, rows=90 * 40, fields=6, keys_per_field=700),
        "0ae29f9b94f0030a66c5f6a39be1cdf7a5a85d202e6f48b9ab91c5a08e2a3c6d"),
    "ps": (
        dict(num_workers=4, batch_size=16, num_fields=9, cache_capacity=0, policy="ps",
             allocation="none"),
        dict(seed=9, rows=64 * 30, fields=9, keys_per_field=900, shared_space=True),
        "c87458d6dd4499277bb4efe9e80ecd1acdc9365a427da578aff14e73635fda09"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plans_equal_the_recorded_reference(native_lib: str, name: str) -> None:
    config, trace_args, digest = CASES[name]
    got = plan_digest(SchedulerConfig(**config), hashed_trace(**trace_args))
    assert got == digest, f"{name}: plans differ from the recorded reference"
