"""Hand-written protobuf encoding of the two bulk messages, PullReply and PushRequest.

The bytes on the wire are exactly the protobuf encoding of the messages in herald_ps.proto (a
test checks both directions against the generated classes), but rows go from numpy into the
message in one copy (``bytes.join`` over buffers) and come out as zero-copy ``memoryview``
slices of the received message, instead of the three copies that building, serializing and
parsing a generated message costs for a 13 MB payload. Everything else uses the generated
classes.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

from herald_tf.errors import InvalidArgumentError

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64/int32 negatives are 10-byte varints in protobuf
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise InvalidArgumentError("Expected a complete protobuf varint. Received: truncated")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _signed(value: int, bits: int = 64) -> int:
    """The two's-complement value of the low ``bits`` bits of a decoded varint."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _bytes_field(number: int, payload: Any) -> list[Any]:
    n = memoryview(payload).nbytes
    if n == 0:
        return []
    return [_varint(number << 3 | 2) + _varint(n), payload]


def _parse(data: bytes) -> dict[int, Any]:
    """Field number → value: memoryview for length-delimited, int for varint, bytes for fixed."""
    view = memoryview(data)
    fields: dict[int, Any] = {}
    pos = 0
    while pos < len(view):
        key, pos = _read_varint(view, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            fields[number], pos = _read_varint(view, pos)
        elif kind == 2:
            n, pos = _read_varint(view, pos)
            fields[number] = view[pos:pos + n]
            pos += n
        elif kind == 1:
            fields[number] = bytes(view[pos:pos + 8])
            pos += 8
        elif kind == 5:
            fields[number] = bytes(view[pos:pos + 4])
            pos += 4
        else:
            raise InvalidArgumentError(f"Expected a protobuf wire type in {{0, 1, 2, 5}}. "
                                       f"Received: {kind}")
        if pos > len(view):
            raise InvalidArgumentError("Expected a complete protobuf message. Received: truncated")
    return fields


_EMPTY = memoryview(b"")


@dataclasses.dataclass
class PullReplyView:
    """A decoded PullReply whose bytes fields are zero-copy views of the message."""

    positions: memoryview = _EMPTY
    values: memoryview = _EMPTY
    state: memoryview = _EMPTY
    versions: memoryview = _EMPTY
    dim: int = 0
    state_width: int = 0


def encode_pull_reply(positions: Any, values: Any, state: Any, versions: Any, dim: int,
                      state_width: int) -> bytes:
    """The protobuf encoding of a PullReply; array arguments are any C-contiguous buffers."""
    parts: list[Any] = []
    for number, payload in ((1, positions), (2, values), (3, state), (4, versions)):
        parts += _bytes_field(number, payload)
    if dim:
        parts.append(b"\x28" + _varint(dim))
    if state_width:
        parts.append(b"\x30" + _varint(state_width))
    return b"".join(parts)


def decode_pull_reply(data: bytes) -> PullReplyView:
    """A PullReply from its encoding, bytes fields as views of ``data``."""
    f = _parse(data)
    return PullReplyView(f.get(1, _EMPTY), f.get(2, _EMPTY), f.get(3, _EMPTY), f.get(4, _EMPTY),
                         _signed(f.get(5, 0), 32), _signed(f.get(6, 0), 32))


@dataclasses.dataclass
class PushRequestView:
    """A decoded PushRequest whose bytes fields are zero-copy views of the message."""

    step: int = 0
    rank: int = 0
    table: str = ""
    learning_rate: float = 0.0
    keys: memoryview = _EMPTY
    grads: memoryview = _EMPTY
    wait_applied: bool = False
    timeout_s: float = 0.0


def encode_push_request(step: int, rank: int, table: str, learning_rate: float, keys: Any,
                        grads: Any, wait_applied: bool, timeout_s: float) -> bytes:
    """The protobuf encoding of a PushRequest."""
    parts: list[Any] = []
    if step:
        parts.append(b"\x08" + _varint(step))
    if rank:
        parts.append(b"\x10" + _varint(rank))
    parts += _bytes_field(3, table.encode())
    if learning_rate:
        parts.append(b"\x25" + _FLOAT.pack(learning_rate))
    parts += _bytes_field(5, keys)
    parts += _bytes_field(6, grads)
    if wait_applied:
        parts.append(b"\x38\x01")
    if timeout_s:
        parts.append(b"\x41" + _DOUBLE.pack(timeout_s))
    return b"".join(parts)


def decode_push_request(data: bytes) -> PushRequestView:
    """A PushRequest from its encoding, keys and grads as views of ``data``."""
    f = _parse(data)
    return PushRequestView(
        step=_signed(f.get(1, 0)), rank=_signed(f.get(2, 0), 32),
        table=bytes(f.get(3, _EMPTY)).decode(),
        learning_rate=_FLOAT.unpack(f[4])[0] if 4 in f else 0.0,
        keys=f.get(5, _EMPTY), grads=f.get(6, _EMPTY), wait_applied=bool(f.get(7, 0)),
        timeout_s=_DOUBLE.unpack(f[8])[0] if 8 in f else 0.0)


def identity(data: bytes) -> bytes:
    """Serializer for messages that are already encoded."""
    return data
