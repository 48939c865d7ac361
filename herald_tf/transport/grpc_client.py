"""gRPC implementation of the ``Transport`` (one channel per shard, raw-bytes chunked messages).

Each request carries the cluster token in its metadata; TLS is used when root certificates are
given. gRPC deadlines are the caller's timeout plus a margin over the server-side wait, so a
server's ``DeadlineExceededError`` (naming the missing ranks) arrives before the channel's own.
Byte counters count the bytes fields actually put into / read from the messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from herald_tf.errors import HeraldError
from herald_tf.ps.errors import ERROR_BY_GRPC_CODE, PsError
from herald_tf.transport import codec, wire
from herald_tf.transport import herald_ps_pb2 as pb
from herald_tf.transport import herald_ps_pb2_grpc as pb_grpc
from herald_tf.transport.grpc_server import SERVICE, TOKEN_METADATA
from herald_tf.transport.sharded import PullPart, ShardedTransport
from herald_tf.transport.types import FaultInjection

DEFAULT_TIMEOUT_S = 120.0
DEADLINE_MARGIN_S = 10.0


def _error(e: grpc.RpcError) -> HeraldError:
    code = e.code().name if hasattr(e, "code") and e.code() is not None else "UNKNOWN"
    details = e.details() if hasattr(e, "details") else str(e)
    cls = ERROR_BY_GRPC_CODE.get(code, PsError)
    if code == "DEADLINE_EXCEEDED" and "waited" not in (details or "") and \
            "still waits" not in (details or ""):
        details = f"gRPC deadline exceeded: {details}"
    return cls(details or code)


class GrpcTransport(ShardedTransport):
    """Client of PS shards at ``addresses`` ("host:port", shard i at addresses[i])."""

    def __init__(self, addresses: Sequence[str], token: str, *,
                 root_certificates: bytes | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
                 faults: FaultInjection | None = None, retries: int = 3) -> None:
        super().__init__(len(addresses), faults=faults, retries=retries)
        self.addresses = list(addresses)
        self._metadata = ((TOKEN_METADATA, token),)
        self._timeout_s = timeout_s
        self._chunk_bytes = chunk_bytes
        self._channels = []
        self._stubs = []
        self._pulls = []
        self._pushes = []
        for address in self.addresses:
            if root_certificates is not None:
                creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
                channel = grpc.secure_channel(address, creds, options=wire.GRPC_OPTIONS)
            else:
                channel = grpc.insecure_channel(address, options=wire.GRPC_OPTIONS)
            self._channels.append(channel)
            self._stubs.append(pb_grpc.ParameterServerStub(channel))
            self._pulls.append(channel.stream_stream(
                f"/{SERVICE}/Pull", request_serializer=pb.PullRequest.SerializeToString,
                response_deserializer=codec.decode_pull_reply))
            self._pushes.append(channel.stream_unary(
                f"/{SERVICE}/Push", request_serializer=codec.identity,
                response_deserializer=pb.PushReply.FromString))

    def _deadline(self, timeout: float | None) -> float:
        return (self._timeout_s if timeout is None else timeout) + DEADLINE_MARGIN_S

    def _call(self, fn: Any, request: Any, timeout: float | None) -> Any:
        try:
            return fn(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise _error(e) from None

    def _count_sent(self, msg: Any, **kinds: int) -> Any:
        self.counters.add(**kinds)
        return msg

    def _pull_shard(self, shard: int, table: str, keys: np.ndarray, have: np.ndarray | None,
                    need: np.ndarray | None, with_state: bool,
                    timeout: float | None, sink: Callable[[PullPart], None]) -> None:
        row_bytes = 8 * (1 + (have is not None) + (need is not None))

        def requests() -> Iterator[pb.PullRequest]:
            for b, e in wire.row_ranges(keys.shape[0], row_bytes, self._chunk_bytes):
                k = wire.to_bytes(keys[b:e])
                h = wire.to_bytes(None if have is None else have[b:e])
                m = wire.to_bytes(None if need is None else need[b:e])
                yield self._count_sent(
                    pb.PullRequest(table=table, keys=k, have_versions=h, min_versions=m,
                                   with_state=with_state, timeout_s=timeout or 0.0),
                    keys=len(k), control=len(h) + len(m))

        begin = 0
        try:
            for r in self._pulls[shard](requests(), timeout=self._deadline(timeout),
                                        metadata=self._metadata):
                self.counters.add(pulled_rows=len(r.positions) + len(r.values) + len(r.state)
                                  + len(r.versions))
                versions = wire.from_bytes(r.versions, np.int64, "versions")
                m = versions.shape[0]
                # no positions: every row was returned, in request order
                positions = wire.from_bytes(r.positions, np.int64, "positions") \
                    if have is not None else np.arange(begin, begin + m, dtype=np.int64)
                begin += m
                values = wire.from_bytes(r.values, np.float32, "values", r.dim)
                state = None
                if with_state:
                    state = wire.from_bytes(r.state, np.float32, "state", r.state_width) \
                        if r.state_width else np.zeros((m, 0), np.float32)
                sink((positions, values, state, versions))
        except grpc.RpcError as e:
            raise _error(e) from None

    def _push_shard(self, shard: int, step: int, rank: int,
                    entries: list[tuple[str, np.ndarray, np.ndarray, float]],
                    wait_applied: bool, timeout: float | None) -> int:
        def requests() -> Iterator[bytes]:
            t = timeout or 0.0
            if not entries:
                yield codec.encode_push_request(step, rank, "", 0.0, b"", b"", wait_applied, t)
            for table, keys, grads, lr in entries:
                row_bytes = 8 + 4 * grads.shape[1]
                for b, e in wire.row_ranges(keys.shape[0], row_bytes, self._chunk_bytes):
                    k, g = keys[b:e], grads[b:e]
                    self.counters.add(keys=k.nbytes, pushed_gradients=g.nbytes)
                    yield codec.encode_push_request(step, rank, table, lr, k, g, wait_applied, t)

        reply = self._call(self._pushes[shard], requests(), timeout)
        return int(reply.applied_step)

    def _flush_shard(self, shard: int, table: str, keys: np.ndarray, values: np.ndarray,
                     state: np.ndarray | None, versions: np.ndarray) -> None:
        row_bytes = 16 + 4 * values.shape[1] + (4 * state.shape[1] if state is not None else 0)

        def requests() -> Iterator[pb.FlushRequest]:
            for b, e in wire.row_ranges(keys.shape[0], row_bytes, self._chunk_bytes):
                k = wire.to_bytes(keys[b:e])
                v = wire.to_bytes(values[b:e])
                s = wire.to_bytes(None if state is None else state[b:e])
                ver = wire.to_bytes(versions[b:e])
                yield self._count_sent(
                    pb.FlushRequest(table=table, keys=k, values=v, state=s, versions=ver),
                    keys=len(k), flushed_rows=len(v) + len(s) + len(ver))

        self._call(self._stubs[shard].Flush, requests(), None)

    def _versions_shard(self, shard: int, table: str, keys: np.ndarray) -> np.ndarray:
        def requests() -> Iterator[pb.VersionsRequest]:
            for b, e in wire.row_ranges(keys.shape[0], 8, self._chunk_bytes):
                k = wire.to_bytes(keys[b:e])
                yield self._count_sent(pb.VersionsRequest(table=table, keys=k), keys=len(k))

        reply = self._call(self._stubs[shard].Versions, requests(), None)
        self.counters.add(control=len(reply.versions))
        return wire.from_bytes(reply.versions, np.int64, "versions").copy()

    def _control_shard(self, shard: int, op: str, args: Mapping[str, Any]) -> Any:
        payload = json.dumps(dict(args))
        request = self._count_sent(pb.ControlRequest(op=op, json=payload),
                                   control=len(op.encode()) + len(payload.encode()))
        timeout = args.get("timeout_s")
        reply = self._call(self._stubs[shard].Control, request, timeout)
        self.counters.add(control=len(reply.json.encode()))
        return json.loads(reply.json)

    def _post_plans_shard(self, shard: int, step: int, plans: Mapping[int, bytes]) -> None:
        # one message per group of plans under gRPC's message limit
        groups: list[list[int]] = []
        size = 0
        for rank, blob in plans.items():
            if not groups or size + len(blob) > wire.MAX_MESSAGE_BYTES // 2:
                groups.append([])
                size = 0
            groups[-1].append(rank)
            size += len(blob)
        for ranks in groups:
            request = pb.PlanPost(step=step, ranks=ranks, plans=[plans[r] for r in ranks])
            self._call(self._stubs[shard].PostPlans, request, None)
            self.counters.add(plans=sum(len(plans[r]) for r in ranks))

    def _take_plans_shard(self, shard: int, step: int, rank: int, wait_s: float,
                          max_plans: int) -> list[bytes]:
        reply = self._call(self._stubs[shard].TakePlans, pb.PlanTake(
            step=step, rank=rank, wait_s=wait_s, max_plans=max_plans), wait_s)
        plans = list(reply.plans)
        self.counters.add(plans=sum(len(b) for b in plans))
        return plans

    def close(self) -> None:
        super().close()
        for channel in self._channels:
            channel.close()
