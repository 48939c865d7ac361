"""The Transport contract, run against the in-process and the gRPC implementation alike."""

from __future__ import annotations

import numpy as np
import pytest

from herald_tf import _core
from herald_tf.config import OptimizerConfig, TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import DeadlineExceededError, FailedPreconditionError, UnavailableError
from herald_tf.ps.store import ShardStore
from herald_tf.transport import FaultInjection

CFG = TableConfig("emb", 6, seed=3, optimizer=OptimizerConfig("adagrad", learning_rate=0.2))


def k(*keys: int) -> np.ndarray:
    return np.array(keys, dtype=np.int64)


def test_pull_of_untouched_rows_is_the_initializer(transport_factory) -> None:
    t = transport_factory(3)
    t.connect([CFG], num_workers=1)
    keys = np.arange(-50, 50, dtype=np.int64)
    r = t.pull("emb", keys).wait()
    np.testing.assert_array_equal(r.values, _core.init_rows(CFG.initializer, 3, keys, 6))
    assert (r.versions == 0).all() and r.received.all() and r.state is None


def test_push_then_pull_across_shards_in_request_order(transport_factory) -> None:
    t = transport_factory(3)
    t.connect([CFG], num_workers=2)
    keys = np.arange(40, dtype=np.int64)
    g0 = np.ones((40, 6), np.float32)
    h0 = t.push(0, 0, {"emb": (keys, g0)}, {"emb": 0.2})
    h1 = t.push(0, 1, {"emb": (keys[::2], g0[::2])}, {"emb": 0.2})
    assert min(h0.wait(), h1.wait()) <= 0
    r = t.pull("emb", keys[::-1], min_versions=np.ones(40, np.int64), with_state=True,
               timeout=10).wait()
    values = _core.init_rows(CFG.initializer, 3, keys, 6)
    state = _core.init_state(CFG.optimizer, 40, 6)
    versions = np.zeros(40, np.int64)
    g = g0.copy()
    g[::2] += 1
    _core.sparse_apply(CFG.optimizer, values, state, versions, np.arange(40), g)
    np.testing.assert_array_equal(r.values, values[::-1])
    np.testing.assert_array_equal(r.state, state[::-1])
    np.testing.assert_array_equal(t.versions("emb", keys).wait(), versions)


def test_empty_push_reaches_every_shard(transport_factory) -> None:
    t = transport_factory(3)
    t.connect([CFG], num_workers=2)
    t.push(0, 0, {"emb": (k(1), np.ones((1, 6), np.float32))}, {"emb": 0.2}).wait()
    assert t.push(0, 1, {}, {}, wait_applied=True, timeout=10).wait() == 0
    assert [h["applied_step"] for h in t.health()] == [0, 0, 0]


def test_flush_then_pull_sees_latest_value(transport_factory) -> None:
    t = transport_factory(2)
    t.connect([CFG], num_workers=1)
    keys = np.arange(10, dtype=np.int64)
    v = np.random.default_rng(0).normal(size=(10, 6)).astype(np.float32)
    s = np.abs(v) + 1
    t.flush("emb", keys, v, s, np.full(10, 4, np.int64)).wait()
    r = t.pull("emb", keys, with_state=True, have_versions=np.full(10, 3, np.int64)).wait()
    np.testing.assert_array_equal(r.values, v)
    np.testing.assert_array_equal(r.state, s)
    r = t.pull("emb", keys, have_versions=np.full(10, 4, np.int64)).wait()
    assert not r.received.any()


def test_errors_reach_the_caller_with_their_type(transport_factory) -> None:
    t = transport_factory(2)
    t.connect([CFG], num_workers=1)
    with pytest.raises(InvalidArgumentError, match="table"):
        t.pull("missing", k(1, 2, 3)).wait()
    with pytest.raises(InvalidArgumentError, match="shape"):
        t.push(0, 0, {"emb": (k(1, 2, 3), np.ones((3, 5), np.float32))}, {"emb": 0.1}).wait()
    with pytest.raises(InvalidArgumentError, match="float32"):
        t.push(0, 0, {"emb": (k(1), np.ones((1, 6)))}, {"emb": 0.1})
    with pytest.raises(FailedPreconditionError, match="match"):
        t.connect([TableConfig("emb", 7)], num_workers=1)
    t.push(0, 0, {}, {}).wait()  # nothing above was recorded: step 0 is still open
    assert [h["applied_step"] for h in t.health()] == [0, 0]


@pytest.mark.parametrize("bad", ["non-finite", "duplicate"])
def test_a_bad_part_on_one_shard_records_the_push_on_no_shard(transport_factory,
                                                             bad: str) -> None:
    t = transport_factory(2)
    t.connect([CFG], num_workers=1)
    keys = np.arange(200, dtype=np.int64)
    grads = np.ones((200, 6), np.float32)
    if bad == "non-finite":
        grads[137, 4] = np.inf  # in one shard's part only
        match = "finite"
    else:
        keys[150] = keys[149]  # both in one shard's part: a key lands on one shard
        match = "distinct"
    with pytest.raises(InvalidArgumentError, match=match):
        t.push(0, 0, {"emb": (keys, grads)}, {"emb": 0.2}).wait()
    assert all(h["applied_step"] == -1 and not h["pending_steps"] for h in t.health())
    t.push(0, 0, {"emb": (k(1, 2), np.ones((2, 6), np.float32))}, {"emb": 0.2}).wait()
    assert [h["applied_step"] for h in t.health()] == [0, 0]
    assert (t.versions("emb", np.arange(200, dtype=np.int64)).wait() > 0).sum() == 2


