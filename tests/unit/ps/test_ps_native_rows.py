"""kernels/ps row movement: partition, checked gather, validated apply, send gathered, receive in
place, receive checked."""

from __future__ import annotations

import errno
import socket
import threading

import numpy as np
import pytest

from herald_tf import _core
from herald_tf.config import OptimizerConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps import _native
from herald_tf.ps.sharding import SHARD_SALT, mix64, split_by_shard


def _send_in_odd_pieces(sock: socket.socket, data: bytes) -> threading.Thread:
    """Sends ``data`` from a thread in 9973-byte pieces (the thread, started, is returned)."""
    def send() -> None:
        for i in range(0, len(data), 9973):
            sock.sendall(data[i:i + 9973])

    th = threading.Thread(target=send)
    th.start()
    return th


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 32])
def test_partition_equals_the_python_sharding(shards: int) -> None:
    # 5003: not a multiple of the partition's counter lanes
    keys = np.random.default_rng(shards).integers(-2**63, 2**63 - 1, 5003, dtype=np.int64)
    for a, b in zip(_native.partition(keys, shards), split_by_shard(keys, shards), strict=True):
        np.testing.assert_array_equal(a, b)


def _unmix64(h: int) -> int:
    """The key bits whose splitmix64 finaliser is ``h`` (the finaliser is a bijection)."""
    def unshift(x: int, s: int) -> int:  # inverse of x ^= x >> s
        y, shift = x, s
        while shift < 64:
            y ^= x >> shift
            shift += s
        return y

    mask = (1 << 64) - 1
    x = unshift(h, 31)
    x = (x * pow(0x94D049BB133111EB, -1, 1 << 64)) & mask
    x = unshift(x, 27)
    x = (x * pow(0xBF58476D1CE4E5B9, -1, 1 << 64)) & mask
    return unshift(x, 30)


