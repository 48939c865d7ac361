"""gRPC service over a ``ShardStore``: the PS process's server, also usable inside a worker.

``serve()`` binds to the configured address (loopback by default), requires the cluster token on
every call (``x-herald-token`` metadata, compared in constant time by an interceptor), optionally
with TLS, and reports the port it bound (useful with port 0). Each RPC decodes raw-bytes chunks,
calls the store, and maps errors to gRPC status codes with the store's message, so one bad
request fails only its caller and changes nothing. Next to it, unless ``data_port`` is None, it
serves the TCP data plane for pull and push (tcp_data.py; same address, token and TLS), whose
port clients learn with the control op ``data_plane``.
"""

from __future__ import annotations

import hmac
import json
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from herald_tf.config import TableConfig
from herald_tf.errors import HeraldError, InvalidArgumentError
from herald_tf.ps import checkpoint
from herald_tf.ps.errors import grpc_code_of
from herald_tf.ps.store import PushEntry, ShardStore
from herald_tf.transport import codec, wire
from herald_tf.transport import herald_ps_pb2 as pb
from herald_tf.transport import herald_ps_pb2_grpc as pb_grpc
from herald_tf.transport.tcp_data import DataPlaneServer

TOKEN_METADATA = "x-herald-token"
SERVICE = "herald.ps.ParameterServer"


class _TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call whose token differs from the cluster's (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def intercept_service(self, continuation: Callable, details: Any) -> Any:
        presented = b""
        for key, value in details.invocation_metadata or ():
            if key == TOKEN_METADATA:
                presented = value.encode() if isinstance(value, str) else value
        handler = continuation(details)
        if hmac.compare_digest(presented, self._token) or handler is None:
            return handler

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "Expected the cluster token in the call metadata. Received: a missing "
                          "or wrong token; pass the token the PS was started with.")

        def deny_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            deny(request, context)
            yield from ()

        kind = (handler.request_streaming, handler.response_streaming)
        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[kind]
        return make(deny_stream if kind[1] else deny)


def _abort(context: grpc.ServicerContext, store: ShardStore, error: BaseException) -> None:
    store.count_error()
    code = grpc_code_of(error)
    message = str(error) if isinstance(error, HeraldError) else f"{type(error).__name__}: {error}"
    context.abort(getattr(grpc.StatusCode, code), message)


