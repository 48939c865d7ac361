"""The TCP data plane of the grpc+tcp transport: token, malformed frames, TLS, large pulls."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from herald_tf import _core
from herald_tf.config import TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import FailedPreconditionError, UnauthenticatedError, UnavailableError
from herald_tf.ps.store import ShardStore
from herald_tf.transport import FaultInjection, Transport, make_transport, tcp_data, wire
from herald_tf.transport.grpc_server import serve
from herald_tf.transport.tcp_data import HEADER, HELLO, MAGIC, PULL, PUSH, DataPlaneClient

TOKEN = "test-token"  # the token the grpc_shards fixture serves with
CFG = TableConfig("emb", 64, seed=1)


@pytest.fixture
def connected(grpc_shards) -> Iterator[Callable[..., tuple[list[ShardStore], Transport]]]:
    """Factory: ``connected(n, **options)`` → (stores, a connected grpc+tcp transport to them),
    the transport closed at the end."""
    made = []

    def make(n: int = 1, **options: object) -> tuple[list[ShardStore], Transport]:
        stores, addresses = grpc_shards(n)
        t = make_transport("grpc+tcp", addresses=addresses, token=TOKEN, **options)
        made.append(t)
        t.connect([CFG], num_workers=1)
        return stores, t

    yield make
    for t in made:
        t.close()


def data_port(transport, shard: int = 0) -> int:
    return transport.control("data_plane", shards=[shard])[0]["port"]


def unchanged(store) -> bool:
    return store.applied_step == -1 and all(t.size == 0 for t in store.tables.values())


def test_wrong_token_is_refused_before_the_store(grpc_shards) -> None:
    stores, addresses = grpc_shards(1)
    t = make_transport("grpc+tcp", addresses=addresses, token=TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        client = DataPlaneClient("127.0.0.1", data_port(t), "not-the-token")
        with pytest.raises(UnauthenticatedError, match="token"):
            client.call(PUSH, {"step": 0, "rank": 0, "entries": [["emb", 0.1]]},
                        [("keys0", np.arange(3, dtype=np.int64)),
                         ("grads0", np.ones((3, 64), np.float32))], 10)
        client.close()
    finally:
        t.close()
    assert unchanged(stores[0]) and stores[0].stats()["errors"] == 0


def closed(s: socket.socket) -> bool:
    """Whether the peer closed the connection (a reset when it left bytes unread)."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def _hello(port: int, token: str = TOKEN) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    tcp_data.send_frame(s, HELLO, {"token": token, "protocol": tcp_data.PROTOCOL})
    assert tcp_data.recv_frame(s)[0] == tcp_data.OK
    return s


def test_a_client_of_another_protocol_is_refused_at_hello(connected) -> None:
    _, t = connected()
    for hello in ({"token": TOKEN}, {"token": TOKEN, "protocol": 99}):  # 1: one-phase push
        s = socket.create_connection(("127.0.0.1", data_port(t)), timeout=10)
        tcp_data.send_frame(s, HELLO, hello)
        status, meta, _ = tcp_data.recv_frame(s)
        assert status == tcp_data.ERROR and meta["code"] == "FAILED_PRECONDITION"
        assert f"protocol {tcp_data.PROTOCOL}" in meta["message"]
        assert str(hello.get("protocol", 1)) in meta["message"] and closed(s)
        s.close()