@pytest.mark.parametrize("shards", [3, 7, 1000, 65537])
def test_partition_is_exact_for_hashes_at_the_ends_of_64_bits(shards: int) -> None:
    # the C++ partition takes the remainder without a division; these hashes are where such a
    # method would round wrong if it were not exact
    top = (1 << 64) - 1
    hashes = {0, 1, shards - 1, shards, shards + 1, top, top - 1, 1 << 63, (1 << 63) - 1}
    for k in [2, 3, 1 << 20, top // shards - 1, top // shards]:
        hashes |= {k * shards - 1, k * shards, k * shards + 1}
    hashes = sorted(h for h in hashes if 0 <= h <= top)
    keys = np.array([_unmix64(h) ^ SHARD_SALT for h in hashes], np.uint64).view(np.int64)
    np.testing.assert_array_equal(mix64(keys.view(np.uint64) ^ np.uint64(SHARD_SALT)),
                                  np.array(hashes, np.uint64))
    for a, b in zip(_native.partition(keys, shards), split_by_shard(keys, shards), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checked_gather_finds_the_first_non_finite_value() -> None:
    rows = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    pos = np.array([4, 9, 9, 0, 49], np.int64)
    out, bad = _native.gather_rows_checked(rows, pos)
    np.testing.assert_array_equal(out, rows[pos])
    assert bad == -1
    rows[9, 2] = np.nan
    rows[49, 0] = np.inf
    assert _native.gather_rows_checked(rows, pos)[1] == 1 * 6 + 2
    with pytest.raises(InvalidArgumentError, match="every position in"):
        _native.gather_rows_checked(rows, np.array([50], np.int64))


@pytest.mark.parametrize("opt", ["sgd", "adagrad", "adam"])
def test_apply_rows_equals_sparse_apply(opt: str) -> None:
    cfg = OptimizerConfig(opt, learning_rate=0.3)
    rng = np.random.default_rng(1)
    width = cfg.state_width_per_dim * 8
    table = (rng.normal(size=(40, 8)).astype(np.float32),
             np.abs(rng.normal(size=(40, width))).astype(np.float32),
             rng.integers(0, 4, 40).astype(np.int64))
    rows = rng.permutation(40)[:25].astype(np.int64)
    grads = rng.normal(size=(25, 8)).astype(np.float32)
    a = tuple(x.copy() for x in table)
    b = tuple(x.copy() for x in table)
    _core.sparse_apply(cfg, *a, rows, grads, learning_rate=0.1)
    _native.apply_rows(cfg, *b, rows, grads, 0.1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(InvalidArgumentError, match="every row in"):
        _native.apply_rows(cfg, *b, np.array([3, 40], np.int64), grads[:2], 0.1)
    for x, y in zip(a, b, strict=True):  # refused before any change
        np.testing.assert_array_equal(x, y)


def test_recv_rows_lands_rows_at_their_places_across_partial_reads() -> None:
    n, width = 3000, 24
    rows = np.random.default_rng(2).normal(size=(n, width)).astype(np.float32)
    dest = np.random.default_rng(3).permutation(n + 5)[:n].astype(np.int64)
    out = np.zeros((n + 5, width), np.float32)
    a, b = socket.socketpair()
    th = _send_in_odd_pieces(a, rows.tobytes())  # rows split across reads
    b.settimeout(10)
    assert _native.recv_rows(b.fileno(), out, dest, 10) == 0
    th.join()
    np.testing.assert_array_equal(out[dest], rows)
    assert _native.recv_rows(b.fileno(), out, dest[:1], 0.05) == errno.ETIMEDOUT
    a.close()
    assert _native.recv_rows(b.fileno(), out, dest[:1], 1) == -1  # the peer closed
    b.close()
    with pytest.raises(InvalidArgumentError, match="every position in"):
        _native.recv_rows(0, out, np.array([n + 5], np.int64), 1)


@pytest.mark.parametrize("aligned", [True, False])
def test_recv_rows_into_an_output_larger_than_the_caches_lands_every_row(aligned: bool) -> None:
    # >= 4 MiB of whole-line rows in a line-aligned output bypass the caches (streamed); an
    # output off the line boundary takes memcpy: both land the same rows
    n, width = 20_000, 64
    rows = np.random.default_rng(5).normal(size=(n, width)).astype(np.float32)
    dest = np.sort(np.random.default_rng(6).permutation(2 * n)[:n]).astype(np.int64)
    out = _core.line_aligned_rows(2 * n + 1, width, zero=True)
    out = out[:2 * n] if aligned else out[1:]
    a, b = socket.socketpair()
    th = _send_in_odd_pieces(a, rows.tobytes())
    b.settimeout(10)
    assert _native.recv_rows(b.fileno(), out, dest, 10) == 0
    th.join()
    np.testing.assert_array_equal(out[dest], rows)
    untouched = np.ones(2 * n, bool)
    untouched[dest] = False
    assert not out[untouched].any()
    a.close()
    b.close()


@pytest.mark.parametrize("width", [24, 70_000])  # rows smaller and larger than the stage
def test_recv_rows_reads_nothing_past_the_rows(width: int) -> None:
    n = 7
    rows = np.random.default_rng(4).normal(size=(n, width)).astype(np.float32)
    dest = np.array([6, 0, 3, 1, 5, 2, 4], np.int64)
    out = np.zeros((n, width), np.float32)
    a, b = socket.socketpair()
    th = threading.Thread(target=a.sendall, args=(rows.tobytes() + b"next frame",))
    th.start()
    b.settimeout(10)
    assert _native.recv_rows(b.fileno(), out, dest, 10) == 0
    th.join()
    np.testing.assert_array_equal(out[dest], rows)
    assert b.recv(64) == b"next frame"
    a.close()
    b.close()


@pytest.mark.parametrize("width", [24, 70_000])  # rows smaller and larger than the stage
def test_send_rows_sends_the_rows_at_the_positions_in_order(width: int) -> None:
    n = 40 if width > 1000 else 30_000  # more bytes than the stage and the socket buffer
    src = np.random.default_rng(5).normal(size=(n, width)).astype(np.float32)
    positions = np.random.default_rng(6).permutation(n)[: n // 2].astype(np.int64)
    a, b = socket.socketpair()
    got = bytearray()

    def receive() -> None:
        want = positions.shape[0] * width * 4
        while len(got) < want:
            got.extend(b.recv(1 << 20))

    th = threading.Thread(target=receive)
    th.start()
    a.settimeout(10)
    assert _native.send_rows(a.fileno(), src, positions, 10) == 0
    th.join()
    np.testing.assert_array_equal(np.frombuffer(bytes(got), np.float32).reshape(-1, width),
                                  src[positions])
    with pytest.raises(InvalidArgumentError, match="every position in"):
        _native.send_rows(a.fileno(), src, np.array([0, n], np.int64), 1)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(1)  # the refused call sent nothing
    b.close()
    assert _native.send_rows(a.fileno(), src, positions[:1], 1) == errno.EPIPE  # peer gone
    a.close()


def test_recv_floats_checked_finds_the_first_non_finite_value_across_pieces() -> None:
    values = np.random.default_rng(7).normal(size=300_000).astype(np.float32)
    values[200_001] = np.inf
    values[250_000] = np.nan
    a, b = socket.socketpair()
    th = _send_in_odd_pieces(a, values.tobytes())  # floats split across reads
    out = np.empty_like(values)
    b.settimeout(10)
    assert _native.recv_floats_checked(b.fileno(), out, 10) == (0, 200_001)
    th.join()
    np.testing.assert_array_equal(out.view(np.uint32), values.view(np.uint32))
    a.sendall(np.ones(4, np.float32).tobytes())
    assert _native.recv_floats_checked(b.fileno(), out[:4], 10) == (0, -1)
    assert _native.recv_floats_checked(b.fileno(), out[:4], 0.05)[0] == errno.ETIMEDOUT
    a.close()
    assert _native.recv_floats_checked(b.fileno(), out[:4], 1)[0] == -1  # the peer closed
    b.close()
