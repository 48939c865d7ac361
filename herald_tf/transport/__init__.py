"""Client side of the parameter servers: one interface, gRPC and in-process implementations.

``make_transport`` builds a ``Transport``; see ``herald_tf.transport.types`` for the contract
(ordering, thread safety, buffer lifetime, byte counters).
"""

from herald_tf.transport.factory import make_transport
from herald_tf.transport.types import (
    BYTE_KINDS,
    ByteCounters,
    FaultInjection,
    Handle,
    PullRows,
    Transport,
)

__all__ = [
    "BYTE_KINDS",
    "ByteCounters",
    "FaultInjection",
    "Handle",
    "PullRows",
    "Transport",
    "make_transport",
]
