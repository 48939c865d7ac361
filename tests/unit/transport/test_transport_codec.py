"""codec.py writes exactly the protobuf encoding of the .proto messages, and reads it back."""

from __future__ import annotations

import numpy as np
import pytest

from herald_tf.errors import InvalidArgumentError
from herald_tf.transport import codec
from herald_tf.transport import herald_ps_pb2 as pb


def test_pull_reply_matches_generated_class_both_ways() -> None:
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = np.array([0, 2, 5], np.int64)
    st = np.ones((3, 8), np.float32)
    encoded = codec.encode_pull_reply(p, v, st, p, 4, 8)
    ref = pb.PullReply(positions=p.tobytes(), values=v.tobytes(), state=st.tobytes(),
                       versions=p.tobytes(), dim=4, state_width=8)
    assert encoded == ref.SerializeToString()
    d = codec.decode_pull_reply(ref.SerializeToString())
    np.testing.assert_array_equal(np.frombuffer(d.values, np.float32).reshape(3, 4), v)
    assert (d.dim, d.state_width, bytes(d.positions)) == (4, 8, p.tobytes())
    assert codec.decode_pull_reply(b"") == codec.PullReplyView()


@pytest.mark.parametrize("step,rank,table,lr,wait,timeout", [
    (3, 1, "emb", 0.25, True, 7.5), (0, 0, "", 0.0, False, 0.0), (2**40, 7, "t", 1e-3, False, 0),
    (-1, -2, "x", 0.1, False, 0.0)])
def test_push_request_matches_generated_class_both_ways(step: int, rank: int, table: str,
                                                        lr: float, wait: bool,
                                                        timeout: float) -> None:
    k = np.arange(5, dtype=np.int64)
    g = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    ref = pb.PushRequest(step=step, rank=rank, table=table, learning_rate=lr, keys=k.tobytes(),
                         grads=g.tobytes(), wait_applied=wait, timeout_s=timeout)
    assert codec.encode_push_request(step, rank, table, lr, k, g, wait, timeout) == \
        ref.SerializeToString()
    d = codec.decode_push_request(ref.SerializeToString())
    assert (d.step, d.rank, d.table, d.wait_applied, d.timeout_s) == (step, rank, table, wait,
                                                                      timeout)
    assert d.learning_rate == np.float32(lr)
    np.testing.assert_array_equal(np.frombuffer(d.grads, np.float32).reshape(5, 3), g)


def test_truncated_message_is_refused() -> None:
    encoded = codec.encode_push_request(1, 0, "t", 0.1, np.arange(4, dtype=np.int64), b"",
                                        False, 0.0)
    with pytest.raises(InvalidArgumentError, match="truncated"):
        codec.decode_push_request(encoded[:-3])
