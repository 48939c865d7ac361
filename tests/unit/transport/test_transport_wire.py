"""Raw-bytes encoding and chunking of the wire format."""

from __future__ import annotations

import numpy as np
import pytest

from herald_tf.errors import InvalidArgumentError
from herald_tf.transport import wire


def test_round_trip_and_row_width() -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(wire.from_bytes(wire.to_bytes(a), np.float32, "rows", 3), a)
    assert wire.to_bytes(None) == b""


def test_refuses_a_length_that_is_not_whole_rows() -> None:
    with pytest.raises(InvalidArgumentError, match="12-byte rows"):
        wire.from_bytes(b"\0" * 16, np.float32, "rows", 3)


def test_row_ranges_cover_all_rows_within_the_chunk_size() -> None:
    ranges = list(wire.row_ranges(10, 100, 350))
    assert ranges == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(wire.row_ranges(0, 8, 100)) == [(0, 0)]
    assert list(wire.row_ranges(5, 1000, 10)) == [(i, i + 1) for i in range(5)]


def test_a_streamed_request_over_the_limit_is_refused_once_it_exceeds_it():
    chunks = [b"x" * 40, b"y" * 40, b"z" * 40]
    seen = []
    with pytest.raises(InvalidArgumentError, match="at most 100 bytes"):
        for c in wire.bounded(iter(chunks), len, limit=100):
            seen.append(c)
    assert seen == chunks[:2]
    assert list(wire.bounded(iter(chunks), len, limit=120)) == chunks
