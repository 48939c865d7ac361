"""The one place transports are made: ``make_transport(kind, ...)`` with a fault-injection switch.

Kinds: ``grpc`` (default; ``addresses`` and ``token`` required), ``grpc+tcp`` (the same, with
pull and push over the PS's TCP data plane, faster for large requests: see tcp_data.py) and
``local`` (in-process ``ShardStore`` objects). ``rdma`` is reserved for the pyverbs data path
(not implemented: it raises ``NotImplementedError`` naming the missing piece).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from herald_tf.transport.types import FaultInjection, Transport

KINDS = ("grpc", "grpc+tcp", "local", "rdma")


def make_transport(kind: str = "grpc", *, addresses: Sequence[str] | None = None,
                   token: str | None = None, stores: Sequence[Any] | None = None,
                   faults: FaultInjection | None = None, **options: Any) -> Transport:
    """A transport of ``kind``; ``faults`` drops requests for fault tests (see FaultInjection).

    ``options`` go to the implementation (gRPC: root_certificates, timeout_s, chunk_bytes,
    retries; local: checkpoint_dir).
    """
    if kind in ("grpc", "grpc+tcp"):
        from herald_tf.transport.grpc_client import GrpcTransport  # noqa: PLC0415
        from herald_tf.transport.grpc_tcp_client import GrpcTcpTransport  # noqa: PLC0415

        if not addresses or not token:
            raise ValueError(f"Expected addresses and a token for the {kind} transport. "
                             f"Received: addresses={addresses!r}, "
                             f"token={'set' if token else 'missing'}")
        cls = GrpcTransport if kind == "grpc" else GrpcTcpTransport
        return cls(addresses, token, faults=faults, **options)
    if kind == "local":
        from herald_tf.transport.local import LocalTransport  # noqa: PLC0415

        if not stores:
            raise ValueError("Expected ShardStore objects for the local transport. Received: none")
        return LocalTransport(stores, faults=faults, **options)
    if kind == "rdma":
        raise NotImplementedError(
            "The RDMA (pyverbs) transport is not implemented yet; use kind='grpc'.")
    raise ValueError(f"Expected a transport kind in {KINDS}. Received: kind={kind!r}")
