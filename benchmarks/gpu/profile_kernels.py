"""Per-kernel device times of the CUDA core (torch.profiler / CUPTI), and lookup timings of
library variants built with different tuning macros. A development aid, not a benchmark of record.

    python3 benchmarks/gpu/profile_kernels.py [--variants lib1.so lib2.so ...] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_kernels import DIM, TorchAllocator, median_ms, zipf_slots  # noqa: E402
from herald_cuda import Combiner, Library, Optimizer, OptimizerParams  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--zipf", action="store_true", help="zipf(1.1) slots instead of uniform")
    parser.add_argument(
        "--fused",
        action="store_true",
        help="profile the fused dedup + SGD apply and torch's unique + index_add_ path instead",
    )
    args = parser.parse_args()
    slots = 1_000_000 if args.quick else 10_000_000
    batch, hot = 16384, 26
    n = batch * hot
    dev = torch.device("cuda")
    stream = torch.cuda.Stream()
    torch.cuda.set_stream(stream)
    sp = stream.cuda_stream
    rng = np.random.default_rng(7)
    storage = torch.empty((slots, DIM), dtype=torch.float32, device=dev).uniform_(-0.05, 0.05)
    if args.zipf:
        perm = rng.permutation(slots).astype(np.int64)
        ids = [torch.from_numpy(zipf_slots(rng, n, slots, perm)).to(dev) for _ in range(4)]
    else:
        ids = [torch.from_numpy(rng.integers(0, slots, n)).to(dev) for _ in range(4)]
    out = torch.empty((batch, DIM), dtype=torch.float32, device=dev)
    record = torch.empty(1, dtype=torch.int64, device=dev)
    lookup_bytes = n * DIM * 4 + batch * DIM * 4 + n * 8

    grad_rows = torch.randn((n, DIM), dtype=torch.float32, device=dev) * 1e-3
    unique = torch.empty(n, dtype=torch.int64, device=dev)
    num = torch.empty(1, dtype=torch.int64, device=dev)
    summed = torch.empty((n, DIM), dtype=torch.float32, device=dev)
    versions = torch.zeros(slots, dtype=torch.int64, device=dev)
    adam_state = torch.zeros((slots, 2 * DIM), dtype=torch.float32, device=dev)
    alloc = TorchAllocator(stream)

    def apply(lib, kind):
        state = adam_state if kind == Optimizer.ADAM else None
        p = OptimizerParams(int(kind), 0.01, 0.9, 0.999, 1e-4, 0.1)
        lib.call(
            "herald_cuda_sparse_apply",
            ctypes.addressof(p),
            storage.data_ptr(),
            state.data_ptr() if state is not None else None,
            versions.data_ptr(),
            slots,
            DIM,
            unique.data_ptr(),
            n,
            num.data_ptr(),
            summed.data_ptr(),
            sp,
            alloc.ptr,
            record.data_ptr(),
        )

    for path in args.variants:
        lib = Library(path)
        lib.call("herald_cuda_error_reset", record.data_ptr(), sp)
        lib.call(
            "herald_cuda_dedup_grad",
            ids[0].data_ptr(),
            n,
            slots,
            grad_rows.data_ptr(),
            None,
            n,
            int(Combiner.NONE),
            DIM,
            unique.data_ptr(),
            None,
            num.data_ptr(),
            summed.data_ptr(),
            sp,
            alloc.ptr,
            record.data_ptr(),
        )
        t_sgd = median_ms(lambda i, lib=lib: apply(lib, Optimizer.SGD), 20)
        t_adam = median_ms(lambda i, lib=lib: apply(lib, Optimizer.ADAM), 20)
        print(
            f"variant {Path(path).parent.name}: apply sgd {t_sgd * 1e3:.1f} us, "
            f"adam {t_adam * 1e3:.1f} us"
        )

        def run(i, lib=lib):
            lib.call(
                "herald_cuda_lookup",
                storage.data_ptr(),
                slots,
                DIM,
                ids[i % 4].data_ptr(),
                n,
                None,
                batch,
                int(Combiner.SUM),
                out.data_ptr(),
                sp,
                None,
                record.data_ptr(),
            )

        ms = median_ms(run, 20)
        print(
            f"variant {Path(path).parent.name}: lookup+sum {ms * 1e3:.1f} us "
            f"{lookup_bytes / ms / 1e6:.0f} GB/s"
        )

    lib = Library()
    lib.call("herald_cuda_error_reset", record.data_ptr(), sp)

    def fused_step(i):
        p = OptimizerParams(int(Optimizer.SGD), 0.01, 0.9, 0.999, 1e-4, 0.1)
        lib.dedup_apply_rows(p, storage, None, versions, ids[i % 4], grad_rows, unique, num,
                             summed, sp, alloc.ptr, record.data_ptr())
        uniq, inv = torch.unique(ids[i % 4], return_inverse=True)
        g = torch.zeros((uniq.numel(), DIM), dtype=torch.float32, device=dev)
        g.index_add_(0, inv, grad_rows)
        storage.index_add_(0, uniq, g, alpha=-0.01)

    def step(i):
        lib.call(
            "herald_cuda_lookup",
            storage.data_ptr(),
            slots,
            DIM,
            ids[i % 4].data_ptr(),
            n,
            None,
            batch,
            int(Combiner.SUM),
            out.data_ptr(),
            sp,
            None,
            record.data_ptr(),
        )
        lib.call(
            "herald_cuda_dedup_grad",
            ids[i % 4].data_ptr(),
            n,
            slots,
            grad_rows.data_ptr(),
            None,
            n,
            int(Combiner.NONE),
            DIM,
            unique.data_ptr(),
            None,
            num.data_ptr(),
            summed.data_ptr(),
            sp,
            alloc.ptr,
            record.data_ptr(),
        )
        for kind, state in ((Optimizer.SGD, None), (Optimizer.ADAM, adam_state)):
            p = OptimizerParams(int(kind), 0.01, 0.9, 0.999, 1e-4, 0.1)
            lib.call(
                "herald_cuda_sparse_apply",
                ctypes.addressof(p),
                storage.data_ptr(),
                state.data_ptr() if state is not None else None,
                versions.data_ptr(),
                slots,
                DIM,
                unique.data_ptr(),
                n,
                num.data_ptr(),
                summed.data_ptr(),
                sp,
                alloc.ptr,
                record.data_ptr(),
            )

    run_step = fused_step if args.fused else step
    for i in range(3):
        run_step(i)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(5):
            run_step(i)
        torch.cuda.synchronize()
    table = prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=30, max_name_column_width=70
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
