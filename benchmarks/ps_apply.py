"""PS update of one step that N workers pushed: the shard's sum over ranks and optimizer apply.

A shard applies step t once every worker pushed it (DESIGN §2a Aggregation): one worker's part
is applied as it is; with N ≥ 2 workers each key's gradients are summed over the ranks (from
zero, in rank order) and the optimizer applied once per key (``TableShard.apply``). Here each
worker pushes 53,248 keys to the shard (4096 × 26 keys over 2 shards, dim 64, SGD) drawn from a
pool of twice as many, so two workers share about half their keys; the keys' rows are resolved
beforehand, as the PS does while gradients arrive. In the same run, ``numpy_sum`` does the N ≥ 2
sum the way the PS did before (``np.unique`` and one fancy-indexed add per rank, then the
checking ``sparse_apply``), as a baseline. Variants are timed in alternation (medians).

Writes benchmarks/results/ps_apply.json: milliseconds per step for N = 1, 2, 4, rows updated per
second, ``speedup_vs_numpy_sum`` per N ≥ 2, and ``per_pushed_row_vs_one_worker`` (time per pushed
row with N workers ÷ that with one: the price of the aggregation).
"""

from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from common import interleaved_seconds, machine, parse_args, print_table, write_json  # noqa: E402

from herald_tf import _core  # noqa: E402
from herald_tf.config import OptimizerConfig, TableConfig  # noqa: E402
from herald_tf.ps.table import TableShard  # noqa: E402

KEYS_PER_WORKER, DIM = 4096 * 26 // 2, 64
WORKERS = (1, 2, 4)


def numpy_sum_apply(table: TableShard, rows: list[np.ndarray], grads: list[np.ndarray],
                    learning_rate: float) -> int:
    """The earlier N ≥ 2 path: sorted unique rows, a fancy-indexed add per rank, checked apply."""
    all_rows = np.concatenate(rows)
    unique_rows, inverse = np.unique(all_rows, return_inverse=True)
    summed = np.zeros((unique_rows.shape[0], table.dim), dtype=np.float32)
    start = 0
    for g in grads:
        summed[inverse[start:start + g.shape[0]]] += g
        start += g.shape[0]
    _core.sparse_apply(table.config.optimizer, table.values, table.state, table.versions,
                       unique_rows, summed, learning_rate=learning_rate)
    return int(unique_rows.shape[0])


def main() -> int:
    args = parse_args(__doc__.split("\n\n")[0])
    repeats = 5 if args.quick else 15
    rng = np.random.default_rng(0)
    cfg = TableConfig("emb", DIM, seed=1, optimizer=OptimizerConfig("sgd", learning_rate=0.01))
    table = TableShard(cfg, 2 * KEYS_PER_WORKER)
    pool = np.unique(rng.integers(0, 2**62, size=2 * KEYS_PER_WORKER + 1000, dtype=np.int64))
    pool = pool[:2 * KEYS_PER_WORKER]
    table.apply([pool], [np.zeros((pool.shape[0], DIM), np.float32)], 0.0, distinct=True)
    keys = [rng.choice(pool, KEYS_PER_WORKER, replace=False) for _ in range(max(WORKERS))]
    grads = [rng.normal(size=(KEYS_PER_WORKER, DIM)).astype(np.float32) for _ in keys]
    resolved = [table.resolve_distinct(k, "keys") for k in keys]
    lr = 0.01

    fns = {}
    for n in WORKERS:
        fns[f"herald_{n}"] = (lambda n=n: table.apply(keys[:n], grads[:n], lr, distinct=n == 1,
                                                      rows=resolved[:n]))
        if n > 1:
            fns[f"numpy_sum_{n}"] = (lambda n=n: numpy_sum_apply(
                table, [r.rows for r in resolved[:n]], grads[:n], lr))
    seconds = interleaved_seconds(fns, repeats)

    result = {**machine(), "keys_per_worker": KEYS_PER_WORKER, "dim": DIM, "optimizer": "sgd",
              "repetitions": repeats, "quick": args.quick, "workers": {}}
    rows = []
    one = seconds["herald_1"] / KEYS_PER_WORKER
    for n in WORKERS:
        updated = int(np.unique(np.concatenate(keys[:n])).shape[0])
        entry = {"ms": round(1e3 * seconds[f"herald_{n}"], 2), "rows_updated": updated,
                 "rows_updated_per_s": round(updated / seconds[f"herald_{n}"]),
                 "per_pushed_row_vs_one_worker": round(
                     seconds[f"herald_{n}"] / (n * KEYS_PER_WORKER) / one, 3)}
        if n > 1:
            entry["numpy_sum_ms"] = round(1e3 * seconds[f"numpy_sum_{n}"], 2)
            entry["speedup_vs_numpy_sum"] = round(seconds[f"numpy_sum_{n}"] /
                                                  seconds[f"herald_{n}"], 2)
        result["workers"][str(n)] = entry
        rows.append((str(n), f"{entry['ms']:.1f}", f"{entry.get('numpy_sum_ms', '-')}",
                     f"{entry.get('speedup_vs_numpy_sum', '-')}",
                     f"{entry['per_pushed_row_vs_one_worker']:.2f}"))
    print_table(f"PS update of one step, {KEYS_PER_WORKER} keys per worker, dim {DIM}, SGD",
                rows, ("workers", "ms", "numpy_sum ms", "speedup", "per row vs 1 worker"))
    print("wrote", write_json("ps_apply", result, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
