"""A single-process numpy (float64) model of PS tables: what sharded servers must compute.

Rows are created lazily with the uniform initializer of tests/reference.py; a step sums each
key's gradients over the workers and applies ``reference.NumpyOptimizer`` once; a flush
overwrites value, state and version.
"""

from __future__ import annotations

import numpy as np
from reference import NumpyOptimizer, uniform_row

from herald_tf.config import InitializerKind, TableConfig


class NumpyTable:
    """float64 rows (value, optimizer state, version) of one table, created on first touch."""

    def __init__(self, config: TableConfig) -> None:
        assert config.initializer.kind == InitializerKind.UNIFORM
        self.config = config
        o = config.optimizer
        self.opt = NumpyOptimizer(o.kind.name.lower(), o.learning_rate, o.beta1, o.beta2,
                                  o.epsilon, o.initial_accumulator)
        self.rows: dict[int, int] = {}
        self.value = np.zeros((0, config.dim))
        self.state = np.zeros((0, config.state_width))
        self.version = np.zeros(0, dtype=np.int64)

    def _row(self, key: int) -> int:
        r = self.rows.get(key)
        if r is None:
            c = self.config
            r = self.rows[key] = len(self.rows)
            init = uniform_row(c.seed, key, c.dim, c.initializer.a, c.initializer.b)
            self.value = np.vstack([self.value, init.astype(np.float64)[None]])
            self.state = np.vstack([self.state, self.opt.init_state(1, c.dim)])
            self.version = np.append(self.version, 0)
        return r

    def step(self, pushes: list[tuple[np.ndarray, np.ndarray]], learning_rate: float) -> None:
        """Applies one step: pushes of every rank (keys, float32 grads)."""
        summed: dict[int, np.ndarray] = {}
        for keys, grads in pushes:
            for k, g in zip(keys.tolist(), grads.astype(np.float64), strict=True):
                summed[k] = summed.get(k, 0.0) + g
        if not summed:
            return
        rows = [self._row(k) for k in summed]
        self.opt.lr = float(np.float32(learning_rate))
        self.opt.apply(self.value, self.state, self.version, np.array(rows),
                       np.stack(list(summed.values())))

    def flush(self, keys: np.ndarray, values: np.ndarray, state: np.ndarray,
              versions: np.ndarray) -> None:
        """Overwrites rows."""
        for i, k in enumerate(keys.tolist()):
            r = self._row(k)
            self.value[r] = values[i]
            self.state[r] = state[i]
            self.version[r] = versions[i]

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, state, versions) of keys (creating absent rows, as a read would see them)."""
        rows = np.array([self._row(k) for k in keys.tolist()], dtype=np.int64)
        return self.value[rows], self.state[rows], self.version[rows]
