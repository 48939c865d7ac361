"""SchedulerConfig validation and traffic accounting by optimizer."""

from __future__ import annotations

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
