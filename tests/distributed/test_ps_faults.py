"""Faults against herald-ps processes: bad requests, wrong token, SIGKILL + restart from checkpoint.

Every bad request gets a clear error of its own type, leaves the shards' state unchanged and does
not disturb another client that keeps being served meanwhile; a shard killed with SIGKILL and
restarted from its checkpoint serves bit-identical rows (values, optimizer state, versions) and
the cluster continues with the next step.
"""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

from herald_tf.config import OptimizerConfig, TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import (
    FailedPreconditionError,
    UnauthenticatedError,
    UnavailableError,
)
from herald_tf.ps.sharding import shard_of
from herald_tf.transport import herald_ps_pb2 as pb
from herald_tf.transport import make_transport
from herald_tf.transport.grpc_client import GrpcTransport
from herald_tf.transport.tcp_data import GatheredRows

CFG = TableConfig("t", 8, seed=9, optimizer=OptimizerConfig("adam", epsilon=1e-4))
KEYS = np.arange(0, 400, 3, dtype=np.int64)


def train(transport, steps: range, workers: int = 2) -> None:
    rng = np.random.default_rng(steps.start)
    for t in steps:
        handles = []
        for w in range(workers):
            k = np.unique(rng.choice(KEYS, 60))
            g = rng.normal(size=(k.shape[0], 8)).astype(np.float32)
            handles.append(transport.push(t, w, {"t": (k, g)}, {"t": 0.01},
                                          wait_applied=True, timeout=30))
        for h in handles:
            h.wait()


def push_part(transport, kind: str, rank: int,
              entries: list[tuple[str, np.ndarray, np.ndarray, float]]) -> None:
    """Sends ``entries`` as rank's push of step 2 straight to shard 0 over the kind's own push
    path (the gRPC Push call, or the data plane's first phase), past the client's checks."""
    if kind == "grpc":
        transport._push_shard(0, 2, rank, entries, False, 10)
        return
    prepared = transport._prepare_push_shard(0, 2, rank, [
        (table, keys, GatheredRows(grads, np.arange(grads.shape[0])), lr)
        for table, keys, grads, lr in entries], False, 10)
    prepared.decide(False)  # the shard accepted it: drop it (the caller's check then fails)
    prepared.outcome()


def rows(transport):
    r = transport.pull("t", KEYS, with_state=True).wait()
    return r.values, r.state, r.versions


