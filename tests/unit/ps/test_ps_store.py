"""ShardStore: exact step aggregation, waits, validation leaving state unchanged."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from distributed.ps_model import NumpyTable
from reference import assert_close

from herald_tf.config import OptimizerConfig, TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import DeadlineExceededError, FailedPreconditionError
from herald_tf.ps.store import PushEntry, ShardStore

DIM = 4


def table(opt: str = "adam", name: str = "t", dim: int = DIM) -> TableConfig:
    return TableConfig(name, dim, seed=7,
                       optimizer=OptimizerConfig(opt, learning_rate=0.05, epsilon=1e-4))


def store_with(*configs: TableConfig, workers: int = 3) -> ShardStore:
    s = ShardStore(0, 1)
    s.connect(list(configs) or [table()], num_workers=workers, rank=0)
    return s


def keys(*k: int) -> np.ndarray:
    return np.array(k, dtype=np.int64)


def grads(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def snapshot(s: ShardStore) -> dict:
    out = {}
    for name, t in s.tables.items():
        out[name] = {k: v.copy() for k, v in t.export().items()}
    return {"tables": out, "applied": s.applied_step, "health": s.health()["pending_steps"]}


def assert_same(a: dict, b: dict) -> None:
    assert a["applied"] == b["applied"] and a["health"].keys() == b["health"].keys()
    for name in a["tables"]:
        for k in a["tables"][name]:
            np.testing.assert_array_equal(a["tables"][name][k], b["tables"][name][k])


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "adam"])
def test_step_applies_rank_ordered_sum_once_matching_numpy(opt: str) -> None:
    cfg = table(opt)
    s = store_with(cfg)
    model = NumpyTable(cfg)
    rng = np.random.default_rng(0)
    for step in range(20):
        pushes = []
        for rank in range(3):
            k = rng.choice(30, size=10, replace=False).astype(np.int64)
            pushes.append((k, grads(10, step * 10 + rank)))
        for rank in (2, 0, 1):  # arrival order must not matter
            s.push(step, rank, [PushEntry("t", *pushes[rank], 0.05)])
        model.step(pushes, 0.05)
        assert s.applied_step == step
    k = np.arange(30, dtype=np.int64)
    r = s.pull("t", k, with_state=True)
    v, st, ver = model.get(k)
    assert_close(r.values, v)
    assert_close(r.state, st)
    np.testing.assert_array_equal(r.versions, ver)


def test_arrival_order_gives_bitwise_identical_rows() -> None:
    results = []
    for order in ((0, 1, 2), (2, 1, 0)):
        s = store_with(table("adam"))
        for step in range(5):
            for rank in order:
                s.push(step, rank, [PushEntry("t", keys(1, 2, 3), grads(3, step * 3 + rank),
                                              0.05)])
        results.append(s.pull("t", keys(1, 2, 3)).values)
    np.testing.assert_array_equal(results[0], results[1])


def test_empty_pushes_complete_a_step_without_deadlock() -> None:
    s = store_with(table("sgd"))
    s.push(0, 0, [PushEntry("t", keys(1), grads(1, 0), 0.05)])
    s.push(0, 1, [])
    assert s.applied_step == -1
    assert s.health()["pending_steps"]["0"]["ranks"] == [0, 1]
    s.push(0, 2, [])
    assert s.applied_step == 0
    assert s.versions("t", keys(1, 2)).tolist() == [1, 0]


def test_later_steps_wait_for_earlier_ones() -> None:
    s = store_with(table("sgd"), workers=2)
    s.push(1, 0, [])
    s.push(1, 1, [])
    assert s.applied_step == -1
    s.push(0, 0, [])
    s.push(0, 1, [])
    assert s.applied_step == 1


def test_pull_waits_for_min_versions_until_the_step_is_applied() -> None:
    s = store_with(table("sgd"), workers=2)
    s.push(0, 0, [PushEntry("t", keys(5), grads(1, 0), 0.05)])
    out = {}
    th = threading.Thread(target=lambda: out.update(r=s.pull("t", keys(5), min_versions=keys(1),
                                                               timeout=10)))
    th.start()
    th.join(0.2)
    assert th.is_alive()
    s.push(0, 1, [])
    th.join(10)
    assert out["r"].versions.tolist() == [1]


def test_waits_report_missing_ranks_at_the_deadline() -> None:
    s = store_with(table("sgd"))
    s.push(0, 1, [])
    with pytest.raises(DeadlineExceededError, match=r"ranks \[0, 2\]"):
        s.pull("t", keys(1), min_versions=keys(1), timeout=0.05)
    with pytest.raises(DeadlineExceededError, match=r"ranks \[0\]"):
        s.push(0, 2, [], wait_applied=True, timeout=0.05)
    s.push(0, 0, [])  # the late worker still completes the step
    assert s.applied_step == 0


def test_pull_have_versions_returns_only_newer_rows() -> None:
    s = store_with(table("sgd"), workers=1)
    s.push(0, 0, [PushEntry("t", keys(1, 2), grads(2, 0), 0.05)])
    r = s.pull("t", keys(1, 2, 3), have_versions=keys(1, 0, 0))
    assert r.positions.tolist() == [1] and r.versions.tolist() == [1]


def test_reads_create_no_rows() -> None:
    s = store_with(table("adagrad"))
    r = s.pull("t", keys(1, 2), with_state=True)
    assert s.tables["t"].size == 0
    assert r.versions.tolist() == [0, 0]
    np.testing.assert_allclose(r.state, 0.1)


def test_flush_writes_value_state_version() -> None:
    s = store_with(table("adagrad"))
    v = grads(2, 1)
    st = np.abs(grads(2, 2))
    s.flush("t", keys(4, 9), v, st, keys(3, 1))
    r = s.pull("t", keys(9, 4), with_state=True)
    np.testing.assert_array_equal(r.values, v[::-1])
    np.testing.assert_array_equal(r.state, st[::-1])
    assert r.versions.tolist() == [1, 3]


def _bad_requests(s: ShardStore) -> list:
    t = "t"
    good = [PushEntry(t, keys(1), grads(1, 0), 0.05)]
    nan = grads(2, 0)
    nan[1, 2] = np.nan
    return [
        (InvalidArgumentError, "table", lambda: s.pull("nope", keys(1))),
        (InvalidArgumentError, "table", lambda: s.push(1, 0, [PushEntry("nope", keys(1),
                                                                       grads(1, 0), 0.05)])),
        (InvalidArgumentError, "shape", lambda: s.push(1, 0, [PushEntry(t, keys(1),
                                                                       grads(1, 0, 3), 0.05)])),
        (InvalidArgumentError, "float32", lambda: s.push(1, 0, [PushEntry(
            t, keys(1), grads(1, 0).astype(np.float64), 0.05)])),
        (InvalidArgumentError, "int64", lambda: s.push(1, 0, [PushEntry(
            t, np.array([1], np.int32), grads(1, 0), 0.05)])),
        (InvalidArgumentError, "finite", lambda: s.push(1, 0, [PushEntry(t, keys(1, 2), nan,
                                                                        0.05)])),
        (InvalidArgumentError, "distinct", lambda: s.push(1, 0, [PushEntry(t, keys(1, 1),
                                                                          grads(2, 0), 0.05)])),
        (InvalidArgumentError, "learning rate", lambda: s.push(1, 0, [PushEntry(
            t, keys(1), grads(1, 0), float("nan"))])),
        (InvalidArgumentError, "rank", lambda: s.push(1, 7, good)),
        (FailedPreconditionError, "step after 0", lambda: s.push(0, 0, good)),
        (FailedPreconditionError, "at most 8 ahead", lambda: s.push(50, 0, good)),
        (FailedPreconditionError, "second push", lambda: s.push(1, 1, good)),
        (FailedPreconditionError, "learning rate", lambda: s.push(1, 2, [PushEntry(
            t, keys(1), grads(1, 0), 0.5)])),
        (InvalidArgumentError, "finite", lambda: s.flush(t, keys(1, 2), nan, np.zeros((2, 8),
                                                         np.float32), keys(5, 5))),
        (InvalidArgumentError, "state", lambda: s.flush(t, keys(1), grads(1, 0), None, keys(5))),
        (FailedPreconditionError, "stale", lambda: s.flush(t, keys(3), grads(1, 0),
                                                           np.zeros((1, 8), np.float32),
                                                           keys(0))),
        (FailedPreconditionError, "match", lambda: s.connect([table("adam", dim=8)], 3)),
        (FailedPreconditionError, "match", lambda: s.connect([table("sgd")], 3)),
        (FailedPreconditionError, "num_workers", lambda: s.connect([table("adam")], 4)),
    ]


def test_every_bad_request_fails_alone_and_changes_nothing() -> None:
    s = store_with(table("adam"))
    for rank in range(3):
        s.push(0, rank, [PushEntry("t", keys(1, 2, 3), grads(3, rank), 0.05)])
    s.push(1, 1, [PushEntry("t", keys(2), grads(1, 9), 0.05)])
    before = snapshot(s)
    for error, message, call in _bad_requests(s):
        with pytest.raises(error, match=message):
            call()
        assert_same(before, snapshot(s))
    # Others are still served: the pending step completes normally.
    s.push(1, 0, [])
    s.push(1, 2, [])
    assert s.applied_step == 1


def test_a_table_may_come_in_several_chunks_with_keys_distinct_across_them() -> None:
    one, two = store_with(table("adam"), workers=2), store_with(table("adam"), workers=2)
    g = grads(4, 3)
    one.push(0, 0, [PushEntry("t", keys(1, 2, 3, 4), g, 0.05)])
    two.push(0, 0, [PushEntry("t", keys(1, 2), g[:2], 0.05), PushEntry("t", keys(3, 4), g[2:],
                                                                       0.05)])
    for s in (one, two):
        s.push(0, 1, [PushEntry("t", keys(2, 9), grads(2, 4), 0.05)])
    np.testing.assert_array_equal(one.pull("t", keys(1, 2, 3, 4, 9)).values,
                                  two.pull("t", keys(1, 2, 3, 4, 9)).values)
    with pytest.raises(InvalidArgumentError, match="distinct"):
        two.push(1, 0, [PushEntry("t", keys(1, 2), g[:2], 0.05),
                        PushEntry("t", keys(2, 5), g[2:], 0.05)])
    with pytest.raises(InvalidArgumentError, match="one learning rate"):
        two.push(1, 0, [PushEntry("t", keys(1), g[:1], 0.05), PushEntry("t", keys(5), g[1:2],
                                                                        0.06)])
    assert two.health()["pending_steps"] == {}


def test_check_push_records_nothing_until_commit_push() -> None:
    s = store_with(table("sgd"), workers=1)
    before = snapshot(s)
    checked = s.check_push(0, 0, [PushEntry("t", keys(1, 2), grads(2, 1), 0.05)])
    assert_same(before, snapshot(s))
    assert s.commit_push(0, 0, checked) == 0
    assert (s.versions("t", keys(1, 2)) == 1).all()


def test_check_push_refuses_what_push_refuses_and_changes_nothing() -> None:
    s = store_with(table("adam"), workers=2)
    nan = grads(2, 1)
    nan[1, 2] = np.nan
    before = snapshot(s)
    for error, message, step, rank, entry in [
            (InvalidArgumentError, "table", 0, 0, PushEntry("nope", keys(1), grads(1, 0), 0.05)),
            (InvalidArgumentError, "shape", 0, 0, PushEntry("t", keys(1), grads(1, 0, 3), 0.05)),
            (InvalidArgumentError, "finite", 0, 0, PushEntry("t", keys(1, 2), nan, 0.05)),
            (InvalidArgumentError, "distinct", 0, 0, PushEntry("t", keys(3, 3), grads(2, 0), 0.05)),
            (InvalidArgumentError, "rank", 0, 5, PushEntry("t", keys(1), grads(1, 0), 0.05)),
            (FailedPreconditionError, "at most 8 ahead", 9, 0, PushEntry("t", keys(1),
                                                                         grads(1, 0), 0.05))]:
        with pytest.raises(error, match=message):
            s.check_push(step, rank, [entry])
        assert_same(before, snapshot(s))


def test_commit_push_checks_the_turn_again() -> None:
    s = store_with(table("sgd"), workers=1)
    checked = s.check_push(0, 0, [PushEntry("t", keys(1), grads(1, 1), 0.05)])
    s.commit_push(0, 0, checked)
    with pytest.raises(FailedPreconditionError, match="step after 0"):
        s.commit_push(0, 0, checked)  # the same part committed twice
    state = s.snapshot(0)
    later = s.check_push(1, 0, [PushEntry("t", keys(1), grads(1, 2), 0.05)])
    s.replace(5, state["tables"], 1)  # a restore came in between
    with pytest.raises(FailedPreconditionError, match="step after 5"):
        s.commit_push(1, 0, later)


def test_rows_resolved_on_arrival_give_the_same_rows_as_a_plain_push() -> None:
    plain, resolved = store_with(table("adagrad"), workers=2), store_with(table("adagrad"),
                                                                          workers=2)
    parts = [(keys(5, 1, 9), grads(3, 1)), (keys(9, 2, 7, 5), grads(4, 2))]
    for step in range(2):  # step 0 creates rows; step 1 finds 1, 2, 5, 7, 9 and creates 3
        for rank, (k, g) in enumerate(parts):
            k = k + (step * 2 if rank == 1 else 0)
            plain.push(step, rank, [PushEntry("t", k, g, 0.05)])
            rows = resolved.resolve_push_keys("t", k)
            checked = resolved.check_push(step, rank, [PushEntry(
                "t", k, g, 0.05, distinct_checked=True, rows=rows)])
            resolved.commit_push(step, rank, checked)
    assert_same(snapshot(plain), snapshot(resolved))  # same rows, in the same row order
    with pytest.raises(InvalidArgumentError, match="distinct pushed keys of table 't'"):
        resolved.resolve_push_keys("t", keys(4, 8, 4))


def test_rows_resolved_before_a_restore_are_looked_up_again() -> None:
    s = store_with(table("sgd"), workers=1)
    s.push(0, 0, [PushEntry("t", keys(1, 2), grads(2, 1), 0.05)])
    state = s.snapshot(0)
    rows = s.resolve_push_keys("t", keys(2, 3))
    s.replace(0, {"t": (state["tables"]["t"][0], {
        k: v[::-1].copy() for k, v in state["tables"]["t"][1].items()})}, 1)  # rows reordered
    s.commit_push(1, 0, s.check_push(1, 0, [PushEntry("t", keys(2, 3), grads(2, 2), 0.05,
                                                      distinct_checked=True, rows=rows)]))
    assert s.versions("t", keys(1, 2, 3)).tolist() == [1, 2, 1]


def test_a_commit_is_answered_before_its_apply_which_no_one_sees_half_done() -> None:
    s = store_with(table("sgd"), workers=1)
    seen = []

    def answer(applied: int) -> None:
        seen.append((applied, s.applied_step))
        reader = threading.Thread(target=lambda: seen.append(s.versions("t", keys(1))[0]))
        reader.start()  # blocks on the shard lock until the update is done
        reader.join(0.2)
        seen.append(reader)

    checked = s.check_push(0, 0, [PushEntry("t", keys(1), grads(1, 1), 0.05)])
    assert s.commit_push(0, 0, checked, on_recorded=answer) == 0
    seen[1].join()
    assert seen[0] == (0, -1) and seen[2] == 1  # answered "0" before applying; read after


def _overflowing_step(s: ShardStore, step: int) -> None:
    """Both ranks push finite gradients whose sum overflows in table 'b' (and fine ones to 'a',
    which comes first): the second push completes the step and is told why it failed."""
    big = np.full((1, DIM), 3e38, np.float32)
    s.push(step, 0, [PushEntry("a", keys(1), grads(1, 0), 0.05),
                     PushEntry("b", keys(2), big, 0.05)])
    with pytest.raises(InvalidArgumentError, match=f"summed gradients.*Step {step} is not applied"):
        s.push(step, 1, [PushEntry("a", keys(1), grads(1, 1), 0.05),
                         PushEntry("b", keys(2), big, 0.05)])


def test_a_step_whose_summed_gradients_overflow_changes_no_table() -> None:
    s = store_with(table("adam", "a"), table("sgd", "b"), workers=2)
    for rank in range(2):
        s.push(0, rank, [PushEntry("a", keys(1), grads(1, rank), 0.05),
                         PushEntry("b", keys(2), grads(1, rank), 0.05)])
    before = snapshot(s)
    _overflowing_step(s, 1)
    after = snapshot(s)
    assert after["applied"] == 0 and after["health"] == {}
    assert_same(before, after)


def test_after_a_failed_step_pushes_and_waits_are_refused_until_a_restore() -> None:
    s = store_with(table("adam", "a"), table("sgd", "b"), workers=2)
    _overflowing_step(s, 0)
    assert s.health()["failed_step"]["step"] == 0
    for call in (lambda: s.push(0, 0, []), lambda: s.push(1, 0, []),
                 lambda: s.pull("a", keys(1), min_versions=keys(1), timeout=30)):
        with pytest.raises(FailedPreconditionError, match="step 0 could not be applied"):
            call()
    assert s.pull("a", keys(1)).versions.tolist() == [0]  # reads are still served
    good = s.snapshot(-1)
    s.replace(-1, good["tables"], 2)
    assert s.health()["failed_step"] is None
    s.push(0, 0, [])
    s.push(0, 1, [PushEntry("a", keys(1), grads(1, 0), 0.05)])
    assert s.applied_step == 0 and s.pull("a", keys(1)).versions.tolist() == [1]
