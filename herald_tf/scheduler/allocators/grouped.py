"""Grouping allocator: greedy on the marginal rows moved, so samples that share keys meet.

Herald's greedy allocator only looks at the caches; a key used by several samples of the batch
becomes *shared* (a push per user and a pull per stale user) as soon as two workers train it.
This allocator takes samples in index order and gives each to the worker, among those with
fewer than B samples, that adds the fewest transfers given the samples already placed in this
batch (ties: fewer samples, then lower index). Per key k of the sample, with U the workers
already using k in this batch and ``pull`` = 0 if k is untouched or held by w, else 1
(+1 when another worker owns k dirty, since it must flush first):

- w in U: 0 (k stays where it is);
- U empty, or k used by this sample only: ``pull``;
- U = {v}, v != w: 2 + ``pull`` (k turns shared: two pushes instead of a local update);
- |U| >= 2: 1 + ``pull`` (one more push).
"""

from __future__ import annotations

import numpy as np

from herald_tf.scheduler.types import Allocator, CacheView


def _pull_cost(view: CacheView, key: int, worker: int) -> int:
    owner = view.owner(key)
    if owner == worker or (view.holders(key) >> worker) & 1 or not view.touched(key):
        return 0
    return 2 if owner >= 0 else 1


class GroupedAllocator(Allocator):
    """Marginal-cost greedy allocator; see the module docstring for the exact rule."""

    def allocate(self, keys: np.ndarray, view: CacheView) -> np.ndarray:
        """Returns (N, B) sample indices, each worker's in the order they were assigned."""
        n, b = view.num_workers, view.batch_size
        counts: dict[int, int] = {}
        for key in keys.ravel().tolist():
            counts[key] = counts.get(key, 0) + 1
        users: dict[int, int] = {}
        assigned: list[list[int]] = [[] for _ in range(n)]
        for i in range(n * b):
            row = keys[i].tolist()
            costs = [0] * n
            for key in row:
                mask = users.get(key, 0)
                for w in range(n):
                    if (mask >> w) & 1:
                        continue
                    pull = _pull_cost(view, key, w)
                    if mask == 0 or counts[key] == 1:
                        costs[w] += pull
                    elif mask & (mask - 1) == 0:
                        costs[w] += 2 + pull
                    else:
                        costs[w] += 1 + pull
            best = min(
                (w for w in range(n) if len(assigned[w]) < b),
                key=lambda w: (costs[w], len(assigned[w]), w),
            )
            assigned[best].append(i)
            for key in row:
                users[key] = users.get(key, 0) | (1 << best)
        return np.array(assigned, dtype=np.int64).reshape(n, b)
