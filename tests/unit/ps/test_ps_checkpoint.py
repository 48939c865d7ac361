"""Checkpoints: atomic shard files + manifest; restore onto the same and other shard counts."""

from __future__ import annotations

import os

import numpy as np
import pytest

from herald_tf.config import OptimizerConfig, TableConfig
from herald_tf.ps import checkpoint
from herald_tf.ps.errors import FailedPreconditionError, NotFoundError
from herald_tf.ps.sharding import split_by_shard
from herald_tf.ps.store import PushEntry, ShardStore

TABLES = [TableConfig("a", 4, seed=1, optimizer=OptimizerConfig("adam", epsilon=1e-4)),
          TableConfig("b", 3, seed=2, optimizer=OptimizerConfig("adagrad"))]
KEYS = np.random.default_rng(0).integers(-(2**40), 2**40, 500).astype(np.int64)


def trained(num_shards: int, steps: int = 3) -> list[ShardStore]:
    stores = [ShardStore(i, num_shards) for i in range(num_shards)]
    rng = np.random.default_rng(1)
    for s in stores:
        s.connect(TABLES, num_workers=1)
    for step in range(steps):
        entries = {}
        for cfg in TABLES:
            k = np.unique(rng.choice(KEYS, 200))
            entries[cfg.name] = (k, rng.normal(size=(k.shape[0], cfg.dim)).astype(np.float32))
        for s, store in enumerate(stores):
            pushes = []
            for name, (k, g) in entries.items():
                pos = split_by_shard(k, num_shards)[s]
                pushes.append(PushEntry(name, k[pos], g[pos], 0.1))
            store.push(step, 0, pushes)
    return stores


def save(stores: list[ShardStore], directory: str, step: int) -> None:
    for s in stores:
        checkpoint.write_shard(s, directory, step)
    checkpoint.commit(directory, step, len(stores), [t.to_dict() for t in TABLES], 1)


def rows(stores: list[ShardStore], name: str) -> tuple[np.ndarray, ...]:
    out = [np.zeros((KEYS.shape[0], TABLES[0].dim if name == "a" else 3), np.float32),
           None, np.zeros(KEYS.shape[0], np.int64)]
    states = []
    for s, pos in enumerate(split_by_shard(KEYS, len(stores))):
        r = stores[s].pull(name, KEYS[pos], with_state=True)
        out[0][pos] = r.values
        out[2][pos] = r.versions
        states.append((pos, r.state))
    state = np.zeros((KEYS.shape[0], states[0][1].shape[1]), np.float32)
    for pos, st in states:
        state[pos] = st
    return out[0], state, out[2]


@pytest.mark.parametrize("old,new", [(2, 2), (2, 3), (3, 1)])
def test_restore_serves_identical_rows(tmp_path: object, old: int, new: int) -> None:
    stores = trained(old)
    save(stores, str(tmp_path), 2)
    restored = [ShardStore(i, new) for i in range(new)]
    for s in restored:
        assert checkpoint.restore(s, str(tmp_path)) == 2
        assert s.applied_step == 2 and s.num_workers == 1
    for cfg in TABLES:
        for a, b in zip(rows(stores, cfg.name), rows(restored, cfg.name), strict=True):
            np.testing.assert_array_equal(a, b)
    assert sum(s.tables["a"].size for s in restored) == sum(s.tables["a"].size for s in stores)


def test_files_are_atomic_and_the_manifest_marks_completion(tmp_path: object) -> None:
    stores = trained(2)
    checkpoint.write_shard(stores[0], str(tmp_path), 2)
    assert checkpoint.latest_step(str(tmp_path)) is None  # no manifest yet
    with pytest.raises(FailedPreconditionError, match="Missing"):
        checkpoint.commit(str(tmp_path), 2, 2, [], 1)
    checkpoint.write_shard(stores[1], str(tmp_path), 2)
    checkpoint.commit(str(tmp_path), 2, 2, [t.to_dict() for t in TABLES], 1)
    assert checkpoint.latest_step(str(tmp_path)) == 2
    folder = checkpoint.step_dir(str(tmp_path), 2)
    assert sorted(os.listdir(folder)) == ["manifest.json", "shard-00000-of-00002.npz",
                                          "shard-00001-of-00002.npz"]


def test_checkpoint_of_a_step_not_yet_or_no_longer_current_is_refused(tmp_path: object) -> None:
    stores = trained(1, steps=2)
    with pytest.raises(FailedPreconditionError, match="already applied step 1"):
        checkpoint.write_shard(stores[0], str(tmp_path), 0)
    with pytest.raises(Exception, match="step 2"):
        checkpoint.write_shard(stores[0], str(tmp_path), 2, timeout=0.05)


def test_restore_without_checkpoint_is_not_found(tmp_path: object) -> None:
    with pytest.raises(NotFoundError):
        checkpoint.restore(ShardStore(0, 1), str(tmp_path))


def test_restore_drops_plans_posted_after_the_checkpoint(tmp_path: object) -> None:
    stores = trained(1)
    save(stores, str(tmp_path), 2)
    store = stores[0]
    store.num_workers = 2
    store.post_plans(3, [1], [b"a plan of the run that did not go on"])
    checkpoint.restore(store, str(tmp_path))
    assert store.plans.take(3, 1) == []