@pytest.mark.parametrize("kind", ["grpc", "grpc+tcp"])
def test_bad_requests_fail_alone_and_change_nothing(ps_cluster, kind: str) -> None:
    cluster = ps_cluster(2)
    good = cluster.transport(kind)
    good.connect([CFG], num_workers=2)
    train(good, range(2))
    before = rows(good)
    bad = cluster.transport(kind, retries=0)
    stop = threading.Event()
    served = [0]

    def keep_pulling() -> None:
        while not stop.is_set():
            good.pull("t", KEYS[:50]).wait()
            served[0] += 1

    th = threading.Thread(target=keep_pulling)
    th.start()
    k = KEYS[:4]
    nan = np.ones((4, 8), np.float32)
    nan[2, 3] = np.inf
    cases = [
        (InvalidArgumentError, "table", lambda: bad.pull("nope", k).wait()),
        (InvalidArgumentError, "shape", lambda: bad.push(2, 0, {"t": (k, np.ones((4, 7),
                                                                         np.float32))},
                                                         {"t": 0.01}).wait()),
        (InvalidArgumentError, "float32", lambda: bad.push(2, 0, {"t": (k, np.ones((4, 8)))},
                                                           {"t": 0.01}).wait()),
        (InvalidArgumentError, "finite", lambda: bad.push(2, 0, {"t": (k, nan)},
                                                          {"t": 0.01}).wait()),
        (InvalidArgumentError, "distinct", lambda: bad.push(
            2, 0, {"t": (np.array([1, 1], np.int64), np.ones((2, 8), np.float32))},
            {"t": 0.01}).wait()),
        (FailedPreconditionError, "step after 1", lambda: bad.push(1, 0, {}, {}).wait()),
        (FailedPreconditionError, "ahead", lambda: bad.push(99, 0, {}, {}).wait()),
        (FailedPreconditionError, "stale", lambda: bad.flush(
            "t", k, np.ones((4, 8), np.float32), np.ones((4, 16), np.float32),
            np.zeros(4, np.int64)).wait()),
        (FailedPreconditionError, "match", lambda: bad.connect([TableConfig("t", 16)], 2)),
        (FailedPreconditionError, "num_workers", lambda: bad.connect([CFG], 3)),
    ]
    # the same bad pushes sent straight to one shard, past the client's own checks, over the
    # kind's own push path (grpc+tcp: the data plane)
    k0 = KEYS[shard_of(KEYS, 2) == 0][:4]
    raw = [
        ("shape", [("t", k0, np.ones((4, 7), np.float32), 0.01)]),
        ("finite", [("t", k0, nan, 0.01)]),
        ("distinct", [("t", np.repeat(k0[:2], 2), np.ones((4, 8), np.float32), 0.01)]),
        ("table", [("nope", k0, np.ones((4, 8), np.float32), 0.01)]),
        ("rank", [("t", k0, np.ones((4, 8), np.float32), 0.01)]),
    ]
    try:
        for error, message, call in cases:
            with pytest.raises(error, match=message):
                call()
        for message, entries in raw:
            rank = 5 if message == "rank" else 0
            with pytest.raises(InvalidArgumentError, match=message):
                push_part(bad, kind, rank, entries)
        # a raw request with a wrong byte length is refused by the server itself
        stub = bad._stubs[0]
        with pytest.raises(Exception, match="8-byte rows"):
            list(stub.Pull(iter([pb.PullRequest(table="t", keys=b"\0" * 12)]),
                           metadata=bad._metadata, timeout=10))
    finally:
        stop.set()
        th.join(timeout=30)
    assert served[0] > 0
    for a, b in zip(before, rows(good), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h["applied_step"] for h in good.health()] == [1, 1]
    assert sum(s["errors"] for s in good.stats()) >= len(raw) + 6


@pytest.mark.parametrize("kind", ["grpc", "grpc+tcp"])
def test_wrong_token_is_refused(ps_cluster, kind: str) -> None:
    cluster = ps_cluster(2)
    t = make_transport(kind, addresses=cluster.addresses, token="wrong", retries=0)
    try:
        with pytest.raises(UnauthenticatedError):
            t.health()
        with pytest.raises(UnauthenticatedError):
            t.pull("t", KEYS).wait()
    finally:
        t.close()


def test_killed_server_restarts_from_checkpoint_with_identical_rows(ps_cluster) -> None:
    cluster = ps_cluster(2)
    transport = cluster.transport()
    transport.connect([CFG], num_workers=2)
    train(transport, range(3))
    manifest = transport.checkpoint(2)
    assert manifest.endswith("step-0000000002/manifest.json")
    before = rows(transport)
    train(transport, range(3, 4))  # progress after the checkpoint is lost with the shard
    cluster.kill(1, signal.SIGKILL)
    with pytest.raises(UnavailableError):
        GrpcTransport(cluster.addresses, cluster.token, retries=1, timeout_s=2).pull(
            "t", KEYS).wait()
    cluster.restart(1, restore="latest")  # a new process on a new port
    fresh = cluster.transport()
    fresh.control("restore", {"step": 2}, shards=[0])  # shard 0 rolls back to the same step
    assert [h["applied_step"] for h in fresh.health()] == [2, 2]
    for a, b in zip(before, rows(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    fresh.connect([CFG], num_workers=2)
    train(fresh, range(3, 5))  # training continues after the restored step
    assert [h["applied_step"] for h in fresh.health()] == [4, 4]
