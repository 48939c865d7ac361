"""Herald's greedy location-aware input allocation over a snapshot of the caches (LAIA).

score(i, w) = sum over the keys of sample i of 2 if w owns the row (dirty: moving it would cost
a flush and a pull), 1 if w holds a usable copy, else 0 — all from the cache state at step
start. Samples are taken in index order; each goes to the worker with the highest score among
those with fewer than B samples, ties to the worker with fewer samples, then the lower index.
"""

from __future__ import annotations

import numpy as np

from herald_tf.scheduler.types import Allocator, CacheView


def key_score(view: CacheView, key: int, worker: int) -> int:
    """2 if ``worker`` owns ``key``, 1 if it holds a copy, else 0."""
    if view.owner(key) == worker:
        return 2
    return 1 if (view.holders(key) >> worker) & 1 else 0


class GreedyAllocator(Allocator):
    """Herald's greedy allocator; see the module docstring for the exact rule."""

    def allocate(self, keys: np.ndarray, view: CacheView) -> np.ndarray:
        """Returns (N, B) sample indices, each worker's in the order they were assigned."""
        n, b = view.num_workers, view.batch_size
        assigned: list[list[int]] = [[] for _ in range(n)]
        for i in range(n * b):
            scores = [0] * n
            for key in keys[i].tolist():
                for w in range(n):
                    scores[w] += key_score(view, key, w)
            best = min(
                (w for w in range(n) if len(assigned[w]) < b),
                key=lambda w: (-scores[w], len(assigned[w]), w),
            )
            assigned[best].append(i)
        return np.array(assigned, dtype=np.int64).reshape(n, b)
