"""The cache directory: capacity, LRU/LFU orders with tie-breaks by key, slot reuse."""

from __future__ import annotations

from herald_tf.scheduler import CacheDirectory, Eviction


def _fill(d: CacheDirectory, step: int, keys: list[int]) -> list[int]:
    for k in keys:
        d.touch(k, step, staging=100 + k)
    victims = [k for k, _ in d.evict_to_capacity()]
    d.assign_pending()
    return victims


def test_lru_evicts_oldest_step_first_and_ties_by_smaller_key() -> None:
    d = CacheDirectory(3, Eviction.LRU)
    assert _fill(d, 0, [9, 4, 7]) == []
    assert _fill(d, 1, [4, 5]) == [7]  # step 0 leftovers 9, 7: the smaller key goes first


def test_lfu_evicts_least_used_then_oldest_then_smaller_key() -> None:
    d = CacheDirectory(3, Eviction.LFU)
    _fill(d, 0, [1, 2, 3])
    _fill(d, 1, [3])
    assert _fill(d, 2, [8, 9]) == [1, 2]  # freq 1 at step 0 (1, 2) before freq 1 at step 2


def test_capacity_counts_rows_held_between_steps_and_new_rows_get_freed_slots() -> None:
    d = CacheDirectory(2, Eviction.LRU)
    _fill(d, 0, [1, 2])
    slots = {k: d.get(k).slot for k in (1, 2)}
    assert sorted(slots.values()) == [0, 1]
    d.touch(3, 1, staging=50)
    assert d.get(3).slot == -1  # pending, read at its staging slot during the step
    assert [k for k, _ in d.evict_to_capacity()] == [1]
    assert d.assign_pending() == [(3, 50, slots[1])]
    assert len(d) == 2


def test_zero_capacity_holds_nothing() -> None:
    d = CacheDirectory(0, Eviction.LRU)
    assert _fill(d, 0, [1, 2]) == [1, 2]
    assert len(d) == 0
