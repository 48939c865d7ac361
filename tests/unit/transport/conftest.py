"""Fixtures: in-process shards behind a LocalTransport or an in-process gRPC server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from herald_tf.ps.store import ShardStore
from herald_tf.transport import Transport, make_transport
from herald_tf.transport.grpc_server import serve

TOKEN = "test-token"


@pytest.fixture
def grpc_shards() -> Iterator[Callable[..., tuple[list[ShardStore], list[str]]]]:
    """Factory: ``grpc_shards(n)`` → (stores, addresses) served in this process on port 0."""
    servers = []

    def make(n: int, **kw: object) -> tuple[list[ShardStore], list[str]]:
        stores = [ShardStore(i, n) for i in range(n)]
        addresses = []
        for s in stores:
            server, port = serve(s, TOKEN, port=0, **kw)
            servers.append(server)
            addresses.append(f"127.0.0.1:{port}")
        return stores, addresses

    yield make
    for server in servers:
        server.stop(grace=None)


@pytest.fixture(params=["local", "grpc", "grpc+tcp"])
def transport_factory(request: pytest.FixtureRequest,
                      grpc_shards: Callable) -> Iterator[Callable[..., Transport]]:
    """Factory: ``transport_factory(n, **options)`` → a transport of the parametrized kind."""
    made: list[Transport] = []

    def make(n: int, **options: object) -> Transport:
        if request.param == "local":
            t = make_transport("local", stores=[ShardStore(i, n) for i in range(n)], **options)
        else:
            _, addresses = grpc_shards(n)
            t = make_transport(request.param, addresses=addresses, token=TOKEN, **options)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()
