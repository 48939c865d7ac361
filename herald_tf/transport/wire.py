"""Byte encoding of arrays on the wire and the chunking of large messages (shared by both ends).

Arrays travel as raw little-endian bytes (int64 keys/versions/positions, float32 rows). A message
stays under ``chunk_bytes`` by splitting rows into consecutive ranges; gRPC's own limit is raised
on both ends to ``MAX_MESSAGE_BYTES`` so a chunk never hits it (DESIGN §4a).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np

from herald_tf.errors import InvalidArgumentError

DEFAULT_CHUNK_BYTES = 4 << 20
MAX_MESSAGE_BYTES = 64 << 20
#: Largest request (all its chunks) a PS accepts: one step's push for a shard is tens of MB.
#: Larger ones are refused, so one client cannot make a PS that serves everyone else hold
#: unbounded memory.
MAX_REQUEST_BYTES = 1 << 32
#: Channel/server options raising gRPC's 4 MB default message limit on both ends.
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]

T = TypeVar("T")

if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("herald_tf's wire format assumes a little-endian host")


def to_bytes(array: np.ndarray | None) -> bytes:
    """The raw bytes of a C-contiguous array (empty for None)."""
    if array is None:
        return b""
    return np.ascontiguousarray(array).tobytes()


def from_bytes(data: bytes, dtype: type, what: str, width: int | None = None) -> np.ndarray:
    """A read-only array over ``data``: (n,) or (n, width); refuses a length that does not fit."""
    itemsize = np.dtype(dtype).itemsize * (width or 1)
    if len(data) % itemsize:
        raise InvalidArgumentError(
            f"Expected {what} as a whole number of {itemsize}-byte rows"
            f"{f' (width {width})' if width else ''}. Received: {len(data)} bytes")
    a = np.frombuffer(data, dtype=dtype)
    return a.reshape(-1, width) if width is not None else a


def join(parts: list[bytes]) -> bytes:
    """Concatenation of byte chunks (no copy for a single chunk)."""
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def row_ranges(n: int, row_bytes: int, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """Consecutive [begin, end) ranges of at most ``chunk_bytes`` each; one empty range if n=0."""
    per = max(1, chunk_bytes // max(row_bytes, 1))
    if n == 0:
        yield 0, 0
        return
    for begin in range(0, n, per):
        yield begin, min(n, begin + per)


def check_request_bytes(nbytes: int, limit: int | None = None) -> None:
    """Refuses a request of ``nbytes`` payload bytes over ``limit`` (default
    ``MAX_REQUEST_BYTES``) with ``InvalidArgumentError``: a client checks before sending what
    the PS would refuse, as retrying a refused request cannot help."""
    limit = MAX_REQUEST_BYTES if limit is None else limit
    if nbytes > limit:
        raise InvalidArgumentError(f"Expected a request of at most {limit} bytes. Received: "
                                   f"{nbytes} bytes (split it into several calls)")


def bounded(chunks: Iterable[T], nbytes: Callable[[T], int],
            limit: int | None = None) -> Iterator[T]:
    """The chunks of one streamed request, refused with ``InvalidArgumentError`` as soon as
    their payload (``nbytes`` of each) exceeds ``limit`` bytes (default ``MAX_REQUEST_BYTES``,
    read at each call, like the data plane's limit)."""
    limit = MAX_REQUEST_BYTES if limit is None else limit
    total = 0
    for chunk in chunks:
        total += nbytes(chunk)
        if total > limit:
            raise InvalidArgumentError(f"Expected a request of at most {limit} bytes. Received: "
                                       f"more than {limit} bytes (split it into several calls)")
        yield chunk
