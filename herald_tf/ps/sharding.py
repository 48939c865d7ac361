"""The stable key → shard function, the one definition used by every client and server.

``shard_of(key, S) = splitmix64(uint64(key) XOR 0x5348415244484552) mod S`` where ``splitmix64``
is the finaliser of kernels/core/initializer.h (``Mix64``) and ``uint64(key)`` is the key's two's
complement bit pattern. It depends only on the key and S (no process state, no Python ``hash``),
so every process, language and restart agrees; the salt keeps the shard independent of the bucket
a shard's own key index (which hashes with plain ``Mix64``) puts the key in.
"""

from __future__ import annotations

import numpy as np

SHARD_SALT = 0x5348415244484552  # "SHARDHER"

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over a uint64 array (wrapping arithmetic, as in C)."""
    x = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return x


def shard_of(keys: np.ndarray, num_shards: int) -> np.ndarray:
    """Shard index (int64 in [0, num_shards)) of every int64 key."""
    if num_shards <= 0:
        raise ValueError(f"Expected num_shards > 0. Received: num_shards={num_shards}")
    bits = np.asarray(keys, dtype=np.int64).view(np.uint64)
    h = mix64(bits ^ np.uint64(SHARD_SALT))
    return (h % np.uint64(num_shards)).astype(np.int64)


def split_by_shard(keys: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """Positions of the keys of each shard, each in increasing order (a stable partition)."""
    if num_shards == 1:
        return [np.arange(len(keys), dtype=np.int64)]
    shards = shard_of(keys, num_shards)
    if num_shards <= 16:  # a few linear passes beat a sort
        return [np.flatnonzero(shards == s) for s in range(num_shards)]
    order = np.argsort(shards, kind="stable")
    bounds = np.searchsorted(shards[order], np.arange(num_shards + 1))
    return [order[bounds[s]:bounds[s + 1]] for s in range(num_shards)]
