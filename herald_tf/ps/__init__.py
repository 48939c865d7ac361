"""Parameter server: sharded int64-key embedding tables with exact step aggregation.

``ShardStore`` (store.py) is the row-serving core (no gRPC, no TensorFlow); ``sharding.shard_of``
is the one key → shard function; ``PlanMailbox`` holds the plans worker 0 schedules for the
others; ``KeyIndex`` is its int64 key → row map (C++), also used by
the het staleness meter; checkpoint.py writes and restores shards; server_main.py is the
``herald-ps`` process. Clients use ``herald_tf.transport``.
"""

from herald_tf.ps._native import KeyIndex
from herald_tf.ps.plan_mailbox import PlanMailbox
from herald_tf.ps.sharding import shard_of, split_by_shard
from herald_tf.ps.store import PullResult, PushEntry, ShardStore

__all__ = ["KeyIndex", "PlanMailbox", "PullResult", "PushEntry", "ShardStore", "shard_of",
           "split_by_shard"]
