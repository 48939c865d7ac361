"""Synthetic Criteo-format data: power-law keys, optional time locality, learnable labels.

Within field f (cardinality ``ceil(scale * CRITEO_CARDINALITIES[f])``) a popularity rank r is
drawn with probability proportional to ``r ** -alpha`` (exact for r <= 4096, a continuous
approximation of the same law beyond); fields are independent. The rank is turned into a 32-bit
hex value by a bijective mix, so keys look like Criteo's hashed values.

``locality=True`` makes a time-ordered trace like real logs: (1) *drift*: the popularity ranking
of each field slides by one item every ``drift_period`` samples (new items become the most
popular, old ones fade); (2) *sessions*: ``sessions`` concurrent session slots, each session
lasting ``session_length`` samples of time; a sample belongs to a random slot's current session
and, for the high-cardinality ("user/item") fields, reuses the session's key with probability
``stickiness``.

Labels come from a hidden logistic model (a weight per key from a hash of the key, plus a dense
part), so AUC is learnable. Everything is a pure function of the seed and the sample index:
generation is chunked by fixed 65,536-sample chunks with their own RNG streams, so the first n
samples never depend on how many are generated.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Iterator

import numpy as np

from herald_tf.data._atomic import atomic_text_file
from herald_tf.data.criteo import (
    EMPTY_KEY_BIT,
    NUM_DENSE,
    NUM_SPARSE,
    CriteoBatch,
    dense_transform,
)
from herald_tf.errors import InvalidArgumentError

#: Criteo Kaggle's per-field cardinalities (C1..C26), sum 33,762,577 (DESIGN §7).
CRITEO_CARDINALITIES = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194, 27, 14992,
    5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)
CHUNK = 65536
_HEAD = 4096
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic Criteo-format trace.

    Args:
      scale: factor on Criteo's cardinalities (each field keeps at least one value).
      alpha: power-law exponent of key popularity within a field.
      seed: everything is a pure function of it.
      locality: time-ordered trace with sessions and popularity drift (see module docstring).
      sessions: concurrent session slots (locality only).
      session_length: samples of time a session lasts (locality only).
      stickiness: probability that a session field reuses the session's key (locality only).
      drift_period: samples between two one-rank slides of the popularity (locality only).
      missing_rate: probability that a categorical value is empty (reserved key).
      ctr: target positive rate of the hidden model's labels.
    """

    scale: float = 0.05
    alpha: float = 1.05
    seed: int = 0
    locality: bool = False
    sessions: int = 512
    session_length: int = 16384
    stickiness: float = 0.8
    drift_period: int = 256
    missing_rate: float = 0.0
    ctr: float = 0.25

    def __post_init__(self) -> None:
        if not self.scale > 0 or not self.alpha > 0:
            raise InvalidArgumentError(
                f"Expected scale > 0 and alpha > 0. Received: scale={self.scale}, "
                f"alpha={self.alpha}"
            )
        if self.sessions < 1 or self.session_length < 1 or self.drift_period < 1:
            raise InvalidArgumentError("Expected sessions, session_length, drift_period >= 1.")
        if not (0 <= self.stickiness <= 1 and 0 <= self.missing_rate < 1 and 0 < self.ctr < 1):
            raise InvalidArgumentError("Expected stickiness, missing_rate, ctr in [0, 1].")

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Per-field number of distinct values at this scale."""
        return tuple(max(1, math.ceil(c * self.scale)) for c in CRITEO_CARDINALITIES)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def _uniform(h: np.ndarray) -> np.ndarray:
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class _RankSampler:
    """Inverse-CDF sampler of ranks 1..n with P(r) proportional to r ** -alpha."""

    def __init__(self, n: int, alpha: float) -> None:
        self.n, self.alpha = n, alpha
        head = min(n, _HEAD)
        w = np.arange(1, head + 1, dtype=np.float64) ** -alpha
        self.cum = np.cumsum(w)
        self.head = head
        self.head_mass = float(self.cum[-1])
        if n > head:
            a = 1.0 - alpha
            lo, hi = head + 0.5, n + 0.5
            self._lo_a = lo ** a
            self.tail_mass = (hi ** a - lo ** a) / a if a != 0 else math.log(hi / lo)
        else:
            self.tail_mass = 0.0
        self.total = self.head_mass + self.tail_mass

    def ranks(self, u: np.ndarray) -> np.ndarray:
        """Ranks (int64, 1-based) for uniforms ``u`` in [0, 1)."""
        v = u * self.total
        out = np.empty(u.shape, dtype=np.int64)
        in_head = v < self.head_mass
        out[in_head] = np.searchsorted(self.cum, v[in_head], side="right") + 1
        if self.tail_mass > 0:
            t = v[~in_head] - self.head_mass
            a = 1.0 - self.alpha
            x = (self._lo_a + t * a) ** (1.0 / a) if a != 0 else (self.head + 0.5) * np.exp(t)
            out[~in_head] = np.clip(np.floor(x + 0.5).astype(np.int64), self.head + 1, self.n)
        np.minimum(out, self.n, out=out)
        return out


class SyntheticCriteo:
    """Generator of a synthetic Criteo trace; see the module docstring."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()
        cfg = self.config
        self.cards = cfg.cardinalities
        self.samplers = [_RankSampler(n, cfg.alpha) for n in self.cards]
        salts = _mix64(np.arange(NUM_SPARSE, dtype=np.uint64) + np.uint64(cfg.seed * 1000 + 7))
        self.salts = salts & np.uint64(0xFFFFFFFF)
        self.session_fields = np.array([c >= 1000 for c in self.cards])
        rng = np.random.default_rng([cfg.seed, 0x5EED])
        self.dense_w = rng.normal(0, 0.15, NUM_DENSE)
        self.dense_mu = rng.uniform(0.5, 4.0, NUM_DENSE)
        self.field_scale = rng.uniform(0.2, 0.6, NUM_SPARSE)
        self.bias = math.log(cfg.ctr / (1 - cfg.ctr))

    def _values(self, field: int, ranks: np.ndarray, offset: np.ndarray | int) -> np.ndarray:
        n = self.cards[field]
        item = (ranks - 1 - offset) % n
        with np.errstate(over="ignore"):
            v = (item.astype(np.uint64) * np.uint64(0x9E3779B1) + self.salts[field])
        return (v & np.uint64(0xFFFFFFFF)).astype(np.int64)

    def _chunk_keys(self, c: int, m: int) -> np.ndarray:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, c])
        u = rng.random((m, NUM_SPARSE))
        idx = np.arange(c * CHUNK, c * CHUNK + m, dtype=np.int64)
        keys = np.empty((m, NUM_SPARSE), dtype=np.int64)
        if cfg.locality:
            offset = idx // cfg.drift_period
            slot = (_mix64(idx.astype(np.uint64) ^ np.uint64(cfg.seed << 20))
                    % np.uint64(cfg.sessions)).astype(np.int64)
            phase = (_mix64(slot.astype(np.uint64) + np.uint64(77)) %
                     np.uint64(cfg.session_length)).astype(np.int64)
            epoch = (idx + phase) // cfg.session_length
            session = (slot << 32) | epoch
            start = epoch * cfg.session_length - phase
            stick = rng.random((m, NUM_SPARSE)) < cfg.stickiness
        for f in range(NUM_SPARSE):
            if cfg.locality:
                uf = u[:, f]
                if self.session_fields[f]:
                    h = _mix64(session.astype(np.uint64) * np.uint64(31) + np.uint64(f + 1))
                    uf = np.where(stick[:, f], _uniform(h), uf)
                    off = np.where(stick[:, f], np.maximum(start, 0) // cfg.drift_period,
                                   offset)
                else:
                    off = offset
                keys[:, f] = (f << 32) | self._values(f, self.samplers[f].ranks(uf), off)
            else:
                keys[:, f] = (f << 32) | self._values(f, self.samplers[f].ranks(u[:, f]), 0)
        if cfg.missing_rate > 0:
            miss = rng.random((m, NUM_SPARSE)) < cfg.missing_rate
            fields = np.broadcast_to(np.arange(NUM_SPARSE, dtype=np.int64) << 32, keys.shape)
            keys = np.where(miss, EMPTY_KEY_BIT | fields, keys)
        return keys

    def keys(self, num_samples: int, start: int = 0) -> np.ndarray:
        """Keys of samples ``[start, start + num_samples)`` as (n, 26) int64 (fast path)."""
        parts = []
        for c in range(start // CHUNK, (start + num_samples + CHUNK - 1) // CHUNK):
            parts.append(self._chunk_keys(c, CHUNK))
        if not parts:
            return np.zeros((0, NUM_SPARSE), dtype=np.int64)
        allk = np.concatenate(parts)
        off = start - (start // CHUNK) * CHUNK
        return allk[off:off + num_samples]

    def _dense_raw(self, c: int, m: int) -> np.ndarray:
        rng = np.random.default_rng([self.config.seed, c, 1])
        x = np.floor(np.exp(rng.normal(self.dense_mu, 1.2, (m, NUM_DENSE))))
        x[:, 1] -= rng.integers(0, 2, m) * rng.integers(0, 3, m)  # I2 has negatives, as Criteo
        return x.astype(np.int64)

    def _labels(self, c: int, keys: np.ndarray, dense_raw: np.ndarray) -> np.ndarray:
        h = _mix64(keys.astype(np.uint64) ^ np.uint64(self.config.seed * 0x1000193))
        w = (_uniform(h) - 0.5) * 2 * np.sqrt(3) * self.field_scale  # unit-variance * scale
        d = dense_transform(dense_raw)
        logit = self.bias + w.sum(axis=1) + (d - self.dense_mu) @ self.dense_w
        rng = np.random.default_rng([self.config.seed, c, 2])
        return (rng.random(len(keys)) < 1 / (1 + np.exp(-logit))).astype(np.int8)

    def batches(self, num_samples: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yields (labels int8, raw dense int64 (m, 13), keys int64 (m, 26)) chunks."""
        done = 0
        c = 0
        while done < num_samples:
            m = min(CHUNK, num_samples - done)
            keys = self._chunk_keys(c, CHUNK)[:m]
            dense = self._dense_raw(c, CHUNK)[:m]
            yield self._labels(c, keys, dense), dense, keys
            done += m
            c += 1

    def batch(self, num_samples: int) -> CriteoBatch:
        """The first ``num_samples`` samples parsed as a reader would return them."""
        parts = list(self.batches(num_samples))
        labels = np.concatenate([p[0] for p in parts])
        dense = dense_transform(np.concatenate([p[1] for p in parts]))
        return CriteoBatch(labels=labels, dense=dense, keys=np.concatenate([p[2] for p in parts]))

    def write_tsv(self, path: str | os.PathLike, num_samples: int) -> None:
        """Writes ``num_samples`` lines of Criteo Kaggle TSV (label, I1-I13, C1-C26 hex).

        The file appears whole or not at all (a temporary file beside it, then a rename), so an
        interrupted run leaves no truncated file that ``make`` would take as up to date.
        """
        with atomic_text_file(path) as f:
            for labels, dense, keys in self.batches(num_samples):
                values = keys & 0xFFFFFFFF
                empty = (keys & EMPTY_KEY_BIT) != 0
                lines = []
                for i in range(len(labels)):
                    cats = ["" if empty[i, j] else format(v, "08x")
                            for j, v in enumerate(values[i].tolist())]
                    ints = [str(v) for v in dense[i].tolist()]
                    lines.append("\t".join([str(int(labels[i]))] + ints + cats))
                f.write("\n".join(lines))
                f.write("\n")


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m herald_tf.data --out FILE --samples N [--scale S] [--locality]``."""
    p = argparse.ArgumentParser(description="Write a synthetic Criteo Kaggle-format TSV.")
    p.add_argument("--out", required=True, help="output .tsv path")
    p.add_argument("--samples", type=int, required=True, help="number of lines")
    p.add_argument("--scale", type=float, default=0.05, help="factor on Criteo cardinalities")
    p.add_argument("--alpha", type=float, default=1.05, help="power-law exponent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--locality", action="store_true", help="sessions and popularity drift")
    p.add_argument("--missing-rate", type=float, default=0.0, help="empty categorical values")
    a = p.parse_args(argv)
    cfg = SyntheticConfig(scale=a.scale, alpha=a.alpha, seed=a.seed, locality=a.locality,
                          missing_rate=a.missing_rate)
    SyntheticCriteo(cfg).write_tsv(a.out, a.samples)
    print(f"wrote {a.samples} samples to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
