"""Bulk data plane over plain TCP for pull and push (transport kind ``grpc+tcp``).

Why it exists: grpcio's Python API copies every received message three times with the GIL held
(slice → bytes → bytearray → bytes) and every sent one once more, so on the 2-core dev machine
bare gRPC, with no PS work at all, moves a 4096 × 26 × 64 pull at 0.30-0.47 and a push at
0.19-0.27 of a raw socket's throughput (benchmarks/ps_throughput.py, ``bare_grpc_*``; chunk
sizes 1-16 MiB, 2 calls per shard and raised window/frame/read-chunk options measured no
better), short of the 0.5 goal before any PS work. Here arrays go from numpy straight to
``sendall``; a pull's rows are received straight into their places in the caller's output
(through a cache-sized stage, in kernels/ps); a push's gradients are gathered into a cache-sized
stage on their way to the socket (``GatheredRows``) and received in pieces checked finite while
cache-warm, as another thread checks the push's keys distinct and finds their rows.

``pull``, ``push`` and the plans worker 0 posts for the others (``post_plans``/``take_plans``)
use it; flush, versions and control calls (connect, checkpoints, ...) stay on gRPC, which also
tells the client the data port (control op ``data_plane``). Same rules as the gRPC service: the
cluster token is checked (constant time) before anything else on a connection, TLS wraps the
connection when the PS serves TLS, every request is validated by the ``ShardStore`` and a
refused one changes nothing and is answered with the error class's gRPC code name, so the client
raises the same ``herald_tf.ps.errors`` class as over gRPC.

Wire format (little-endian). Every message, both ways, is a frame::

    header   4s magic b"HRLD" | u32 kind (request) or status (reply: 0 ok, 1 error)
             | u32 meta bytes | u64 payload bytes
    meta     UTF-8 JSON object; "arrays": [[name, "i8" | "f4" | "u1", [dim, ...]], ...]
    payload  the arrays' raw bytes (C order), in the order listed

A connection starts with a HELLO frame whose meta holds the token and the protocol version
(``PROTOCOL``; a PS refuses another with an error naming both); after that it carries one
request and its reply at a time (the client keeps a pool of connections per shard). A request
frame the server cannot parse is answered with an error and the connection is closed (a
malformed hello is closed unanswered); so is a frame whose reading fails otherwise (e.g.
``MemoryError``, also logged). Errors answered are counted by the shard; each ends only its
own connection.

A push takes two exchanges on one connection, so that a part one shard refuses is recorded by
none: PUSH (the shard's part) is checked completely and answered ``{"prepared": true}`` or with
the error; once every shard answered, the client sends each prepared one PUSH_DECISION
``{"commit": true}`` (all prepared) or ``false``, answered ``{"committed": ..., "applied_step":
...}``. A shard drops a prepared part whose connection closes before the decision. The shards
make every contents check (finite gradients, distinct keys), so the client makes none.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hmac
import json
import logging
import math
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from herald_tf._core import line_aligned_rows
from herald_tf.errors import HeraldError, InvalidArgumentError
from herald_tf.ps._native import find_non_finite, recv_floats_checked, recv_rows, send_rows
from herald_tf.ps.errors import (
    ERROR_BY_GRPC_CODE,
    DeadlineExceededError,
    PsError,
    UnauthenticatedError,
    UnavailableError,
    grpc_code_of,
)
from herald_tf.ps.store import PushEntry, ShardStore
from herald_tf.transport import wire

_log = logging.getLogger(__name__)

MAGIC = b"HRLD"
HEADER = struct.Struct("<4sIIQ")
HELLO, PULL, PUSH, POST_PLANS, TAKE_PLANS, PUSH_DECISION = 0, 1, 2, 3, 4, 5
#: Version of the exchanges below, sent in the hello: 2 made push two-phase.
PROTOCOL = 2
OK, ERROR = 0, 1
#: Largest meta accepted (JSON with table names and array specs), and before authentication.
MAX_META_BYTES = 1 << 20
MAX_HELLO_META_BYTES = 4 << 10
#: Largest payload of a frame a client accepts (a reply: rows of one shard's pull).
MAX_PAYLOAD_BYTES = 1 << 36

CONNECT_TIMEOUT_S = 10.0
DTYPES = {"i8": np.dtype("<i8"), "f4": np.dtype("<f4"), "u1": np.dtype("u1")}
_CODES = {v.str: k for k, v in DTYPES.items()}

#: Chunk received before it is checked (push) or scattered (pull through TLS): stays in L2.
STREAM_CHUNK_BYTES = 512 << 10

Arrays = dict[str, np.ndarray]
LastArray = Callable[[Arrays, socket.socket, str, np.dtype, tuple[int, ...]], None]


class FrameError(InvalidArgumentError):
    """A frame that does not follow the wire format (the connection cannot continue)."""


class _DropConnection(Exception):
    """Raised by a handler that already answered: the connection closes without another reply."""


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    # MSG_WAITALL: a blocking socket fills the whole array in one call (TLS takes no flags)
    flags = 0 if isinstance(sock, ssl.SSLSocket) else socket.MSG_WAITALL
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:], 0, flags)
        if n == 0:
            raise ConnectionError("the peer closed the data-plane connection")
        got += n


class GatheredRows:
    """Rows ``src[positions]`` as one array of a frame, gathered while they are sent.

    A push sends each shard its gradients in the shard's key order; gathering them first would
    write the whole part to memory and the kernel would read it back (on the 2-core machine the
    gather and the send's copy were each a quarter of a push's client CPU). Each shard's thread
    gathers its own rows: one pass over ``src`` for every shard reads it once, but made the
    client's sending one serial chain, no faster and often slower on 2 cores (README).
    """

    def __init__(self, src: np.ndarray, positions: np.ndarray) -> None:
        self.src = np.ascontiguousarray(src)
        self.positions = positions
        self.dtype = self.src.dtype
        self.shape = (int(positions.shape[0]), *self.src.shape[1:])
        self.nbytes = self.shape[0] * (self.src.strides[0] if self.src.shape[0] else 0)

    def send(self, sock: socket.socket) -> None:
        """Sends the rows: gathered in C++ on a plain socket, in cache-sized pieces through TLS."""
        if not isinstance(sock, ssl.SSLSocket):
            err = send_rows(sock.fileno(), self.src, self.positions, sock.gettimeout())
            if err == errno.ETIMEDOUT:
                raise TimeoutError(f"the socket stayed full for {sock.gettimeout()} s")
            if err:
                raise ConnectionError(os.strerror(err))
            return
        per = max(1, STREAM_CHUNK_BYTES // max(1, self.src.strides[0]))
        for begin in range(0, self.shape[0], per):
            sock.sendall(np.take(self.src, self.positions[begin:begin + per], axis=0))


FrameArray = np.ndarray | GatheredRows


def send_frame(sock: socket.socket, kind: int, meta: Mapping[str, Any],
               arrays: Sequence[tuple[str, FrameArray]] = ()) -> None:
    """Sends one frame; the arrays go to the socket from their own memory (no copy)."""
    arrays = [(name, a if isinstance(a, GatheredRows) else np.ascontiguousarray(a))
              for name, a in arrays]
    specs = [[name, _CODES[a.dtype.str], list(a.shape)] for name, a in arrays]
    buffers: list[Any] = [_head(kind, meta, specs, sum(a.nbytes for _, a in arrays))]
    for _, a in arrays:
        if a.nbytes:
            buffers.append(a if isinstance(a, GatheredRows) else memoryview(a).cast("B"))
    while buffers:
        if isinstance(buffers[0], GatheredRows):
            buffers.pop(0).send(sock)
            continue
        contiguous = 0
        while contiguous < len(buffers) and not isinstance(buffers[contiguous], GatheredRows):
            contiguous += 1
        if isinstance(sock, ssl.SSLSocket):  # no scatter-gather through TLS
            for b in buffers[:contiguous]:
                sock.sendall(b)
            del buffers[:contiguous]
            continue
        # one system call (one segment train) for the buffers; sendmsg may send part of them
        sent = sock.sendmsg(buffers[:contiguous])
        while contiguous and sent >= len(buffers[0]):
            sent -= len(buffers[0])
            buffers.pop(0)
            contiguous -= 1
        if contiguous and sent:
            buffers[0] = memoryview(buffers[0])[sent:]


def _head(kind: int, meta: Mapping[str, Any], specs: list[list[Any]], payload: int) -> bytes:
    body = json.dumps({**meta, "arrays": specs}).encode()
    return HEADER.pack(MAGIC, kind, len(body), payload) + body


def send_without_waiting(sock: socket.socket, kind: int, meta: Mapping[str, Any]) -> bytes:
    """Sends as much of an array-less frame as the socket takes at once; returns the rest,
    which the caller sends later (``sendall``), before anything else on ``sock``."""
    frame = _head(kind, meta, [], 0)
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return frame[sock.send(frame):]
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return frame  # TLS: sent again whole, as OpenSSL asks after a write that must wait
    finally:
        sock.settimeout(timeout)


def _spec(item: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            and item[1] in DTYPES and isinstance(item[2], list) and 1 <= len(item[2]) <= 2
            and all(isinstance(d, int) and 0 <= d < 1 << 40 for d in item[2])):
        raise FrameError(f"Expected an array spec [name, 'i8'|'f4'|'u1', [dims]]. Received: "
                         f"{item!r}")
    return item[0], DTYPES[item[1]], tuple(item[2])


FrameHead = tuple[int, dict[str, Any], list[tuple[str, np.dtype, tuple[int, ...]]]]


def recv_frame(sock: socket.socket, max_meta: int = MAX_META_BYTES,
               max_payload: int = MAX_PAYLOAD_BYTES, last: LastArray | None = None
               ) -> tuple[int, dict[str, Any], Arrays]:
    """Receives one frame: (kind or status, meta, arrays received straight into numpy).

    With ``last``, the frame's last array, when 2-D and not empty, is received by
    ``last(arrays received before it, sock, name, dtype, shape)`` instead (a pull's rows go
    straight to their places in request order; a push's gradients are checked while cache-warm),
    which may add it to those arrays.
    """
    kind, meta, specs = recv_head(sock, max_meta, max_payload)
    return kind, meta, recv_arrays(sock, specs, last)


def recv_head(sock: socket.socket, max_meta: int = MAX_META_BYTES,
              max_payload: int = MAX_PAYLOAD_BYTES) -> FrameHead:
    """Receives a frame's header and meta: (kind or status, meta, specs of the arrays that
    follow), so the receiver can choose how to take the arrays (``recv_arrays``)."""
    header = bytearray(HEADER.size)
    _recv_exact(sock, memoryview(header))
    magic, kind, meta_bytes, payload = HEADER.unpack(header)
    if magic != MAGIC or meta_bytes > max_meta or payload > max_payload:
        raise FrameError(f"Expected a herald data-plane frame (magic {MAGIC!r}, meta <= {max_meta}"
                         f" bytes, payload <= {max_payload} bytes). Received: magic {magic!r}, "
                         f"meta {meta_bytes} bytes, payload {payload} bytes")
    body = bytearray(meta_bytes)
    _recv_exact(sock, memoryview(body))
    try:
        meta = json.loads(body)
    except (ValueError, RecursionError) as e:  # RecursionError: arrays nested too deep
        raise FrameError(f"Expected JSON meta in a data-plane frame. Received: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arrays", []), list):
        raise FrameError("Expected a JSON object with an 'arrays' list as frame meta.")
    specs = [_spec(item) for item in meta.pop("arrays", [])]
    # exact (Python int) sizes: dims up to 2**40 overflow numpy's int64 product, which could
    # make huge arrays count as 0 bytes and pass the check
    sizes = [_nbytes(dtype, shape) for _, dtype, shape in specs]
    if sum(sizes) != payload or len({name for name, _, _ in specs}) != len(specs):
        raise FrameError(f"Expected distinct arrays of {payload} payload bytes in all. "
                         f"Received: {len(specs)} arrays of {sum(sizes)} bytes")
    return kind, meta, specs


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return dtype.itemsize * math.prod(shape)


def recv_arrays(sock: socket.socket, specs: list[tuple[str, np.dtype, tuple[int, ...]]],
                last: LastArray | None = None) -> Arrays:
    """Receives the arrays of a frame whose head ``recv_head`` returned (``last``: as in
    ``recv_frame``)."""
    arrays: Arrays = {}
    for i, (name, dtype, shape) in enumerate(specs):
        size = _nbytes(dtype, shape)
        if last is not None and i == len(specs) - 1 and len(shape) == 2 and size:
            last(arrays, sock, name, dtype, shape)
            continue
        a = np.empty(shape, dtype=dtype)
        if size:
            _recv_exact(sock, memoryview(a).cast("B"))
        arrays[name] = a
    return arrays


def _recv_checked(arrays: Arrays, sock: socket.socket, name: str, dtype: np.dtype,
                  shape: tuple[int, ...], checked: dict[str, int]) -> None:
    """Receives a float32 array in cache-sized chunks, finding its first NaN/Inf meanwhile
    (``checked[name]``), so the store need not read it again for that."""
    # float rows start on cache lines, so the apply reads each 256-byte row as 4 lines, not 5
    a = (line_aligned_rows(shape[0], shape[1]) if dtype == np.float32 and len(shape) == 2
         else np.empty(shape, dtype=dtype))
    arrays[name] = a
    flat = a.reshape(-1)
    if dtype != np.float32:
        _recv_exact(sock, memoryview(flat).cast("B"))
        return
    if not isinstance(sock, ssl.SSLSocket):  # in C++, in pieces checked while L1/L2-warm
        err, checked[name] = recv_floats_checked(sock.fileno(), flat, sock.gettimeout())
        if err:
            raise ConnectionError("the peer closed the data-plane connection" if err < 0
                                  else os.strerror(err))
        return
    per = max(1, STREAM_CHUNK_BYTES // dtype.itemsize)
    bad = -1
    for begin in range(0, flat.shape[0], per):
        chunk = flat[begin:begin + per]
        _recv_exact(sock, memoryview(chunk).cast("B"))
        if bad < 0:
            at = find_non_finite(chunk)
            bad = begin + at if at >= 0 else -1
    checked[name] = bad


def recv_rows_into(sock: socket.socket, out: np.ndarray, dest: np.ndarray) -> None:
    """Receives ``len(dest)`` rows of ``out``'s row size into ``out[dest]``.

    On a plain socket C++ receives cache-sized chunks and copies each row to its place; through
    TLS the same is done here in Python.
    """
    if not isinstance(sock, ssl.SSLSocket):
        timeout = sock.gettimeout()
        err = recv_rows(sock.fileno(), out, dest, timeout)
        if err == errno.ETIMEDOUT:
            raise TimeoutError(f"no data within {timeout} s")
        if err:
            raise ConnectionError("the peer closed the data-plane connection" if err < 0
                                  else os.strerror(err))
        return
    per = max(1, STREAM_CHUNK_BYTES // max(1, out.strides[0]))
    scratch = np.empty((min(per, dest.shape[0]),) + out.shape[1:], dtype=out.dtype)
    for begin in range(0, dest.shape[0], per):
        chunk = scratch[:min(per, dest.shape[0] - begin)]
        _recv_exact(sock, memoryview(chunk).cast("B"))
        out[dest[begin:begin + chunk.shape[0]]] = chunk


def _field(meta: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           default: Any = None) -> Any:
    value = meta.get(name, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidArgumentError(f"Expected '{name}' of type {kind} in a data-plane request. "
                                   f"Received: {value!r}")
    return value


# -- server ------------------------------------------------------------------------------------


class DataPlaneServer:
    """Serves pull and push of one ``ShardStore`` over TCP, next to its gRPC service."""

    def __init__(self, store: ShardStore, token: str, address: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.store = store
        self._token = token.encode()
        self._ssl = ssl_context
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._listener = socket.create_server((address, port), family=family, backlog=64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="herald-data-accept",
                                        daemon=True)
        # a push's key checks and row lookups, while its gradients arrive (_receive_gradients)
        self._key_work = ThreadPoolExecutor(max_workers=2, thread_name_prefix="herald-keys")

    def start(self) -> DataPlaneServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Closes the listener and every connection (requests in progress fail)."""
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        for s in [self._listener, *conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self._key_work.shutdown(wait=False)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="herald-data",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        sock: socket.socket = conn
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(CONNECT_TIMEOUT_S)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(conn, server_side=True)
            kind, meta, _ = recv_frame(sock, MAX_HELLO_META_BYTES, 0)
            token = meta.get("token", "")
            presented = token.encode() if isinstance(token, str) else b""
            if kind != HELLO or not hmac.compare_digest(presented, self._token):
                send_frame(sock, ERROR, {
                    "code": "UNAUTHENTICATED",
                    "message": "Expected the cluster token in the data-plane hello. Received: a "
                               "missing or wrong token; pass the token the PS was started with."})
                return
            if meta.get("protocol", 1) != PROTOCOL:
                send_frame(sock, ERROR, {
                    "code": "FAILED_PRECONDITION",
                    "message": f"Expected data-plane protocol {PROTOCOL} (a client of this PS's "
                               f"herald_tf version). Received: {meta.get('protocol', 1)!r}"})
                return
            send_frame(sock, OK, {})
            sock.settimeout(None)
            while True:
                checked: dict[str, int] = {}
                rows: dict[int, Future] = {}
                try:
                    # a request over the PS's limit is refused from its header, before any
                    # allocation
                    kind, meta, specs = recv_head(sock, max_payload=wire.MAX_REQUEST_BYTES)
                    arrays = recv_arrays(sock, specs, last=functools.partial(
                        self._receive_gradients, meta, checked, rows) if kind == PUSH else None)
                except FrameError as e:
                    self._send_error(sock, e)
                    return
                try:
                    if kind == PUSH:  # answers itself
                        self._serve_push(sock, meta, arrays, checked, rows)
                        continue
                    reply_meta, reply = self._handle(kind, meta, arrays)
                except FrameError as e:  # the decision after a prepared push was not one
                    self._send_error(sock, e)
                    return
                except _DropConnection:
                    return
                except Exception as e:  # noqa: BLE001 - every error goes back to this caller only
                    self._send_error(sock, e)
                    continue
                send_frame(sock, OK, reply_meta, reply)
        except (OSError, FrameError):
            return  # the client went away or spoke something else: drop the connection
        except Exception as e:  # noqa: BLE001 - e.g. MemoryError, or a bug: end this connection only
            _log.exception("shard %d: data-plane connection failed", self.store.shard_index)
            # where the stream is is unknown: answer if the socket still takes it, then close
            with contextlib.suppress(OSError):
                self._send_error(sock, e)
        finally:
            with self._lock:
                self._conns.discard(conn)
            sock.close()

    def _send_error(self, sock: socket.socket, e: Exception) -> None:
        self.store.count_error()
        message = str(e) if isinstance(e, HeraldError) else f"{type(e).__name__}: {e}"
        send_frame(sock, ERROR, {"code": grpc_code_of(e), "message": message})

    def _receive_gradients(self, meta: dict[str, Any], checked: dict[str, int],
                           rows: dict[int, Future], arrays: Arrays, sock: socket.socket,
                           name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        """Receives a push's last gradients, checking them finite on the way; meanwhile another
        thread checks the keys that came before them distinct and finds their rows (``rows``),
        work the push would otherwise do after the last byte arrived."""
        entries = meta.get("entries")
        i = int(name[5:]) if name.startswith("grads") and name[5:].isdigit() else -1
        # only for a well-formed entry whose table no other entry names (its keys are then
        # distinct if they are distinct here); anything else is checked and refused later
        if 0 <= i < len(entries if isinstance(entries, list) else []) and \
                f"keys{i}" in arrays and isinstance(entries[i], list) and entries[i] and \
                isinstance(entries[i][0], str) and \
                sum(isinstance(e, list) and e[:1] == entries[i][:1] for e in entries) == 1:
            rows[i] = self._key_work.submit(self.store.resolve_push_keys, entries[i][0],
                                            arrays[f"keys{i}"])
        _recv_checked(arrays, sock, name, dtype, shape, checked)

    def _serve_push(self, sock: socket.socket, meta: dict[str, Any], arrays: Arrays,
                    checked: dict[str, int], rows: dict[int, Future]) -> None:
        """A push in two phases: the part is checked completely and answered ``prepared``; the
        client then sends every shard its decision (``commit`` only when all shards prepared),
        and the part is recorded or dropped. A connection lost in between drops it. A commit
        is answered as soon as it is recorded, while the shard applies it (``commit_push``).

        ``checked``: name → first non-finite flat index (or -1) of the gradients already checked
        while they arrived; ``rows``: entry → its keys' rows, resolved meanwhile.
        """
        resolved = {i: f.result() for i, f in rows.items()}  # raises e.g. on duplicate keys
        entries = []
        for i, item in enumerate(_field(meta, "entries", list, [])):
            if not (isinstance(item, list) and len(item) == 2):
                raise InvalidArgumentError(f"Expected [table, learning rate] entries. "
                                           f"Received: {item!r}")
            table = _field({"table": item[0]}, "table", str)
            lr = _field({"learning_rate": item[1]}, "learning_rate", (int, float))
            keys, grads = arrays.get(f"keys{i}"), arrays.get(f"grads{i}")
            if keys is None or grads is None:
                raise InvalidArgumentError(f"Expected keys{i} and grads{i} in a push.")
            bad = checked.get(f"grads{i}")
            if bad is not None and bad >= 0:
                raise InvalidArgumentError(
                    f"Expected finite gradients for table '{table}'. Received: "
                    f"{grads.reshape(-1)[bad]} at flat index {bad}")
            entries.append(PushEntry(table, keys, grads, float(lr),
                                     finite_checked=bad is not None,
                                     distinct_checked=i in resolved, rows=resolved.get(i)))
        step, rank = _field(meta, "step", int), _field(meta, "rank", int)
        prepared = self.store.check_push(step, rank, entries)
        send_frame(sock, OK, {"prepared": True})
        kind, decision, _ = recv_frame(sock, max_payload=0)
        if kind != PUSH_DECISION or not isinstance(decision.get("commit"), bool):
            raise FrameError(f"Expected the client's decision on a prepared push (kind "
                             f"{PUSH_DECISION}, 'commit': true or false). Received: kind {kind}, "
                             f"meta {decision!r}")
        if not decision["commit"]:
            send_frame(sock, OK, {"committed": False})
            return
        unsent: list[bytes] = []  # of the answer given while the shard's lock is held

        def answer(applied: int) -> None:
            # under the shard's lock: a client that stopped reading must not stall the shard,
            # so what the socket does not take at once goes out after the update
            unsent.append(send_without_waiting(
                sock, OK, {"committed": True, "applied_step": applied}))

        timeout = _field(meta, "timeout_s", (int, float), 0) or None
        try:
            applied = self.store.commit_push(step, rank, prepared, wait_applied=_field(
                meta, "wait_applied", bool, False), timeout=timeout, on_recorded=answer)
        except Exception:
            if not unsent:
                raise  # answered as an error; the connection goes on
            # the caller has (most of) its answer, so an error reply would be read as the next
            # request's: finish the answer, report the failure here and drop the connection
            with contextlib.suppress(OSError):
                sock.sendall(unsent[0])
            self.store.count_error()
            _log.exception("shard %d: applying step %d after answering rank %d's commit failed",
                           self.store.shard_index, step, rank)
            raise _DropConnection from None
        if unsent:
            sock.sendall(unsent[0])
        else:
            send_frame(sock, OK, {"committed": True, "applied_step": applied})

    def _handle(self, kind: int, meta: dict[str, Any], arrays: Arrays
                ) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
        """Serves one request other than a push."""
        timeout = _field(meta, "timeout_s", (int, float), 0) or None
        if kind == PULL:
            have, need = arrays.get("have_versions"), arrays.get("min_versions")
            if "keys" not in arrays:
                raise InvalidArgumentError("Expected 'keys' in a data-plane pull.")
            r = self.store.pull(_field(meta, "table", str), arrays["keys"], have, need,
                                _field(meta, "with_state", bool, False), timeout)
            reply = [("versions", r.versions)]
            if have is not None:  # positions travel only when rows may have been skipped
                reply.append(("positions", r.positions))
            if r.state is not None:
                reply.append(("state", r.state))
            return {}, [*reply, ("values", r.values)]  # values last: clients stream them
        if kind == POST_PLANS:
            ranks = _field(meta, "ranks", list)
            if not all(isinstance(r, int) for r in ranks):
                raise InvalidArgumentError(f"Expected integer ranks. Received: {ranks!r}")
            plans = [arrays.get(f"plan{i}") for i in range(len(ranks))]
            if any(p is None or p.ndim != 1 or p.dtype != np.uint8 for p in plans):
                raise InvalidArgumentError("Expected a bytes array plan{i} per rank in a post.")
            self.store.post_plans(_field(meta, "step", int), ranks, [p.tobytes() for p in plans])
            return {}, []
        if kind == TAKE_PLANS:
            plans = self.store.plans.take(
                _field(meta, "step", int), _field(meta, "rank", int),
                _field(meta, "wait_s", (int, float), 0.0), _field(meta, "max_plans", int, 1))
            return {}, [(f"plan{i}", np.frombuffer(p, np.uint8)) for i, p in enumerate(plans)]
        raise InvalidArgumentError(
            f"Expected a data-plane request kind in {{{PULL}: pull, {PUSH}: push, {POST_PLANS}: "
            f"post plans, {TAKE_PLANS}: take plans}} (a push's decision follows its push). "
            f"Received: {kind}")


# -- client ------------------------------------------------------------------------------------


class DataPlaneClient:
    """Connections to one shard's data plane; ``call`` may run from many threads at once."""

    def __init__(self, host: str, port: int, token: str,
                 root_certificates: bytes | None = None) -> None:
        self.host, self.port = host, port
        self._token = token
        self._ssl = None
        if root_certificates is not None:
            self._ssl = ssl.create_default_context(cadata=root_certificates.decode())
        self._lock = threading.Lock()
        self._idle: list[socket.socket] = []
        self._closed = False
        self._retired = False  # pools no connection (see retire)

    def _connect(self) -> socket.socket:
        conn = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        sock: socket.socket = conn
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(conn, server_hostname=self.host)
            send_frame(sock, HELLO, {"token": self._token, "protocol": PROTOCOL})
            status, meta, _ = recv_frame(sock, MAX_META_BYTES, 0)
            if status != OK:
                raise _reply_error(meta)
            return sock
        except BaseException:
            sock.close()
            raise

    def _checkout(self) -> socket.socket:
        """An idle connection that is still open, or a new one."""
        with self._lock:
            if self._closed:
                raise UnavailableError("the transport is closed")
            sock = self._idle.pop() if self._idle else None
        if sock is not None and not _alive(sock):  # e.g. the server restarted meanwhile
            sock.close()
            sock = None
        if sock is None:
            try:
                sock = self._connect()
            except HeraldError:  # the server's refusal (UnauthenticatedError is an OSError)
                raise
            except (OSError, FrameError) as e:
                raise UnavailableError(f"data-plane connection to {self.host}:{self.port} "
                                       f"failed: {e}") from None
        return sock

    def _checkin(self, sock: socket.socket) -> None:
        with self._lock:
            if self._closed or self._retired:
                sock.close()
            else:
                self._idle.append(sock)

    def _io(self, sock: socket.socket, timeout: float, step: Callable[[], Any]) -> Any:
        """Runs one send or receive on ``sock``; a broken connection is closed and raised as
        ``UnavailableError``, no reply within ``timeout`` as ``DeadlineExceededError``."""
        where = f"{self.host}:{self.port}"
        try:
            sock.settimeout(timeout)
            return step()
        except TimeoutError:
            sock.close()
            raise DeadlineExceededError(f"data-plane call to {where} got no reply within "
                                        f"{timeout:.1f} s") from None
        except (OSError, FrameError) as e:
            sock.close()
            raise UnavailableError(f"data-plane connection to {where} failed: {e}") from None

    def _reply(self, sock: socket.socket, timeout: float, last: LastArray | None = None
               ) -> tuple[dict[str, Any], Arrays]:
        """Receives a reply and gives the connection back; raises the server's error class."""
        status, reply_meta, reply = self._io(sock, timeout, lambda: recv_frame(sock, last=last))
        self._checkin(sock)
        if status != OK:
            raise _reply_error(reply_meta)
        return reply_meta, reply

    def call(self, kind: int, meta: Mapping[str, Any], arrays: Sequence[tuple[str, FrameArray]],
             timeout: float, last: LastArray | None = None) -> tuple[dict[str, Any], Arrays]:
        """Sends one request and returns the reply; raises the server's error class.

        A lost or broken connection raises ``UnavailableError`` (the caller retries idempotent
        requests), a reply later than ``timeout`` seconds ``DeadlineExceededError``.
        """
        sock = self._checkout()
        self._io(sock, timeout, lambda: send_frame(sock, kind, meta, arrays))
        return self._reply(sock, timeout, last)

    def prepare_push(self, meta: Mapping[str, Any], arrays: Sequence[tuple[str, FrameArray]],
                     timeout: float) -> PreparedPush:
        """Sends one shard's part of a push; returns once the shard checked and accepted it
        (raises its error otherwise), keeping the connection for the decision."""
        sock = self._checkout()
        self._io(sock, timeout, lambda: send_frame(sock, PUSH, meta, arrays))
        status, reply_meta, _ = self._io(sock, timeout, lambda: recv_frame(sock))
        if status != OK:
            self._checkin(sock)
            raise _reply_error(reply_meta)
        return PreparedPush(self, sock, timeout)

    def drop_idle(self) -> None:
        """Closes the idle connections (calls in flight keep theirs)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()

    def retire(self) -> None:
        """Stops pooling, for a client replaced while calls may still use it: closes the idle
        connections now and each one a call gives back later, as ``close`` does, but a call
        that already holds this client still runs, on a connection of its own."""
        with self._lock:
            self._retired = True
        self.drop_idle()

    def close(self) -> None:
        """Closes the idle connections; those of calls in flight close when they end. Later
        calls raise ``UnavailableError``."""
        with self._lock:
            self._closed = True
        self.drop_idle()


class PreparedPush:
    """A shard's part of a push that the shard accepted and holds until it hears the decision."""

    def __init__(self, client: DataPlaneClient, sock: socket.socket, timeout: float) -> None:
        self._client, self._sock, self._timeout = client, sock, timeout

    def decide(self, commit: bool) -> None:
        """Tells the shard to record the part (``commit``) or to drop it."""
        self._client._io(self._sock, self._timeout, lambda: send_frame(
            self._sock, PUSH_DECISION, {"commit": commit}))

    def outcome(self) -> dict[str, Any]:
        """The shard's answer to the decision: ``committed`` and, if so, ``applied_step``."""
        return self._client._reply(self._sock, self._timeout)[0]


def _alive(sock: socket.socket) -> bool:
    """Whether an idle connection is still open (the peer sent no FIN or reset)."""
    if isinstance(sock, ssl.SSLSocket):
        return True  # a closed one fails on use; pulls are retried on a new connection
    sock.setblocking(False)  # a timeout would make recv wait for data first
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read: open
    except OSError:
        return False


def _reply_error(meta: Mapping[str, Any]) -> HeraldError:
    code = str(meta.get("code", "INTERNAL"))
    if code == "UNAUTHENTICATED":
        return UnauthenticatedError(str(meta.get("message", code)))
    return ERROR_BY_GRPC_CODE.get(code, PsError)(str(meta.get("message", code)))
