"""gRPC specifics: token refusal, chunking, raised message limits, TLS, loopback binding,
malformed push chunks."""

from __future__ import annotations

import numpy as np
import pytest

from herald_tf.config import TableConfig
from herald_tf.errors import InvalidArgumentError
from herald_tf.ps.errors import UnauthenticatedError
from herald_tf.transport import codec, make_transport
from herald_tf.transport.grpc_client import GrpcTransport

TOKEN = "test-token"  # the token the grpc_shards fixture serves with

CFG = TableConfig("emb", 64, seed=1)


def test_wrong_or_missing_token_is_refused_on_every_call(grpc_shards) -> None:
    stores, addresses = grpc_shards(2)
    bad = make_transport("grpc", addresses=addresses, token="not-the-token", retries=0)
    try:
        with pytest.raises(UnauthenticatedError, match="token"):
            bad.connect([CFG], num_workers=1)
        with pytest.raises(UnauthenticatedError):
            bad.pull("emb", np.arange(3, dtype=np.int64)).wait()
        with pytest.raises(UnauthenticatedError):
            bad.push(0, 0, {}, {}).wait()
    finally:
        bad.close()
    assert all(not s.tables for s in stores)
    assert all(s.stats()["errors"] == 0 for s in stores)  # refused before reaching the store


def test_large_requests_are_chunked_and_match_unchunked(grpc_shards) -> None:
    _, addresses = grpc_shards(2)
    small = GrpcTransport(addresses, TOKEN, chunk_bytes=64 << 10)
    big = GrpcTransport(addresses, TOKEN)
    try:
        small.connect([CFG], num_workers=1)
        keys = np.arange(40_000, dtype=np.int64)  # 10 MB of rows: over gRPC's 4 MB default
        g = np.random.default_rng(0).normal(size=(40_000, 64)).astype(np.float32)
        small.push(0, 0, {"emb": (keys, g)}, {"emb": 0.1}, wait_applied=True, timeout=30).wait()
        a = small.pull("emb", keys).wait()
        b = big.pull("emb", keys).wait()
        np.testing.assert_array_equal(a.values, b.values)
        assert (a.versions == 1).all()
        assert small.byte_counts()["pulled_rows"] == a.values.nbytes + a.versions.nbytes
    finally:
        small.close()
        big.close()


def test_tls_round_trip(grpc_shards, tls_files) -> None:
    key, cert = tls_files
    _, addresses = grpc_shards(1, tls_cert=str(cert), tls_key=str(key))
    t = GrpcTransport(addresses, TOKEN, root_certificates=cert.read_bytes())
    try:
        assert t.connect([CFG], num_workers=1)[0]["ok"]
        assert t.pull("emb", np.arange(5, dtype=np.int64)).wait().values.shape == (5, 64)
    finally:
        t.close()


def test_a_push_chunk_with_rows_but_no_table_is_refused(grpc_shards) -> None:
    stores, addresses = grpc_shards(1)
    t = GrpcTransport(addresses, TOKEN)
    try:
        t.connect([CFG], num_workers=1)
        keys = np.arange(3, dtype=np.int64)
        chunk = codec.encode_push_request(0, 0, "", 0.1, keys, np.ones((3, 64), np.float32),
                                          False, 0.0)
        with pytest.raises(InvalidArgumentError, match="table name in a push chunk"):
            t._call(t._pushes[0], iter([chunk]), 10)
        assert stores[0].applied_step == -1 and stores[0].stats()["push_requests"] == 0
        assert stores[0].stats()["errors"] == 1
        assert t.push(0, 0, {}, {}).wait() == 0  # an empty push (no table, no rows) is one
    finally:
        t.close()