def test_byte_counters_equal_payload_bytes(transport_factory) -> None:
    t = transport_factory(3)
    t.connect([CFG], num_workers=1)
    base = t.byte_counts()
    keys = np.arange(1000, dtype=np.int64)
    grads = np.ones((1000, 6), np.float32)
    t.push(0, 0, {"emb": (keys, grads)}, {"emb": 0.1}).wait()
    t.pull("emb", keys, with_state=True).wait()
    t.flush("emb", keys[:10], grads[:10], grads[:10], np.full(10, 9, np.int64)).wait()
    c = t.byte_counts()
    assert c["keys"] - base["keys"] == 8 * (1000 + 1000 + 10)
    assert c["pushed_gradients"] - base["pushed_gradients"] == 1000 * 6 * 4
    # values + state + versions (no positions: nothing was skipped)
    assert c["pulled_rows"] - base["pulled_rows"] == 1000 * (6 * 4 + 6 * 4 + 8)
    t.pull("emb", keys, have_versions=np.zeros(1000, np.int64)).wait()
    c2 = t.byte_counts()
    assert c2["pulled_rows"] - c["pulled_rows"] == 1000 * (6 * 4 + 8 + 8)  # + positions
    assert c2["control"] - c["control"] == 1000 * 8  # the have_versions sent
    assert c["flushed_rows"] - base["flushed_rows"] == 10 * (6 * 4 + 6 * 4 + 8)


def test_idempotent_calls_are_retried_pushes_are_not(transport_factory) -> None:
    t = transport_factory(2, faults=FaultInjection(drop={"pull": 2, "push": 1}))
    t.connect([CFG], num_workers=1)
    assert t.pull("emb", k(1, 2, 3, 4)).wait().received.all()
    with pytest.raises(UnavailableError, match="fault injection"):
        t.push(0, 0, {}, {}).wait()


def test_plans_posted_for_a_step_are_taken_by_their_ranks(transport_factory) -> None:
    t = transport_factory(2)
    t.connect([CFG], num_workers=3)
    before = t.byte_counts()["plans"]
    t.post_plans(5, {1: b"plan-of-1", 2: b"plan-of-two"})
    assert t.take_plans(5, 2, timeout=5) == [b"plan-of-two"]
    assert t.take_plans(5, 1, timeout=5) == [b"plan-of-1"]
    assert t.byte_counts()["plans"] - before == 2 * (9 + 11)  # posted once, taken once
    assert sum(s["plans_waiting"] for s in t.stats()) == 2  # kept until a later step is taken


def test_a_take_returns_the_next_steps_already_posted(transport_factory) -> None:
    t = transport_factory(2)
    t.connect([CFG], num_workers=2)
    for step in (3, 4, 5, 7):
        t.post_plans(step, {1: f"step {step}".encode()})
    assert t.take_plans(3, 1, timeout=5, max_plans=8) == [b"step 3", b"step 4", b"step 5"]
    assert t.take_plans(4, 1, timeout=5, max_plans=1) == [b"step 4"]


def test_plan_posts_and_takes_are_retried_after_a_lost_request(transport_factory) -> None:
    t = transport_factory(2, faults=FaultInjection(drop={"post_plans": 1, "take_plans": 2}))
    t.connect([CFG], num_workers=2)
    t.post_plans(9, {1: b"plan"})
    assert t.take_plans(9, 1, timeout=5) == [b"plan"]


def test_a_retried_plan_post_counts_its_bytes_once(transport_factory, monkeypatch) -> None:
    post = ShardStore.post_plans

    def unavailable_once(self: ShardStore, *args: object) -> None:
        monkeypatch.setattr(ShardStore, "post_plans", post)
        raise UnavailableError("the shard is restarting")  # sent, but not taken

    t = transport_factory(2, faults=FaultInjection(drop={"post_plans": 1}))  # not sent
    t.connect([CFG], num_workers=2)
    monkeypatch.setattr(ShardStore, "post_plans", unavailable_once)
    before = t.byte_counts()["plans"]
    t.post_plans(9, {1: b"plan"})  # the third try goes through
    assert t.byte_counts()["plans"] - before == 4
    assert t.take_plans(9, 1, timeout=5) == [b"plan"]


def test_take_of_a_plan_never_posted_times_out_naming_it(transport_factory) -> None:
    t = transport_factory(2)
    t.connect([CFG], num_workers=2)
    with pytest.raises(DeadlineExceededError, match="plan of step 7 for rank 1"):
        t.take_plans(7, 1, timeout=0.2)


def test_plan_post_for_a_rank_outside_the_job_is_refused(transport_factory) -> None:
    t = transport_factory(1)
    t.connect([CFG], num_workers=2)
    with pytest.raises(InvalidArgumentError, match="ranks 1..1"):
        t.post_plans(0, {1: b"ok", 2: b"no such rank"})
    with pytest.raises(InvalidArgumentError, match="keeps its own"):
        t.post_plans(0, {0: b"worker 0's own"})
    t.post_plans(0, {1: b"ok"})  # nothing of the refused posts was stored; still served
    assert t.take_plans(0, 1, timeout=5) == [b"ok"]
