"""The ``grpc+tcp`` transport: gRPC for control, flush and versions; the TCP data plane for the
bulk calls, pull and push, and for worker 0's plans (tcp_data.py says why and how).

Same contract, errors, retries and byte counters as ``GrpcTransport``: only where the bytes of a
pull, a push or a plan travel differs, and that a push is checked by the shards in a first phase
and recorded in a second (``push``; tcp_data.py has the protocol). Each shard's data port is
asked for over gRPC (control op ``data_plane``) on first use; a PS started without the data
plane is reported with a ``FailedPreconditionError`` naming the way out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

from herald_tf.ps.errors import FailedPreconditionError, UnavailableError
from herald_tf.transport import wire
from herald_tf.transport.grpc_client import GrpcTransport
from herald_tf.transport.sharded import ShardSink
from herald_tf.transport.tcp_data import (
    POST_PLANS,
    PULL,
    TAKE_PLANS,
    DataPlaneClient,
    FrameArray,
    GatheredRows,
    PreparedPush,
    recv_rows_into,
)
from herald_tf.transport.types import Handle

T = TypeVar("T")


def _check_size(arrays: Sequence[tuple[str, FrameArray]]) -> None:
    """Refuses a request over the PS's limit before sending it: the PS refuses it from its
    header and closes the connection while the payload is still being sent, which the client
    would see as a lost connection (and retry) instead of the refusal."""
    wire.check_request_bytes(sum(a.nbytes for _, a in arrays))


def _host(address: str) -> str:
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") else host


class GrpcTcpTransport(GrpcTransport):
    """Client of PS shards at ``addresses``; pull and push over each shard's TCP data plane."""

    def __init__(self, addresses: Sequence[str], token: str, *,
                 root_certificates: bytes | None = None, **options: Any) -> None:
        super().__init__(addresses, token, root_certificates=root_certificates, **options)
        self._token = token
        self._root_certificates = root_certificates
        self._data: list[DataPlaneClient | None] = [None] * len(self.addresses)
        self._data_lock = threading.Lock()

    def _data_plane(self, shard: int) -> DataPlaneClient:
        with self._data_lock:
            client = self._data[shard]
        if client is not None:
            return client
        port = self._control_shard(shard, "data_plane", {}).get("port")
        if port is None:
            raise FailedPreconditionError(
                f"Expected shard {shard} ({self.addresses[shard]}) to serve the TCP data plane. "
                "Received: none; start herald-ps without --no-data-plane, or use the 'grpc' "
                "transport.")
        with self._data_lock:
            if self._data[shard] is None:
                self._data[shard] = DataPlaneClient(_host(self.addresses[shard]), int(port),
                                                    self._token, self._root_certificates)
            return self._data[shard]

    def _data_call(self, shard: int, kind: int, meta: dict[str, Any],
                   arrays: list[tuple[str, np.ndarray]], timeout: float | None,
                   last: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return self._on_data_plane(shard, lambda client: client.call(
            kind, meta, arrays, self._deadline(timeout), last=last))

    def _on_data_plane(self, shard: int, use: Callable[[DataPlaneClient], T]) -> T:
        """``use(shard's data-plane client)``; a lost connection makes the next call ask the
        shard for its data port again."""
        client = self._data_plane(shard)
        try:
            return use(client)
        except UnavailableError:
            # the shard may have restarted with a new data port: ask again on the next try
            with self._data_lock:
                if self._data[shard] is client:
                    self._data[shard] = None
            # no longer pooled: its idle sockets close now, those of calls in flight as they end
            client.retire()
            raise

    def _pull_shard(self, shard: int, table: str, keys: np.ndarray, have: np.ndarray | None,
                    need: np.ndarray | None, with_state: bool,
                    timeout: float | None, sink: ShardSink) -> None:
        arrays = [("keys", keys)]
        if have is not None:
            arrays.append(("have_versions", have))
        if need is not None:
            arrays.append(("min_versions", need))
        _check_size(arrays)
        self.counters.add(keys=keys.nbytes, control=sum(a.nbytes for _, a in arrays[1:]))

        def check(r: dict[str, np.ndarray], m: int) -> None:
            versions, positions, state = r.get("versions"), r.get("positions"), r.get("state")
            if versions is None or versions.shape[0] != m or (have is not None) != (
                    positions is not None) or with_state != (state is not None) or (
                    positions is not None and positions.shape[0] != m):
                raise UnavailableError(f"Expected a complete pull reply from shard {shard}. "
                                       f"Received: arrays {sorted(r)} for {m} rows")
            self.counters.add(pulled_rows=sum(a.nbytes for a in r.values()))

        def receive_values(r: dict[str, np.ndarray], sock: Any, name: str, dtype: np.dtype,
                           shape: tuple[int, ...]) -> None:
            # the values come last: straight into the pull's output, in request order
            check(r, shape[0])
            positions = r.get("positions")
            out, dest = sink.place(
                positions if positions is not None else np.arange(shape[0], dtype=np.int64),
                r.get("state"), r["versions"], shape[1])
            if out.shape[1] != shape[1] or dtype != out.dtype:
                raise UnavailableError(f"Expected rows of width {out.shape[1]} from shard "
                                       f"{shard}. Received: {shape[1]}")
            recv_rows_into(sock, out, dest)
            self.counters.add(pulled_rows=dtype.itemsize * shape[0] * shape[1])

        _, r = self._data_call(shard, PULL, {"table": table, "with_state": with_state,
                                        "timeout_s": timeout or 0.0}, arrays, timeout,
                          last=receive_values)
        if "values" in r:  # no rows: the empty arrays still tell the sink the widths
            check(r, r["values"].shape[0])
            sink((r.get("positions", np.arange(0, dtype=np.int64)), r["values"],
                  r.get("state"), r["versions"]))

    def push(self, step: int, rank: int, grads: Mapping[str, tuple[np.ndarray, np.ndarray]],
             learning_rates: Mapping[str, float], *, wait_applied: bool = False,
             timeout: float | None = None) -> Handle[int]:
        """A push in two phases over the data plane: each shard receives its part (gradients
        gathered while they are sent), checks it completely and answers; only when every shard
        accepted does any record it (``commit``), else every shard drops it. So the shards do
        the contents checks (finite gradients, distinct keys) that the ``grpc`` client makes
        before sending, and a part one shard refuses is still recorded by none."""
        per_shard: list[list[tuple[str, np.ndarray, GatheredRows, float]]] = [
            [] for _ in range(self.num_shards)]
        for table, k, g, lr, split in self._split_push(grads, learning_rates):
            for s, pos in enumerate(split):
                if pos.shape[0]:
                    per_shard[s].append((table, k[pos], GatheredRows(g, pos), lr))
        vote = _PushVote(len(per_shard))
        for shard, entries in enumerate(per_shard):
            self._pool.submit(self._prepare_and_vote, vote, shard, step, rank, entries,
                              wait_applied, timeout)
        return Handle([vote.result], lambda r: r[0])

    def _prepare_and_vote(self, vote: _PushVote, shard: int, step: int, rank: int,
                          entries: list[tuple[str, np.ndarray, GatheredRows, float]],
                          wait_applied: bool, timeout: float | None) -> None:
        try:
            prepared = self._attempt("push", lambda: self._prepare_push_shard(
                shard, step, rank, entries, wait_applied, timeout), idempotent=False)
        except Exception as e:  # noqa: BLE001 - the vote raises it to the caller
            vote.cast(None, e)
        else:
            vote.cast(prepared, None)

    def _prepare_push_shard(self, shard: int, step: int, rank: int,
                            entries: list[tuple[str, np.ndarray, GatheredRows, float]],
                            wait_applied: bool, timeout: float | None) -> PreparedPush:
        arrays: list[tuple[str, FrameArray]] = []
        for i, (_, keys, grads, _) in enumerate(entries):
            arrays += [(f"keys{i}", keys), (f"grads{i}", grads)]
        _check_size(arrays)
        self.counters.add(keys=sum(k.nbytes for _, k, _, _ in entries),
                          pushed_gradients=sum(g.nbytes for _, _, g, _ in entries))
        meta = {"step": step, "rank": rank, "wait_applied": wait_applied,
                "timeout_s": timeout or 0.0,
                "entries": [[table, lr] for table, _, _, lr in entries]}
        return self._on_data_plane(shard, lambda client: client.prepare_push(
            meta, arrays, self._deadline(timeout)))

    def _post_plans_shard(self, shard: int, step: int, plans: Mapping[int, bytes]) -> None:
        arrays = [(f"plan{i}", np.frombuffer(b, np.uint8)) for i, b in enumerate(plans.values())]
        _check_size(arrays)
        self._data_call(shard, POST_PLANS, {"step": step, "ranks": list(plans)}, arrays, None)
        # counted once it went through, as over gRPC: a retried post is counted once
        self.counters.add(plans=sum(len(b) for b in plans.values()))

    def _take_plans_shard(self, shard: int, step: int, rank: int, wait_s: float,
                          max_plans: int) -> list[bytes]:
        _, r = self._data_call(shard, TAKE_PLANS, {"step": step, "rank": rank, "wait_s": wait_s,
                                                   "max_plans": max_plans}, [], wait_s)
        plans = [r[f"plan{i}"].tobytes() for i in range(len(r))]
        self.counters.add(plans=sum(len(b) for b in plans))
        return plans

    def close(self) -> None:
        with self._data_lock:
            clients, self._data = self._data, [None] * len(self.addresses)
        for c in clients:
            if c is not None:
                c.close()
        super().close()


class _PushVote:
    """Collects every shard's answer to the first phase of one push; the shard task that brings
    the last answer sends all of them the decision and sets ``result`` (the applied step, or the
    first error). No thread waits for the others, so pushes of several ranks sharing a transport
    (each waiting for the others' with ``wait_applied``) cannot block one another."""

    def __init__(self, shards: int) -> None:
        self.result: Future = Future()
        self._left = shards
        self._lock = threading.Lock()
        self._prepared: list[PreparedPush] = []
        self._errors: list[BaseException] = []

    def cast(self, prepared: PreparedPush | None, error: BaseException | None) -> None:
        """One shard's answer: its prepared part, or the error that refused (or lost) it."""
        with self._lock:
            if prepared is not None:
                self._prepared.append(prepared)
            if error is not None:
                self._errors.append(error)
            self._left -= 1
            if self._left:
                return
        commit = not self._errors
        deciding = []
        for p in self._prepared:
            try:
                p.decide(commit)
                deciding.append(p)
            except Exception as e:  # noqa: BLE001 - raised through result below
                self._errors.append(e)
        applied = []
        for p in deciding:
            try:
                applied.append(int(p.outcome().get("applied_step", -1)))
            except Exception as e:  # noqa: BLE001
                self._errors.append(e)
        if self._errors:
            self.result.set_exception(self._errors[0])
        else:
            self.result.set_result(min(applied))
