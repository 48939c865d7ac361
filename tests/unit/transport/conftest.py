"""Fixtures: in-process shards behind a LocalTransport or an in-process gRPC server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

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


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """(key, cert) PEM files of a self-signed certificate for localhost / 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert
