"""The stable key → shard function: pinned values, balance, stable partition."""

from __future__ import annotations

import numpy as np
from reference import MASK64, _mix64

from herald_tf.ps.sharding import SHARD_SALT, shard_of, split_by_shard


def test_shard_of_is_pinned() -> None:
    # Changing these values moves every existing row to another shard: never do it silently.
    keys = np.array([0, 1, -1, 2**63 - 1], dtype=np.int64)
    assert shard_of(keys, 1000).tolist() == [754, 934, 30, 62]


def test_shard_of_matches_its_documented_definition() -> None:
    keys = np.random.default_rng(0).integers(-(2**63), 2**63 - 1, 200, dtype=np.int64)
    expected = [_mix64((k & MASK64) ^ SHARD_SALT) % 7 for k in keys.tolist()]
    assert shard_of(keys, 7).tolist() == expected


def test_shards_are_balanced_for_sequential_keys() -> None:
    counts = np.bincount(shard_of(np.arange(300_000, dtype=np.int64), 3), minlength=3)
    assert counts.min() > 0.98 * counts.max()


def test_split_by_shard_is_a_stable_partition() -> None:
    keys = np.random.default_rng(1).integers(-(2**63), 2**63 - 1, 10_000, dtype=np.int64)
    parts = split_by_shard(keys, 3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(keys.shape[0]))
    for s, pos in enumerate(parts):
        assert (np.diff(pos) > 0).all()
        assert (shard_of(keys[pos], 3) == s).all()
