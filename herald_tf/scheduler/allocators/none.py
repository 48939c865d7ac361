"""No allocation: worker w trains samples ``[w * B, (w + 1) * B)`` of the global batch."""

from __future__ import annotations

import numpy as np

from herald_tf.scheduler.types import Allocator, CacheView


class NoAllocator(Allocator):
    """Contiguous split of the global batch, as a plain data-parallel input pipeline does."""

    def allocate(self, keys: np.ndarray, view: CacheView) -> np.ndarray:
        """Returns ``arange(N * B).reshape(N, B)``."""
        return np.arange(view.num_workers * view.batch_size, dtype=np.int64).reshape(
            view.num_workers, view.batch_size
        )
