"""KeyIndex (kernels/ps/key_index.cc): dense rows in first-insertion order, growth, export."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald_tf.errors import InvalidArgumentError
from herald_tf.ps._native import KeyIndex, find_duplicate, find_non_finite


def test_lookup_or_insert_numbers_new_keys_in_first_appearance_order() -> None:
    index = KeyIndex()
    rows, is_new = index.lookup_or_insert(np.array([5, -7, 5, 2**63 - 1, -(2**63)], np.int64))
    assert rows.tolist() == [0, 1, 0, 2, 3]
    assert is_new.tolist() == [True, True, False, True, True]
    rows, is_new = index.lookup_or_insert(np.array([9, 5], np.int64))
    assert rows.tolist() == [4, 0] and is_new.tolist() == [True, False]
    assert len(index) == 5
    assert index.keys().tolist() == [5, -7, 2**63 - 1, -(2**63), 9]


def test_lookup_never_inserts() -> None:
    index = KeyIndex()
    index.lookup_or_insert(np.array([3], np.int64))
    assert index.lookup(np.array([3, 4], np.int64)).tolist() == [0, -1]
    assert len(index) == 1


def test_growth_keeps_every_row() -> None:
    index = KeyIndex(capacity_hint=4)
    keys = np.random.default_rng(0).permutation(200_000).astype(np.int64) * 7919 - 10**12
    for part in np.array_split(keys, 37):
        index.lookup_or_insert(part)
    assert len(index) == keys.shape[0]
    np.testing.assert_array_equal(index.lookup(keys), np.arange(keys.shape[0]))
    np.testing.assert_array_equal(index.keys(), keys)


def test_rejects_non_int64_keys() -> None:
    with pytest.raises(InvalidArgumentError, match="int64"):
        KeyIndex().lookup(np.array([1, 2], np.int32))


def test_find_duplicate() -> None:
    assert find_duplicate(np.array([4, 1, 3, 1, 4], np.int64)) == (1, 3)
    assert find_duplicate(np.array([], np.int64)) is None
    assert find_duplicate(np.arange(1000, dtype=np.int64)) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40), max_size=6))
def test_matches_a_dict(batches: list[list[int]]) -> None:
    index = KeyIndex()
    model: dict[int, int] = {}
    for batch in batches:
        rows, is_new = index.lookup_or_insert(np.array(batch, dtype=np.int64))
        for k, r, new in zip(batch, rows.tolist(), is_new.tolist(), strict=True):
            assert new == (k not in model)
            model.setdefault(k, len(model))
            assert r == model[k]
    assert index.keys().tolist() == list(model)


def test_find_non_finite_reports_the_first_bad_value() -> None:
    a = np.zeros((100, 64), np.float32)
    assert find_non_finite(a) == -1
    a[70, 5] = np.inf
    a[90, 1] = np.nan
    assert find_non_finite(a) == 70 * 64 + 5
    assert find_non_finite(np.array([np.float32(-np.inf)])) == 0
    assert find_non_finite(np.zeros((0, 3), np.float32)) == -1


def test_find_non_finite_finds_any_nan_or_inf_wherever_it_is_and_nothing_else() -> None:
    # the scan tests 1024-value blocks at once, then the tail value by value: try both, the
    # block edges, every NaN/Inf bit pattern kind, and the finite values nearest to them
    finite = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max,
                       np.finfo(np.float32).tiny, np.float32(1e-45), -0.0, 0.0], np.float32)
    for bad in (np.inf, -np.inf, np.nan, np.frombuffer(b"\x01\x00\x80\xff", np.float32)[0]):
        for n in (1, 1023, 1024, 1025, 3000):
            for at in sorted({0, n // 2, min(1023, n - 1), min(1024, n - 1), n - 1}):
                a = np.resize(finite, n)
                assert find_non_finite(a) == -1
                a[at] = bad
                assert find_non_finite(a) == at, (bad, n, at)
                if at + 1 < n:
                    a[n - 1] = bad  # a later one does not hide the first
                    assert find_non_finite(a) == at


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=30), st.lists(st.integers(0, 60), max_size=60))
def test_lookup_distinct_is_lookup_and_find_duplicate_in_one_pass(present: list[int],
                                                                  batch: list[int]) -> None:
    index = KeyIndex()
    index.lookup_or_insert(np.unique(np.array(present, dtype=np.int64)))
    keys = np.array(batch, dtype=np.int64)  # present and absent keys, repeats among both
    rows, dup = index.lookup_distinct(keys)
    np.testing.assert_array_equal(rows, index.lookup(keys))
    assert dup == find_duplicate(keys)
    assert len(index) == len(set(present))  # nothing inserted