def test_malformed_requests_are_refused_and_change_nothing(grpc_shards) -> None:
    stores, addresses = grpc_shards(1)
    t = make_transport("grpc+tcp", addresses=addresses, token=TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        port = data_port(t)
        client = DataPlaneClient("127.0.0.1", port, TOKEN)
        k = np.arange(4, dtype=np.int64)
        cases = [
            ("int64", PULL, {"table": "emb"}, [("keys", k.astype(np.float32))]),
            ("table", PULL, {"table": "nope"}, [("keys", k)]),
            ("keys", PULL, {"table": "emb"}, []),
            ("shape", PUSH, {"step": 0, "rank": 0, "entries": [["emb", 0.1]]},
             [("keys0", k), ("grads0", np.ones((4, 63), np.float32))]),
            ("distinct", PUSH, {"step": 0, "rank": 0, "entries": [["emb", 0.1]]},
             [("keys0", np.zeros(4, np.int64)), ("grads0", np.ones((4, 64), np.float32))]),
            ("step", PUSH, {"step": "0", "rank": 0, "entries": []}, []),
            ("grads0", PUSH, {"step": 0, "rank": 0, "entries": [["emb", 0.1]]},
             [("keys0", k)]),
            ("kind", 7, {}, []),
        ]
        for message, kind, meta, arrays in cases:
            with pytest.raises(InvalidArgumentError, match=message):
                client.call(kind, meta, arrays, 10)
        client.close()
        # frames that break the format: an error reply, then the server closes the connection
        for frame in (HEADER.pack(b"XXXX", PULL, 2, 0) + b"{}",
                      HEADER.pack(MAGIC, PULL, 2, 8) + b"{}" + b"\0" * 8,  # undeclared bytes
                      HEADER.pack(MAGIC, PULL, 5, 0) + b"nojsn",
                      # a request larger than the PS accepts: refused before any allocation
                      HEADER.pack(MAGIC, PUSH, 2, wire.MAX_REQUEST_BYTES + 1) + b"{}"):
            s = _hello(port)
            s.sendall(frame)
            status, meta, _ = tcp_data.recv_frame(s)
            assert status == tcp_data.ERROR and meta["code"] == "INVALID_ARGUMENT"
            assert closed(s)
            s.close()
        # before the token, the server accepts no large meta and no payload at all
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(HEADER.pack(MAGIC, HELLO, 1 << 30, 0))
        assert closed(s)
        s.close()
        assert t.pull("emb", k).wait().values.shape == (4, 64)  # still serving
    finally:
        t.close()
    assert unchanged(stores[0])
    assert stores[0].stats()["errors"] == len(cases) + 4


def test_large_pull_lands_in_request_order_and_counts_its_bytes(grpc_shards) -> None:
    _, addresses = grpc_shards(3)
    t = make_transport("grpc+tcp", addresses=addresses, token=TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        keys = np.random.default_rng(0).permutation(40_000).astype(np.int64)
        g = np.random.default_rng(1).normal(size=(40_000, 64)).astype(np.float32)
        t.push(0, 0, {"emb": (keys[::2], g[::2])}, {"emb": 0.5}, wait_applied=True,
               timeout=30).wait()
        before = t.byte_counts()["pulled_rows"]
        r = t.pull("emb", keys).wait()
        init = _core.init_rows(CFG.initializer, 1, keys, 64)
        expected = init.copy()
        expected[::2] -= np.float32(0.5) * g[::2]
        np.testing.assert_array_equal(r.values, expected)
        np.testing.assert_array_equal(r.versions, np.arange(40_000) % 2 == 0)
        assert t.byte_counts()["pulled_rows"] - before == r.values.nbytes + r.versions.nbytes
        # only rows newer than the caller's copies come back, with their positions
        have = np.ones(40_000, np.int64)
        have[:10] = 0
        r2 = t.pull("emb", keys, have_versions=have).wait()
        assert r2.received.sum() == 5 and (r2.received[:10] == (np.arange(10) % 2 == 0)).all()
        np.testing.assert_array_equal(r2.values[:10:2], expected[:10:2])
    finally:
        t.close()


def test_shards_without_a_data_plane_are_reported(grpc_shards) -> None:
    _, addresses = grpc_shards(1, data_port=None)
    t = make_transport("grpc+tcp", addresses=addresses, token=TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        with pytest.raises(FailedPreconditionError, match="no-data-plane"):
            t.pull("emb", np.arange(3, dtype=np.int64)).wait()
    finally:
        t.close()


def test_tls_round_trip(grpc_shards, tls_files) -> None:
    key, cert = tls_files
    _, addresses = grpc_shards(2, tls_cert=str(cert), tls_key=str(key))
    t = make_transport("grpc+tcp", addresses=addresses, token=TOKEN,
                       root_certificates=cert.read_bytes())
    try:
        t.connect([CFG], num_workers=1)
        keys = np.arange(5000, dtype=np.int64)
        grads = np.repeat((keys % 7).astype(np.float32)[:, None], 64, axis=1)  # row order shows
        # answered once recorded, while the shard holds its lock for the update
        assert t.push(0, 0, {"emb": (keys, grads)}, {"emb": 1.0}, timeout=30).wait() == 0
        r = t.pull("emb", keys).wait()
        init = _core.init_rows(CFG.initializer, 1, keys, 64)
        np.testing.assert_array_equal(r.values, init - grads)
        # a plain-text client gets nowhere with a TLS data plane
        with pytest.raises(Exception):  # noqa: B017 - a reset or a malformed reply
            DataPlaneClient("127.0.0.1", data_port(t), TOKEN).call(
                PULL, {"table": "emb"}, [("keys", keys)], 5)
    finally:
        t.close()


def test_push_after_the_data_plane_restarted_uses_a_new_connection() -> None:
    store = ShardStore(0, 1)
    server, port = serve(store, TOKEN)
    t = make_transport("grpc+tcp", addresses=[f"127.0.0.1:{port}"], token=TOKEN)
    restarted = None
    try:
        t.connect([CFG], num_workers=1)
        keys = np.arange(10, dtype=np.int64)
        t.pull("emb", keys).wait()  # leaves an idle connection in the pool
        server.data_plane.stop()  # its connections close; a new one serves the same port
        restarted = tcp_data.DataPlaneServer(store, TOKEN, port=server.data_port).start()
        # pushes are never retried: the dead idle connection must not be used
        assert t.push(0, 0, {"emb": (keys, np.ones((10, 64), np.float32))},
                      {"emb": 0.1}).wait() == 0
    finally:
        t.close()
        server.stop(None)
        if restarted is not None:
            restarted.stop()


def _prepared_push(port: int, step: int = 0) -> socket.socket:
    """A connection whose push of ``step`` the shard checked and now holds for the decision."""
    s = _hello(port)
    tcp_data.send_frame(s, PUSH, {"step": step, "rank": 0, "entries": [["emb", 0.1]]},
                        [("keys0", np.arange(5, dtype=np.int64)),
                         ("grads0", np.ones((5, 64), np.float32))])
    status, meta, _ = tcp_data.recv_frame(s)
    assert status == tcp_data.OK and meta == {"prepared": True}
    return s


def test_a_prepared_push_whose_client_went_away_is_recorded_nowhere(connected) -> None:
    stores, t = connected()
    _prepared_push(data_port(t)).close()  # no decision
    keys = np.arange(3, dtype=np.int64)
    assert t.pull("emb", keys).wait().versions.tolist() == [0, 0, 0]
    assert unchanged(stores[0])
    # the step is still free for the push that does commit
    assert t.push(0, 0, {"emb": (keys, np.ones((3, 64), np.float32))}, {"emb": 0.1}).wait() == 0


def test_a_push_decision_that_is_not_one_drops_the_push_and_the_connection(connected) -> None:
    stores, t = connected()
    for kind, meta in ((PULL, {"table": "emb"}), (tcp_data.PUSH_DECISION, {"commit": 1})):
        s = _prepared_push(data_port(t))
        tcp_data.send_frame(s, kind, meta)
        status, reply, _ = tcp_data.recv_frame(s)
        assert status == tcp_data.ERROR and "decision" in reply["message"]
        assert closed(s)
        s.close()
    assert unchanged(stores[0]) and stores[0].stats()["errors"] == 2
    s = _prepared_push(data_port(t))
    tcp_data.send_frame(s, tcp_data.PUSH_DECISION, {"commit": False})
    assert tcp_data.recv_frame(s)[1] == {"committed": False}
    s.close()
    assert unchanged(stores[0])


def test_a_committed_push_is_answered_with_its_applied_step(connected) -> None:
    _, t = connected()
    s = _prepared_push(data_port(t))
    tcp_data.send_frame(s, tcp_data.PUSH_DECISION, {"commit": True})
    assert tcp_data.recv_frame(s)[1] == {"committed": True, "applied_step": 0}
    s.close()
    assert t.versions("emb", np.arange(6, dtype=np.int64)).wait().tolist() == [1] * 5 + [0]


def test_a_push_one_shard_never_got_is_dropped_by_the_others_and_can_be_sent_again(
        connected) -> None:
    stores, t = connected(3, faults=FaultInjection(drop={"push": 1}))
    keys = np.arange(300, dtype=np.int64)
    push = {"emb": (keys, np.ones((300, 64), np.float32))}
    with pytest.raises(UnavailableError, match="fault injection"):
        t.push(0, 0, push, {"emb": 0.1}).wait()
    assert all(unchanged(s) for s in stores)
    assert t.push(0, 0, push, {"emb": 0.1}).wait() == 0
    assert (t.versions("emb", keys).wait() == 1).all()


def test_an_update_failing_after_the_commit_was_answered_drops_the_connection(
        connected, monkeypatch) -> None:
    stores, t = connected()

    def fail() -> None:
        raise MemoryError("no room for the update")

    monkeypatch.setattr(stores[0], "_apply_ready", fail)
    keys = np.arange(3, dtype=np.int64)
    # answered before the update: the caller sees its push recorded
    assert t.push(0, 0, {"emb": (keys, np.ones((3, 64), np.float32))}, {"emb": 0.1}).wait() == 0
    deadline = time.monotonic() + 10  # the shard fails and counts it after it answered
    while stores[0].stats()["errors"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stores[0].stats()["errors"] == 1
    monkeypatch.undo()
    # no stale error reply waits on a pooled connection: the next call reads its own reply
    assert t.pull("emb", keys).wait().values.shape == (3, 64)


def _overflowing_frame(kind: int, meta: dict) -> bytes:
    """A frame declaring a 2**33 × 2**31 byte array (2**64 bytes: 0 in int64) and no payload."""
    body = json.dumps({**meta, "arrays": [["keys", "u1", [2**33, 2**31]]]}).encode()
    return HEADER.pack(MAGIC, kind, len(body), 0) + body


@pytest.fixture
def thread_errors(monkeypatch) -> list[BaseException]:
    """Exceptions that ended a thread (the server's connection threads must end none)."""
    seen: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


def test_array_sizes_are_exact_so_an_overflowing_spec_is_malformed() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(_overflowing_frame(PULL, {"table": "emb"}))
        with pytest.raises(tcp_data.FrameError, match=f"Received: 1 arrays of {2**64} bytes"):
            tcp_data.recv_head(b)


def test_a_request_whose_array_sizes_overflow_is_answered_counted_and_dropped(
        connected, thread_errors) -> None:
    stores, t = connected()
    s = _hello(data_port(t))
    s.sendall(_overflowing_frame(PULL, {"table": "emb"}))
    status, meta, _ = tcp_data.recv_frame(s)
    assert status == tcp_data.ERROR and meta["code"] == "INVALID_ARGUMENT"
    assert "payload bytes" in meta["message"] and closed(s)
    s.close()
    # the same in a hello: dropped without a reply, as any malformed frame before the token
    s = socket.create_connection(("127.0.0.1", data_port(t)), timeout=10)
    s.sendall(_overflowing_frame(HELLO, {"token": TOKEN, "protocol": tcp_data.PROTOCOL}))
    assert closed(s)
    s.close()
    assert t.pull("emb", np.arange(3, dtype=np.int64)).wait().values.shape == (3, 64)
    assert stores[0].stats()["errors"] == 1 and unchanged(stores[0]) and not thread_errors


def test_an_unexpected_error_reading_a_request_is_answered_counted_and_ends_its_connection(
        connected, monkeypatch, thread_errors) -> None:
    stores, t = connected()
    recv_arrays = tcp_data.recv_arrays

    def fail_once(*args: object, **kwargs: object) -> None:
        monkeypatch.setattr(tcp_data, "recv_arrays", recv_arrays)  # the server's call only
        raise MemoryError("no room for the request")

    s = _hello(data_port(t))
    monkeypatch.setattr(tcp_data, "recv_arrays", fail_once)
    tcp_data.send_frame(s, PULL, {"table": "emb"}, [("keys", np.arange(3, dtype=np.int64))])
    status, meta, _ = tcp_data.recv_frame(s)
    assert status == tcp_data.ERROR and meta["message"] == "MemoryError: no room for the request"
    assert closed(s)
    s.close()
    assert stores[0].stats()["errors"] == 1 and not thread_errors
    assert t.pull("emb", np.arange(3, dtype=np.int64)).wait().values.shape == (3, 64)


def _count_calls(monkeypatch, transport: Transport, *names: str) -> list[str]:
    """The names of the transport's per-shard methods ``names`` in the order they are called."""
    calls: list[str] = []

    def counting(name: str) -> Callable[..., object]:
        call = getattr(transport, name)

        def counted(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return call(*args, **kwargs)

        return counted

    for name in names:
        monkeypatch.setattr(transport, name, counting(name))
    return calls


@pytest.mark.parametrize("kind", ["grpc", "grpc+tcp"])
def test_a_request_over_the_ps_limit_is_refused_the_same_way_and_not_retried(
        grpc_shards, monkeypatch, kind: str) -> None:
    monkeypatch.setattr(wire, "MAX_REQUEST_BYTES", 1024)  # a shard's part below is ~4 KB
    stores, addresses = grpc_shards(2)
    t = make_transport(kind, addresses=addresses, token=TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        push_shard = "_push_shard" if kind == "grpc" else "_prepare_push_shard"
        calls = _count_calls(monkeypatch, t, "_pull_shard", push_shard)
        keys = np.arange(1000, dtype=np.int64)
        with pytest.raises(InvalidArgumentError, match="at most 1024 bytes"):
            t.pull("emb", keys).wait()
        assert calls == ["_pull_shard"] * 2  # one try per shard
        calls.clear()
        with pytest.raises(InvalidArgumentError, match="at most 1024 bytes"):
            t.push(0, 0, {"emb": (keys, np.ones((1000, 64), np.float32))}, {"emb": 0.1}).wait()
        assert calls == [push_shard] * 2
        assert all(unchanged(s) for s in stores)
        # requests within the limit are served; step 0 is still open
        small = np.arange(2, dtype=np.int64)
        assert t.pull("emb", small).wait().versions.tolist() == [0, 0]
        assert t.push(0, 0, {"emb": (small, np.ones((2, 64), np.float32))},
                      {"emb": 0.1}).wait() == 0
    finally:
        t.close()


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_a_client_replaced_after_a_lost_connection_keeps_no_connection_open(
        monkeypatch) -> None:
    store = ShardStore(0, 1)
    server, port = serve(store, TOKEN)
    t = make_transport("grpc+tcp", addresses=[f"127.0.0.1:{port}"], token=TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        keys = np.arange(3, dtype=np.int64)
        t.pull("emb", keys).wait()
        old = t._data[0]
        in_flight = old._checkout()  # the pooled connection, as a call still running holds it
        pull = store.pull

        def unavailable_once(*args: object, **kwargs: object) -> object:
            monkeypatch.setattr(store, "pull", pull)
            raise UnavailableError("the shard is restarting")

        monkeypatch.setattr(store, "pull", unavailable_once)
        assert t.pull("emb", keys).wait().values.shape == (3, 64)  # retried on a new client
        assert t._data[0] is not old
        conns = server.data_plane._conns
        # the old client's idle connection closed at once: the one in flight and the new
        # client's are left
        assert _eventually(lambda: len(conns) == 2)
        old._checkin(in_flight)  # the call in flight ends: its connection closes
        assert in_flight.fileno() == -1 and _eventually(lambda: len(conns) == 1)
    finally:
        t.close()
        server.stop(None)


def test_a_client_that_stops_reading_does_not_stall_the_shard_with_its_commit_answer() -> None:
    store = ShardStore(0, 1)
    store.connect([CFG], num_workers=1)
    server = tcp_data.DataPlaneServer(store, TOKEN).start()
    s = None
    try:
        s = _prepared_push(server.port)
        (shard_end,) = server._conns
        # the client reads nothing more: fill everything the shard can send it
        filler, queued, last = b"\0" * 65536, 0, time.monotonic()
        while time.monotonic() - last < 0.5:  # until the buffers stop growing
            try:
                queued += shard_end.send(filler, socket.MSG_DONTWAIT)
                last = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        tcp_data.send_frame(s, tcp_data.PUSH_DECISION, {"commit": True})
        assert _eventually(lambda: store.applied_step == 0)
        other = threading.Thread(target=store.pull, args=("emb", np.arange(3, dtype=np.int64)))
        other.start()
        other.join(10)  # another caller of the shard, while the commit's answer cannot go out
        served = not other.is_alive()
        view = memoryview(bytearray(queued))
        while view:  # the client reads again: the answer follows what was queued before it
            view = view[s.recv_into(view):]
        other.join()
        assert served
        assert tcp_data.recv_frame(s)[1] == {"committed": True, "applied_step": 0}
    finally:
        if s is not None:
            s.close()
        server.stop()
