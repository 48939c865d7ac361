"""Embedding rows (and bytes) moved per sample by each mode, replaying schedules (no training).

Grid: N in {2, 4, 8}, cache ratio in {0.01, 0.05, 0.1} (rows each worker caches, as a fraction
of the table's rows), B in {256, 1024}, on two synthetic Criteo-format traces at scale 0.05
(~1.69 M rows): i.i.d. power-law keys and the time-ordered trace (sessions + popularity drift).
``--data PATH`` adds a Criteo TSV (its table size is taken as its number of distinct keys).
Modes: ps; het bound 0 with LRU and with LFU; herald without allocation, with Herald's greedy
allocation and with the grouping allocator (our best). Rows first touched are never pulled.

Writes benchmarks/results/transmissions.json (``herald_vs_het0`` and ``herald_vs_ps``: best
allocator / het bound 0 (LRU) and / ps at N = 8, ratio 0.1, B = 256 on the i.i.d. trace,
cumulative over the trace, cold start included) and ``steady_state`` (the same ratios over the
last quarter of a 4x longer trace), and prints the grid. ``--quick`` replays fewer samples
(same keys in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from herald_tf.config import OptimizerKind  # noqa: E402
from herald_tf.data import SyntheticConfig, SyntheticCriteo, read_keys  # noqa: E402
from herald_tf.scheduler import SchedulerConfig  # noqa: E402
from herald_tf.scheduler._native import NativeEngine  # noqa: E402

WORKERS = (2, 4, 8)
RATIOS = (0.01, 0.05, 0.1)
BATCHES = (256, 1024)
MODES = {
    "ps": dict(policy="ps", allocation="none"),
    "het0_lru": dict(policy="het", allocation="none", eviction="lru"),
    "het0_lfu": dict(policy="het", allocation="none", eviction="lfu"),
    "herald_none": dict(policy="herald", allocation="none"),
    "herald_greedy": dict(policy="herald", allocation="greedy"),
    "herald_grouped": dict(policy="herald", allocation="grouped"),
}
BEST = "herald_grouped"
GOALS = {"herald_vs_het0": 0.80, "herald_vs_ps": 0.78}
RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                      "transmissions.json")
_TRACES: dict[str, np.ndarray] = {}


def _replay(args: tuple[str, int, float, int, str, int, int]) -> dict:
    trace_name, n, ratio, b, mode, table_rows, dim = args
    keys = _TRACES[trace_name]
    cfg = SchedulerConfig(
        num_workers=n, batch_size=b, num_fields=keys.shape[1],
        cache_capacity=0 if mode == "ps" else int(ratio * table_rows), dim=dim, **MODES[mode],
    )
    engine = NativeEngine(cfg, emit_plans=False)
    g = cfg.global_batch
    for t in range(len(keys) // g):
        engine.step(keys[t * g:(t + 1) * g])
    tr = engine.traffic
    s = max(tr.samples, 1)
    return {
        "trace": trace_name, "N": n, "ratio": ratio, "B": b, "mode": mode,
        "rows_per_sample": tr.rows / s, "pull_per_sample": tr.pull_rows / s,
        "push_per_sample": tr.push_rows / s, "flush_per_sample": tr.flush_rows / s,
        "bytes_per_sample": {k.name.lower(): tr.bytes_per_sample(dim, k) for k in OptimizerKind},
        "samples": tr.samples,
    }


def _steady_state(samples: int, dim: int) -> dict:
    """Ratios at N = 8, ratio 0.1, B = 256 on a longer i.i.d. trace, over its last quarter only
    (the grid's cumulative numbers include the cold start, where first touches cost nothing)."""
    gen = SyntheticCriteo(SyntheticConfig(scale=0.05, seed=1))
    keys, rows = gen.keys(samples), sum(gen.cards)
    moved = {}
    for mode in ("ps", "het0_lru", "herald_greedy", BEST):
        cfg = SchedulerConfig(num_workers=8, batch_size=256, num_fields=26, dim=dim,
                              cache_capacity=0 if mode == "ps" else int(0.1 * rows),
                              **MODES[mode])
        engine = NativeEngine(cfg, emit_plans=False)
        steps = samples // cfg.global_batch
        for t in range(steps):
            if t == steps - steps // 4:
                start = engine.traffic.rows
            engine.step(keys[t * cfg.global_batch:(t + 1) * cfg.global_batch])
        moved[mode] = (engine.traffic.rows - start) / ((steps // 4) * cfg.global_batch)
    return {
        "samples": samples, "window": "last quarter", "rows_per_sample": moved,
        "herald_vs_het0": moved[BEST] / moved["het0_lru"],
        "herald_vs_ps": moved[BEST] / moved["ps"],
        "herald_greedy_vs_het0": moved["herald_greedy"] / moved["het0_lru"],
        "herald_greedy_vs_ps": moved["herald_greedy"] / moved["ps"],
    }


def _init(traces: dict[str, np.ndarray]) -> None:
    _TRACES.update(traces)


def _row(results: list[dict], trace: str, n: int, ratio: float, b: int, mode: str) -> dict:
    for r in results:
        if (r["trace"], r["N"], r["ratio"], r["B"], r["mode"]) == (trace, n, ratio, b, mode):
            return r
    raise KeyError((trace, n, ratio, b, mode))


def main(argv: list[str] | None = None) -> int:
    """Runs the grid, prints it and writes the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer samples (< 60 s)")
    p.add_argument("--samples", type=int, default=0, help="samples per trace (0: default)")
    p.add_argument("--data", help="also replay this Criteo TSV")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension for bytes")
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--out", default=RESULT)
    a = p.parse_args(argv)
    samples = a.samples or (1 << 15 if a.quick else 1 << 18)
    t0 = time.time()
    traces: dict[str, np.ndarray] = {}
    table_rows: dict[str, int] = {}
    for name, locality in (("iid", False), ("time_ordered", True)):
        gen = SyntheticCriteo(SyntheticConfig(scale=0.05, locality=locality, seed=0))
        traces[name] = gen.keys(samples)
        table_rows[name] = sum(gen.cards)
    if a.data:
        traces["data"] = read_keys(a.data, limit=None if not a.samples else a.samples)
        table_rows["data"] = len(np.unique(traces["data"]))
    jobs = [(t, n, r, b, m, table_rows[t], a.dim) for t in traces for n in WORKERS
            for r in RATIOS for b in BATCHES for m in MODES]
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs, initializer=_init, initargs=(traces,)) as pool:
            results = list(pool.map(_replay, jobs, chunksize=4))
    else:
        _init(traces)
        results = [_replay(j) for j in jobs]
    out: dict = {
        "quick": a.quick, "samples_per_trace": samples, "dim": a.dim,
        "table_rows": table_rows, "goals": GOALS, "best_allocator": BEST,
        "baseline_het0": "het0_lru", "grid": results,
    }
    for trace in traces:
        prefix = "" if trace == "iid" else f"{trace}_"
        ref = {m: _row(results, trace, 8, 0.1, 256, m)["rows_per_sample"] for m in MODES}
        for mode in ("herald_greedy", "herald_none", BEST):
            name = "herald" if mode == BEST else mode
            out[f"{prefix}{name}_vs_het0"] = ref[mode] / ref["het0_lru"]
            out[f"{prefix}{name}_vs_het0_lfu"] = ref[mode] / ref["het0_lfu"]
            out[f"{prefix}{name}_vs_ps"] = ref[mode] / ref["ps"]
    out["goals_met"] = {k: out[k] <= v for k, v in GOALS.items()}
    out["steady_state"] = _steady_state(1 << 16 if a.quick else 1 << 20, a.dim)
    out["steady_state"]["goals_met"] = {k: out["steady_state"][k] <= v for k, v in GOALS.items()}
    out["seconds"] = time.time() - t0
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    header = f"{'trace':13} {'N':>2} {'ratio':>5} {'B':>5} " + " ".join(f"{m:>14}" for m in MODES)
    print(f"rows moved per sample ({samples} samples per trace; {out['seconds']:.0f} s)")
    print(header)
    for trace in traces:
        for n in WORKERS:
            for r in RATIOS:
                for b in BATCHES:
                    cells = " ".join(f"{_row(results, trace, n, r, b, m)['rows_per_sample']:14.3f}"
                                     for m in MODES)
                    print(f"{trace:13} {n:2d} {r:5.2f} {b:5d} {cells}")
    for k in sorted(out):
        if "_vs_" in k:
            print(f"{k} = {out[k]:.3f}" + (f" (goal <= {GOALS[k]})" if k in GOALS else ""))
    ss = out["steady_state"]
    print(f"steady state (iid, N=8, ratio 0.1, B=256, last quarter of {ss['samples']} samples): "
          + ", ".join(f"{k} = {ss[k]:.3f}" for k in ss if "_vs_" in k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
