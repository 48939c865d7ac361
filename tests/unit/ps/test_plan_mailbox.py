"""PlanMailbox: the per-(step, rank) plans worker 0 posts for the other workers."""

from __future__ import annotations

import threading
import time

import pytest

from herald_tf.errors import InvalidArgumentError
from herald_tf.ps import PlanMailbox
from herald_tf.ps.errors import ResourceExhaustedError


def test_take_returns_the_posted_plan_of_that_step_and_rank() -> None:
    box = PlanMailbox()
    box.post(3, {1: b"one", 2: b"two"})
    assert box.take(3, 2) == [b"two"]
    assert box.take(3, 1) == [b"one"]
    assert box.take(4, 1) == []


def test_take_can_be_repeated_until_a_later_step_is_taken() -> None:
    box = PlanMailbox()
    box.post(0, {1: b"a"})
    box.post(1, {1: b"b"})
    assert box.take(0, 1) == box.take(0, 1) == [b"a"]
    assert box.take(1, 1) == [b"b"]
    assert box.take(0, 1) == []  # discarded by the take of step 1
    assert box.stats()["plans_waiting"] == 1


def test_take_returns_the_consecutive_steps_posted_up_to_max_plans() -> None:
    box = PlanMailbox()
    for step in (0, 1, 2, 4):
        box.post(step, {1: bytes([step + 1])})
    assert box.take(0, 1, max_plans=2) == [b"\x01", b"\x02"]
    assert box.take(1, 1, max_plans=9) == [b"\x02", b"\x03"]  # stops at the missing step 3


def test_posting_again_replaces_the_plan() -> None:
    box = PlanMailbox()
    box.post(0, {1: b"old"})
    box.post(0, {1: b"new!"})
    assert box.take(0, 1) == [b"new!"]
    assert box.stats()["plan_bytes_waiting"] == 4


def test_take_waits_for_a_post() -> None:
    box = PlanMailbox()
    threading.Timer(0.05, box.post, (5, {1: b"late"})).start()
    assert box.take(5, 1, wait_s=5.0) == [b"late"]


def test_take_waits_at_most_the_server_cap() -> None:
    box = PlanMailbox()
    start = time.monotonic()
    assert box.take(0, 1, wait_s=0.05) == []
    assert time.monotonic() - start < 0.5


def test_full_mailbox_refuses_the_whole_post_and_keeps_the_rest() -> None:
    box = PlanMailbox(max_bytes=10)
    box.post(0, {1: b"12345"})
    with pytest.raises(ResourceExhaustedError, match="plan mailbox"):
        box.post(1, {1: b"123", 2: b"456"})
    assert box.stats()["plans_waiting"] == 1
    assert box.take(0, 1) == [b"12345"]


@pytest.mark.parametrize(("step", "plans", "match"), [
    (-1, {1: b"x"}, "step >= 0"),
    (0, {-2: b"x"}, "ranks >= 0"),
    (0, {1: b""}, "non-empty plan"),
])
def test_bad_posts_are_refused_and_store_nothing(step, plans, match) -> None:
    box = PlanMailbox()
    with pytest.raises(InvalidArgumentError, match=match):
        box.post(step, {2: b"fine", **plans})
    assert box.stats()["plans_waiting"] == 0


def test_clear_drops_every_plan() -> None:
    box = PlanMailbox()
    box.post(0, {1: b"a", 2: b"b"})
    box.clear()
    assert box.take(0, 1) == [] and box.stats()["plan_bytes_waiting"] == 0
