"""In-process ``Transport`` over ``ShardStore`` objects: the same contract with no network.

Used by unit tests, by single-process runs that still want the PS protocol, and by a worker that
serves rows it owns to itself. Byte counters count the payload bytes the gRPC transport would
send for the same calls (the arrays' sizes), so accounting is identical across transports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from herald_tf.ps.store import PushEntry, ShardStore
from herald_tf.transport.grpc_server import ParameterServerServicer
from herald_tf.transport.sharded import PullPart, ShardedTransport
from herald_tf.transport.types import FaultInjection


def _nbytes(*arrays: np.ndarray | None) -> int:
    return sum(a.nbytes for a in arrays if a is not None)


class LocalTransport(ShardedTransport):
    """Client of in-process shards (``stores[i]`` is shard i)."""

    def __init__(self, stores: Sequence[ShardStore], checkpoint_dir: str | None = None,
                 faults: FaultInjection | None = None) -> None:
        super().__init__(len(stores), faults=faults)
        self.stores = list(stores)
        self._control_impl = [ParameterServerServicer(s, checkpoint_dir) for s in self.stores]

    def _pull_shard(self, shard: int, table: str, keys: np.ndarray, have: np.ndarray | None,
                    need: np.ndarray | None, with_state: bool,
                    timeout: float | None, sink: Callable[[PullPart], None]) -> None:
        self.counters.add(keys=keys.nbytes, control=_nbytes(have, need))
        r = self.stores[shard].pull(table, keys, have, need, with_state, timeout)
        self.counters.add(pulled_rows=_nbytes(r.positions if have is not None else None,
                                              r.values, r.state, r.versions))
        sink((r.positions, r.values, r.state, r.versions))

    def _push_shard(self, shard: int, step: int, rank: int,
                    entries: list[tuple[str, np.ndarray, np.ndarray, float]],
                    wait_applied: bool, timeout: float | None) -> int:
        self.counters.add(keys=sum(k.nbytes for _, k, _, _ in entries),
                          pushed_gradients=sum(g.nbytes for _, _, g, _ in entries))
        return self.stores[shard].push(step, rank, [PushEntry(*e) for e in entries],
                                       wait_applied, timeout)

    def _flush_shard(self, shard: int, table: str, keys: np.ndarray, values: np.ndarray,
                     state: np.ndarray | None, versions: np.ndarray) -> None:
        self.counters.add(keys=keys.nbytes, flushed_rows=_nbytes(values, state, versions))
        self.stores[shard].flush(table, keys, values, state, versions)

    def _versions_shard(self, shard: int, table: str, keys: np.ndarray) -> np.ndarray:
        self.counters.add(keys=keys.nbytes)
        v = self.stores[shard].versions(table, keys)
        self.counters.add(control=v.nbytes)
        return v

    def _control_shard(self, shard: int, op: str, args: Mapping[str, Any]) -> Any:
        return self._control_impl[shard].control(op, dict(args))

    def _post_plans_shard(self, shard: int, step: int, plans: Mapping[int, bytes]) -> None:
        self.stores[shard].post_plans(step, list(plans), list(plans.values()))
        self.counters.add(plans=sum(len(b) for b in plans.values()))  # once, as over gRPC

    def _take_plans_shard(self, shard: int, step: int, rank: int, wait_s: float,
                          max_plans: int) -> list[bytes]:
        plans = self.stores[shard].plans.take(step, rank, wait_s, max_plans)
        self.counters.add(plans=sum(len(b) for b in plans))
        return plans
