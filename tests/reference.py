"""numpy references of herald's kernels (float64 unless stated), used by the op tests."""

from __future__ import annotations

import numpy as np

MASK64 = (1 << 64) - 1


def pooled_lookup(storage: np.ndarray, ids: np.ndarray, splits: np.ndarray,
                  combiner: str) -> np.ndarray:
    """Bag-pooled rows; combiner 'none' returns storage[ids]."""
    rows = storage[ids].astype(np.float64)
    if combiner == "none":
        return rows
    out = np.zeros((len(splits) - 1, storage.shape[1]))
    for b in range(len(splits) - 1):
        lo, hi = splits[b], splits[b + 1]
        if hi > lo:
            total = rows[lo:hi].sum(axis=0)
            scale = {"sum": 1.0, "mean": 1.0 / (hi - lo), "sqrtn": 1.0 / np.sqrt(hi - lo)}
            out[b] = total * scale[combiner]
    return out


def lookup_grad(grad: np.ndarray, ids: np.ndarray, splits: np.ndarray,
                combiner: str) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids in first-appearance order and their summed gradients."""
    unique = list(dict.fromkeys(ids.tolist()))
    index = {s: i for i, s in enumerate(unique)}
    summed = np.zeros((len(unique), grad.shape[1]))
    if combiner == "none":
        for i, s in enumerate(ids):
            summed[index[s]] += grad[i]
    else:
        for b in range(len(splits) - 1):
            lo, hi = splits[b], splits[b + 1]
            scale = {"sum": 1.0, "mean": 1.0 / max(hi - lo, 1),
                     "sqrtn": 1.0 / np.sqrt(max(hi - lo, 1))}[combiner]
            for i in range(lo, hi):
                summed[index[ids[i]]] += scale * grad[b]
    return np.array(unique, dtype=np.int64), summed


class NumpyOptimizer:
    """float64 sparse optimizer with per-row versions, the math of kernels/core/optimizer.h."""

    def __init__(self, kind: str, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-7, initial_accumulator: float = 0.1) -> None:
        self.kind, self.lr, self.b1, self.b2, self.eps = kind, lr, beta1, beta2, epsilon
        self.acc0 = initial_accumulator

    def init_state(self, rows: int, dim: int) -> np.ndarray:
        width = {"sgd": 0, "adagrad": dim, "adam": 2 * dim}[self.kind]
        return np.full((rows, width), self.acc0 if self.kind == "adagrad" else 0.0)

    def apply(self, value: np.ndarray, state: np.ndarray, versions: np.ndarray,
              slots: np.ndarray, grads: np.ndarray) -> None:
        dim = value.shape[1]
        for s, g in zip(slots, grads):
            if self.kind == "sgd":
                value[s] -= self.lr * g
            elif self.kind == "adagrad":
                state[s] += g * g
                value[s] -= self.lr * g / (np.sqrt(state[s]) + self.eps)
            else:
                t = versions[s] + 1
                m = self.b1 * state[s, :dim] + (1 - self.b1) * g
                v = self.b2 * state[s, dim:] + (1 - self.b2) * g * g
                state[s, :dim], state[s, dim:] = m, v
                m_hat = m / (1 - self.b1**t)
                v_hat = v / (1 - self.b2**t)
                value[s] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
            versions[s] += 1


def _mix64(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return x


def init_bits(seed: int, key: int, counter: int) -> int:
    """InitBits of kernels/core/initializer.h in Python integers."""
    inner = _mix64((key & MASK64) ^ _mix64(seed))
    return _mix64(inner ^ (((counter + 1) * 0x9E3779B97F4A7C15) & MASK64))


def uniform_row(seed: int, key: int, dim: int, low: float, high: float) -> np.ndarray:
    """The uniform initial row, computed with float32 steps exactly as the kernel does."""
    u = np.array([init_bits(seed, key, j) >> 40 for j in range(dim)], dtype=np.float32)
    u = u * np.float32(1.0 / 16777216.0)
    return np.float32(low) + u * (np.float32(high) - np.float32(low))


def assert_close(actual: np.ndarray, reference: np.ndarray, rel: float = 1e-5) -> None:
    """DESIGN §2a tolerance: ‖a − r‖∞ ≤ rel · max(‖r‖∞, 1e-3)."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert actual.shape == reference.shape, (actual.shape, reference.shape)
    if reference.size == 0:
        return
    err = np.max(np.abs(actual - reference))
    bound = rel * max(np.max(np.abs(reference)), 1e-3)
    assert err <= bound, f"max abs error {err} > {bound}"
