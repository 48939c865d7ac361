"""Shared pieces of the GPU harness tests: tolerances, numpy references, pointer handling and an
injected allocator. Imported by conftest.py and the test modules (benchmarks/gpu only)."""

from __future__ import annotations

import ctypes
import os

import cupy as cp
import numpy as np
from herald_cuda import ALLOCATE, DEALLOCATE, Allocator, Combiner, Initializer, Optimizer

SMALL = os.environ.get("HERALD_TEST_SMALL") == "1"
if SMALL:
    # Sanitizer runs: plain cudaMalloc per array, so memcheck sees the true bounds of each one.
    cp.cuda.set_allocator(None)
GATHER_TOL = 1e-6
REDUCE_TOL = 1e-5


def rel_err(a, r) -> float:
    a = np.asarray(a, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.max(np.abs(a - r)) / max(np.max(np.abs(r)), 1e-3))


class PyAllocator:
    """An injected allocator (CuPy memory) that counts its calls."""

    def __init__(self):
        self.live = {}
        self.allocations = 0

        def allocate(_ctx, nbytes, _stream):
            mem = cp.cuda.alloc(max(int(nbytes), 1))
            self.live[mem.ptr] = mem
            self.allocations += 1
            return mem.ptr

        def deallocate(_ctx, ptr, _nbytes, _stream):
            # CuPy frees stream-ordered on its current stream; the harness runs on one stream.
            self.live.pop(ptr)

        self._alloc = ALLOCATE(allocate)
        self._dealloc = DEALLOCATE(deallocate)
        self.struct = Allocator(self._alloc, self._dealloc, None)

    @property
    def ptr(self):
        return ctypes.addressof(self.struct)


_KEEP: list = []  # arrays whose pointers were handed out in the current test


def ptr(a) -> int | None:
    """Device pointer of a CuPy array, kept alive until the test ends (a temporary such as
    ``ptr(cp.asarray(x))`` would otherwise be freed before the kernel reads it)."""
    if a is None:
        return None
    _KEEP.append(a)
    return a.data.ptr


def make_bags(rng, batch, max_len, ragged):
    if ragged:
        lengths = rng.integers(0, max_len + 1, size=batch)
        if batch > 2:
            lengths[rng.integers(0, batch)] = 0  # at least one empty bag
        splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return splits
    return None


def ref_lookup(storage, ids, splits, batch, combiner):
    s = storage.astype(np.float64)
    if combiner == Combiner.NONE:
        return s[ids]
    out = np.zeros((batch, storage.shape[1]))
    for b in range(batch):
        lo, hi = splits[b], splits[b + 1]
        if hi > lo:
            v = s[ids[lo:hi]].sum(axis=0)
            if combiner == Combiner.MEAN:
                v = v / (hi - lo)
            elif combiner == Combiner.SQRTN:
                v = v / np.sqrt(hi - lo)
            out[b] = v
    return out


def bag_scales(splits, combiner, n):
    scale = np.ones(n)
    source = np.arange(n)
    if combiner == Combiner.NONE:
        return source, scale
    for b in range(len(splits) - 1):
        lo, hi = splits[b], splits[b + 1]
        source[lo:hi] = b
        length = hi - lo
        if combiner == Combiner.MEAN:
            scale[lo:hi] = 1.0 / length if length else 0.0
        elif combiner == Combiner.SQRTN:
            scale[lo:hi] = 1.0 / np.sqrt(length) if length else 0.0
    return source, scale


def first_appearance_unique(ids):
    uniq, first, inv = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return uniq[order], rank[inv.reshape(-1)]


def ref_segment_sum(grad_out, inverse, splits, combiner, num_unique, n):
    source, scale = bag_scales(splits, combiner, n)
    out = np.zeros((num_unique, grad_out.shape[1]))
    np.add.at(out, inverse, grad_out.astype(np.float64)[source] * scale[:, None])
    return out


def ref_apply(kind, p, value, state, versions, slots_u, grads):
    lr, b1, b2, eps = p.learning_rate, p.beta1, p.beta2, p.epsilon
    for k, s in enumerate(slots_u):
        g = grads[k].astype(np.float64)
        if kind == Optimizer.SGD:
            value[s] -= lr * g
        elif kind == Optimizer.ADAGRAD:
            state[s] += g * g
            value[s] -= lr * g / (np.sqrt(state[s]) + eps)
        else:
            dim = value.shape[1]
            t = versions[s] + 1
            m = b1 * state[s, :dim] + (1 - b1) * g
            v = b2 * state[s, dim:] + (1 - b2) * g * g
            state[s, :dim], state[s, dim:] = m, v
            value[s] -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        versions[s] += 1


def _mix64(x):
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ref_init(kind, seed, a, b, keys, dim):
    with np.errstate(over="ignore"):
        k = keys.astype(np.uint64)[:, None]
        base = _mix64(k ^ _mix64(np.uint64(seed)))

        def unit(counter):
            bits = _mix64(base ^ ((counter + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)))
            return (bits >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)

        j = np.arange(dim, dtype=np.uint64)[None, :]
        if kind == Initializer.UNIFORM:
            return np.float32(a) + unit(j) * (np.float32(b) - np.float32(a))
        if kind == Initializer.NORMAL:
            u1 = unit(2 * j).astype(np.float64) + 1.0 / 16777216.0
            u2 = unit(2 * j + np.uint64(1)).astype(np.float64)
            return a + b * np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)
        return np.zeros((len(keys), dim))
