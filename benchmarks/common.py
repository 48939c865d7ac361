"""Shared benchmark plumbing: --quick, timing by median of repeats, table printing, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """Arguments every benchmark takes: --quick (≤ 60 s, same JSON keys) and --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small run (within 60 s) writing the same JSON keys")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    if extra:
        extra(parser)
    return parser.parse_args()


def interleaved_seconds(fns: dict[str, Callable[[], Any]], repeats: int,
                        warmup: int = 2) -> dict[str, float]:
    """Median wall time of each function, timed in alternation so load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def write_json(name: str, result: dict[str, Any], out: str | None) -> str:
    """Writes ``result`` to benchmarks/results/<name>.json (or ``out``); returns the path."""
    path = out or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
        f.write("\n")
    return path
