"""SchedulerConfig validation and traffic accounting by optimizer."""

from __future__ import annotations

import re

import numpy as np
import pytest

from herald_tf.config import OptimizerKind
from herald_tf.scheduler import Policy, SchedulerConfig, SchedulerConfigError, Traffic


def test_config_accepts_names_and_is_frozen() -> None:
    cfg = SchedulerConfig(num_workers=2, batch_size=4, num_fields=3, cache_capacity=5,
                          policy="het", allocation="none", eviction="lfu", bound=2)
    assert cfg.policy == Policy.HET and cfg.global_batch == 8
    assert cfg.total_slots == 5 + 2 * 12
    with pytest.raises(AttributeError):
        cfg.num_workers = 3  # type: ignore[misc]


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_workers=0), "num_workers"),
    (dict(num_workers=65), "num_workers"),
    (dict(lookahead=1), "lookahead"),
    (dict(policy="nope"), "policy"),
    (dict(bound=1), "bound=0 unless policy is het"),
    (dict(cache_capacity=-1), "cache_capacity"),
])
def test_invalid_config_is_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    base = dict(num_workers=2, batch_size=4, num_fields=3, cache_capacity=5)
    with pytest.raises(SchedulerConfigError, match=message):
        SchedulerConfig(**{**base, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    (dict(cache_capacity=10.5), "Expected cache_capacity to be an integer. Received: "
                                "cache_capacity=10.5 of type float"),
    (dict(batch_size=2.0), "Expected batch_size to be an integer. Received: batch_size=2.0"),
    (dict(num_workers="2"), "Expected num_workers to be an integer. Received: num_workers='2'"),
    (dict(num_fields=True), "Expected num_fields to be an integer. Received: num_fields=True"),
    (dict(lookahead=None), "Expected lookahead to be an integer"),
    (dict(dim=np.float32(8)), "Expected dim to be an integer"),
    (dict(policy=True), "Expected policy to be one of ps, het, herald. Received: policy=True"),
])
def test_a_field_of_the_wrong_type_is_refused_naming_it(kwargs: dict, message: str) -> None:
    base = dict(num_workers=2, batch_size=4, num_fields=3, cache_capacity=5)
    with pytest.raises(SchedulerConfigError, match=re.escape(message)):
        SchedulerConfig(**{**base, **kwargs})


def test_numpy_integers_are_accepted_as_plain_ints() -> None:
    cfg = SchedulerConfig(num_workers=np.int64(2), batch_size=np.int32(4), num_fields=3,
                          cache_capacity=np.uint16(5))
    assert type(cfg.num_workers) is int and type(cfg.cache_capacity) is int
    assert cfg == SchedulerConfig(num_workers=2, batch_size=4, num_fields=3, cache_capacity=5)
    assert repr(cfg) == repr(SchedulerConfig(num_workers=2, batch_size=4, num_fields=3,
                                             cache_capacity=5))


def test_bytes_count_state_for_rows_moved_with_it() -> None:
    t = Traffic(samples=10, pull_rows=4, pull_state_rows=4, push_rows=3, flush_rows=2)
    assert t.rows == 9 and t.rows_per_sample() == 0.9
    value = 4 * 8
    assert t.bytes_by_kind(8, OptimizerKind.SGD) == {"pull": 4 * value, "push": 3 * value,
                                                      "flush": 2 * value}
    assert t.bytes_by_kind(8, OptimizerKind.ADAGRAD)["flush"] == 2 * 2 * value
    assert t.bytes_by_kind(8, OptimizerKind.ADAM) == {"pull": 4 * 3 * value, "push": 3 * value,
                                                       "flush": 2 * 3 * value}
    ps = Traffic(samples=1, pull_rows=1)
    assert ps.bytes_by_kind(8, OptimizerKind.ADAM)["pull"] == value
    mixed = Traffic(samples=1, pull_rows=3, pull_state_rows=1)
    assert mixed.bytes_by_kind(8, OptimizerKind.ADAM)["pull"] == 3 * value + 2 * value