class ParameterServerServicer(pb_grpc.ParameterServerServicer):
    """Serves one ``ShardStore`` (and its checkpoints under ``checkpoint_dir``)."""

    def __init__(self, store: ShardStore, checkpoint_dir: str | None = None,
                 chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
                 data_port: int | None = None) -> None:
        self.store = store
        self.checkpoint_dir = checkpoint_dir
        self.chunk_bytes = chunk_bytes
        self.data_port = data_port  # port of the TCP data plane, None when not served

    def _dims(self, table: str) -> tuple[int, int]:
        t = self.store._table(table)
        return t.dim, t.state_width

    def Pull(self, request_iterator: Iterator[pb.PullRequest],
             context: grpc.ServicerContext) -> Iterator[bytes]:
        """Streams the rows (encoded PullReply messages, see codec.py)."""
        try:
            first = None
            keys, have, need = [], [], []
            for req in wire.bounded(request_iterator, lambda r: len(r.keys)
                                    + len(r.have_versions) + len(r.min_versions)):
                if first is None:
                    first = req
                keys.append(req.keys)
                have.append(req.have_versions)
                need.append(req.min_versions)
            if first is None:
                raise InvalidArgumentError("Expected at least one pull request chunk.")
            k = wire.from_bytes(wire.join(keys), np.int64, "keys")
            h = wire.join(have)
            m = wire.join(need)
            result = self.store.pull(
                first.table, k,
                have_versions=wire.from_bytes(h, np.int64, "have_versions") if h else None,
                min_versions=wire.from_bytes(m, np.int64, "min_versions") if m else None,
                with_state=first.with_state, timeout=first.timeout_s or None)
            dim, width = self._dims(first.table)
        except Exception as e:  # noqa: BLE001 - every error goes back to this caller only
            _abort(context, self.store, e)
            return
        n = result.positions.shape[0]
        filtered = bool(h)  # positions travel only when have_versions may have skipped rows
        row_bytes = 4 * dim + 8 + 8 * filtered + (4 * width if result.state is not None else 0)
        for b, e in wire.row_ranges(n, row_bytes, self.chunk_bytes):
            yield codec.encode_pull_reply(
                result.positions[b:e] if filtered else b"", result.values[b:e],
                result.state[b:e] if result.state is not None else b"",
                result.versions[b:e], dim, width)

    def Push(self, request_iterator: Iterator[codec.PushRequestView],
             context: grpc.ServicerContext) -> pb.PushReply:
        try:
            first = None
            entries = []
            for req in wire.bounded(request_iterator, lambda r: len(r.keys) + len(r.grads)):
                if first is None:
                    first = req
                if req.step != first.step or req.rank != first.rank:
                    raise InvalidArgumentError(
                        f"Expected one step and rank per push. Received: chunks of step "
                        f"{first.step}/rank {first.rank} and step {req.step}/rank {req.rank}")
                if not req.table:
                    # an empty push is one chunk with no table and no rows (the client's
                    # placeholder); rows without a table would be silently dropped
                    if len(req.keys) or len(req.grads):
                        raise InvalidArgumentError(
                            f"Expected a table name in a push chunk with keys or gradients. "
                            f"Received: no table, {len(req.keys)} key bytes and "
                            f"{len(req.grads)} gradient bytes")
                    continue
                dim, _ = self._dims(req.table)
                keys = wire.from_bytes(req.keys, np.int64, f"keys of table '{req.table}'")
                if len(req.grads) != 4 * dim * keys.shape[0]:
                    raise InvalidArgumentError(
                        f"Expected gradients of table '{req.table}' with shape "
                        f"({keys.shape[0]}, {dim}) float32 ({4 * dim * keys.shape[0]} bytes). "
                        f"Received: {len(req.grads)} bytes")
                # each chunk stays a zero-copy view of its message (no join of the payload)
                entries.append(PushEntry(
                    req.table, keys, wire.from_bytes(req.grads, np.float32, "gradients", dim),
                    req.learning_rate))
            if first is None:
                raise InvalidArgumentError("Expected at least one push request chunk.")
            applied = self.store.push(first.step, first.rank, entries,
                                      wait_applied=first.wait_applied,
                                      timeout=first.timeout_s or None)
            return pb.PushReply(applied_step=applied)
        except Exception as e:  # noqa: BLE001
            _abort(context, self.store, e)

    def Flush(self, request_iterator: Iterator[pb.FlushRequest],
              context: grpc.ServicerContext) -> pb.FlushReply:
        try:
            first = None
            parts: dict[str, list[bytes]] = {"keys": [], "values": [], "state": [],
                                             "versions": []}
            for req in wire.bounded(request_iterator, lambda r: len(r.keys) + len(r.values)
                                    + len(r.state) + len(r.versions)):
                if first is None:
                    first = req
                for name, lst in parts.items():
                    lst.append(getattr(req, name))
            if first is None:
                raise InvalidArgumentError("Expected at least one flush request chunk.")
            dim, width = self._dims(first.table)
            state = wire.join(parts["state"])
            self.store.flush(
                first.table, wire.from_bytes(wire.join(parts["keys"]), np.int64, "keys"),
                wire.from_bytes(wire.join(parts["values"]), np.float32, "flushed values", dim),
                wire.from_bytes(state, np.float32, "flushed state", width) if width else None,
                wire.from_bytes(wire.join(parts["versions"]), np.int64, "flushed versions"))
            return pb.FlushReply()
        except Exception as e:  # noqa: BLE001
            _abort(context, self.store, e)

    def Versions(self, request_iterator: Iterator[pb.VersionsRequest],
                 context: grpc.ServicerContext) -> pb.VersionsReply:
        try:
            first = None
            keys = []
            for req in wire.bounded(request_iterator, lambda r: len(r.keys)):
                if first is None:
                    first = req
                keys.append(req.keys)
            if first is None:
                raise InvalidArgumentError("Expected at least one versions request chunk.")
            v = self.store.versions(first.table,
                                    wire.from_bytes(wire.join(keys), np.int64, "keys"))
            return pb.VersionsReply(versions=wire.to_bytes(v))
        except Exception as e:  # noqa: BLE001
            _abort(context, self.store, e)

    def PostPlans(self, request: pb.PlanPost,
                  context: grpc.ServicerContext) -> pb.PlanPostReply:
        try:
            self.store.post_plans(request.step, list(request.ranks), list(request.plans))
            return pb.PlanPostReply()
        except Exception as e:  # noqa: BLE001
            _abort(context, self.store, e)

    def TakePlans(self, request: pb.PlanTake,
                  context: grpc.ServicerContext) -> pb.PlanTakeReply:
        try:
            return pb.PlanTakeReply(plans=self.store.plans.take(
                request.step, request.rank, request.wait_s, request.max_plans))
        except Exception as e:  # noqa: BLE001
            _abort(context, self.store, e)

    def Control(self, request: pb.ControlRequest,
                context: grpc.ServicerContext) -> pb.ControlReply:
        try:
            args = json.loads(request.json) if request.json else {}
            result = self.control(request.op, args)
            return pb.ControlReply(json=json.dumps(result))
        except Exception as e:  # noqa: BLE001
            _abort(context, self.store, e)

    def control(self, op: str, args: dict[str, Any]) -> Any:
        """Runs one control op (connect, health, stats, data_plane, checkpoint, commit, restore)."""
        store = self.store
        if op == "data_plane":
            return {"port": self.data_port}
        if op == "connect":
            tables = [TableConfig.from_dict(d) for d in args.get("tables", [])]
            return store.connect(tables, args.get("num_workers"), args.get("rank"))
        if op == "health":
            return store.health()
        if op == "stats":
            return store.stats()
        if op in ("checkpoint", "commit", "restore"):
            directory = args.get("directory") or self.checkpoint_dir
            if self.checkpoint_dir and os.path.abspath(directory) != \
                    os.path.abspath(self.checkpoint_dir):
                # a caller must not make the server write or read files elsewhere
                raise InvalidArgumentError(
                    f"Expected this PS's checkpoint directory {self.checkpoint_dir} (or none). "
                    f"Received: directory={directory!r}")
            if not directory:
                raise InvalidArgumentError(
                    "Expected a checkpoint directory. Received: none; start the PS with "
                    "--checkpoint-dir or pass one.")
            if op == "checkpoint":
                return {"file": checkpoint.write_shard(store, directory, int(args["step"]),
                                                       args.get("timeout_s"))}
            if op == "commit":
                return {"manifest": checkpoint.commit(
                    directory, int(args["step"]), store.num_shards,
                    [t.config.to_dict() for _, t in sorted(store.tables.items())],
                    store.num_workers)}
            return {"step": checkpoint.restore(store, directory, args.get("step"))}
        raise InvalidArgumentError(
            "Expected a control op in {connect, health, stats, data_plane, checkpoint, commit, "
            "restore}. "
            f"Received: op={op!r}")


