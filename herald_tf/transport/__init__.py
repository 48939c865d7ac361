"""Client side of the parameter servers: one interface, gRPC and in-process implementations.

``make_transport`` builds a ``Transport``; see ``herald_tf.transport.types`` for the contract
(ordering, thread safety, buffer lifetime, byte counters). A worker's step t, as the runtime
uses it::

    t = make_transport("grpc", addresses=["127.0.0.1:7001", "127.0.0.1:7002"], token=token)
    # or "grpc+tcp": the same, with pull and push over the PS's TCP data plane (faster)
    health = t.connect(tables, num_workers=N, rank=r)       # refused on any config mismatch
    rows = t.pull("user", keys, min_versions=need).wait()    # waits for steps < t at the PS
    rows = t.pull("user", keys, have_versions=cached_versions).wait()  # only newer rows
    owned = t.pull("user", private_keys, with_state=True).wait()       # take ownership
    t.flush("user", keys, values, state, versions).wait()   # write back a dirty row
    h = t.push(step, r, {"user": (keys, grads)}, {"user": lr})  # one push per (shard, step)
    # a worker with nothing for a shard still pushes: t.push(step, r, {}, {})
    h.wait()
    t.checkpoint(step)                                      # once step is applied everywhere
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