def handlers(servicer: ParameterServerServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers: generated message classes, codec.py for the bulk ones."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Pull": grpc.stream_stream_rpc_method_handler(
            servicer.Pull, request_deserializer=pb.PullRequest.FromString,
            response_serializer=codec.identity),
        "Push": grpc.stream_unary_rpc_method_handler(
            servicer.Push, request_deserializer=codec.decode_push_request,
            response_serializer=pb.PushReply.SerializeToString),
        "Flush": grpc.stream_unary_rpc_method_handler(
            servicer.Flush, request_deserializer=pb.FlushRequest.FromString,
            response_serializer=pb.FlushReply.SerializeToString),
        "Versions": grpc.stream_unary_rpc_method_handler(
            servicer.Versions, request_deserializer=pb.VersionsRequest.FromString,
            response_serializer=pb.VersionsReply.SerializeToString),
        "Control": grpc.unary_unary_rpc_method_handler(
            servicer.Control, request_deserializer=pb.ControlRequest.FromString,
            response_serializer=pb.ControlReply.SerializeToString),
        "PostPlans": grpc.unary_unary_rpc_method_handler(
            servicer.PostPlans, request_deserializer=pb.PlanPost.FromString,
            response_serializer=pb.PlanPostReply.SerializeToString),
        "TakePlans": grpc.unary_unary_rpc_method_handler(
            servicer.TakePlans, request_deserializer=pb.PlanTake.FromString,
            response_serializer=pb.PlanTakeReply.SerializeToString),
    })


class PsServer:
    """A running PS service: the gRPC server and, when served, the TCP data plane."""

    def __init__(self, server: grpc.Server, data_plane: DataPlaneServer | None) -> None:
        self.grpc_server = server
        self.data_plane = data_plane

    @property
    def data_port(self) -> int | None:
        """Port of the TCP data plane (None when not served)."""
        return self.data_plane.port if self.data_plane is not None else None

    def stop(self, grace: float | None) -> threading.Event:
        """Stops both; returns gRPC's event that is set once its calls have ended."""
        if self.data_plane is not None:
            self.data_plane.stop()
        return self.grpc_server.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)


def serve(store: ShardStore, token: str, address: str = "127.0.0.1", port: int = 0,
          checkpoint_dir: str | None = None, tls_cert: str | None = None,
          tls_key: str | None = None, max_threads: int = 32,
          chunk_bytes: int = wire.DEFAULT_CHUNK_BYTES,
          data_port: int | None = 0) -> tuple[PsServer, int]:
    """Starts the service for ``store``; returns (server, bound gRPC port). Stop: server.stop().

    ``data_port``: port of the TCP data plane for pull and push (0 picks a free one; None
    serves none, so only the ``grpc`` transport kind works).
    """
    if not token:
        raise InvalidArgumentError("Expected a non-empty cluster token. Received: ''")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads,
                                                    thread_name_prefix="herald-ps"),
                         interceptors=[_TokenInterceptor(token)], options=wire.GRPC_OPTIONS)
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    ssl_context = None
    if tls_cert or tls_key:
        with open(tls_key, "rb") as f:
            key = f.read()
        with open(tls_cert, "rb") as f:
            cert = f.read()
        bound = server.add_secure_port(target, grpc.ssl_server_credentials([(key, cert)]))
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls_cert, tls_key)
    else:
        bound = server.add_insecure_port(target)
    if bound == 0:
        raise OSError(f"herald-ps could not bind {target}")
    data_plane = None
    if data_port is not None:
        data_plane = DataPlaneServer(store, token, address, data_port, ssl_context).start()
    server.add_generic_rpc_handlers((handlers(ParameterServerServicer(
        store, checkpoint_dir, chunk_bytes,
        data_plane.port if data_plane is not None else None)),))
    server.start()
    return PsServer(server, data_plane), bound


def write_port_file(path: str, port: int) -> None:
    """Writes the bound port to ``path`` atomically (temp + rename), for launchers and tests."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)
