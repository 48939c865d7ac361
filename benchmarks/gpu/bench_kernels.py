"""Benchmark of the CUDA core against PyTorch on one GPU; writes gpu_kernels.json.

Setup (issue 7): dim 128 fp32, a 10M-row storage, B = 16384 bags × 26 ids, uniform and
zipf(1.1) slots. In the same run: device-to-device copy bandwidth, torch embedding_bag(sum), and
torch's unique + index_add_ SGD path. GB/s count the bytes a kernel must move at least
(DESIGN §8): rows read × dim × 4 + outputs written + index bytes (+ rows/state written back for
optimizers), compared with the copy bandwidth (bytes read + written) of the same run.

    python3 benchmarks/gpu/bench_kernels.py [--quick] [--out DIR]

Times are medians over samples of CUDA-event intervals around 8 back-to-back calls on one
stream (per call), after warm-up, with
the id sets rotated (4 sets) so repeated runs do not measure a cached input. Herald calls use the
asynchronous check mode (a caller-owned error record, no host sync), checked once at the end, and
PyTorch's caching allocator injected for temporary memory (as the TF adapter injects TF's); the
dedup + SGD path is also timed with the default allocator (cudaMallocAsync on the default pool).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from herald_cuda import (  # noqa: E402
    ALLOCATE,
    DEALLOCATE,
    Allocator,
    Combiner,
    Library,
    Optimizer,
    OptimizerParams,
)

DIM = 128
BATCH, IDS_PER_BAG = 16384, 26  # the batch: 425 984 lookups


def median_ms(fn, reps: int, warmup: int = 3, per_sample: int = 8) -> float:
    """Median over `reps` samples of (event interval around `per_sample` back-to-back calls) /
    per_sample: calls are enqueued ahead as in a training loop, so host launch overhead overlaps
    device work instead of being counted as device time."""
    for i in range(warmup):
        fn(i)
    torch.cuda.synchronize()
    times = []
    for i in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for j in range(per_sample):
            fn(i * per_sample + j)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / per_sample)
    return statistics.median(times)


class TorchAllocator:
    """Injects PyTorch's caching allocator (stream-ordered, like TF's) into the CUDA core."""

    def __init__(self, stream):
        def allocate(_ctx, nbytes, _stream):
            return torch.cuda.caching_allocator_alloc(max(int(nbytes), 1), stream=stream)

        def deallocate(_ctx, ptr, _nbytes, _stream):
            torch.cuda.caching_allocator_delete(ptr)

        self._a, self._d = ALLOCATE(allocate), DEALLOCATE(deallocate)
        self.struct = Allocator(self._a, self._d, None)
        self.ptr = ctypes.addressof(self.struct)


def run_arguments(description: str, default_out: str) -> tuple[argparse.Namespace, int, int]:
    """``--quick`` and ``--out``, then (args, storage rows, repetitions) of the GPU benchmarks'
    batch: ``BATCH`` bags of ``IDS_PER_BAG`` ids."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="1M rows, fewer repetitions")
    parser.add_argument("--out", default=os.environ.get("OUT") or default_out)
    args = parser.parse_args()
    return args, 1_000_000 if args.quick else 10_000_000, 5 if args.quick else 20


def run_record(dev, quick: bool, slots: int, batch: int, hot: int, reps: int) -> dict:
    """The fields every GPU benchmark result starts with: card, versions and sizes."""
    props = torch.cuda.get_device_properties(dev)
    return {
        "device": props.name,
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": quick,
        "slots": slots,
        "dim": DIM,
        "batch": batch,
        "ids_per_bag": hot,
        "lookups": batch * hot,
        "repetitions": reps,
    }


def copy_bandwidth_gbps(dev, reps: int) -> float:
    """Device-to-device copy rate of a 2 GiB buffer, bytes read + written: the yardstick."""
    nbytes = 2 << 30
    a = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).normal_()
    b = torch.empty_like(a)
    return 2 * nbytes / median_ms(lambda i: b.copy_(a), reps) / 1e6


def zipf_slots(rng, size, slots, perm):
    z = rng.zipf(1.1, size=size).astype(np.int64)
    return perm[(z - 1) % slots]


def draw_ids(slots: int, n: int, sets: int) -> dict[str, list[np.ndarray]]:
    """The benchmarks' slot ids, the same in every script (one seed, one draw order): ``sets``
    batches of ``n`` uniform ids, then ``sets`` of ``n`` zipf(1.1) ids."""
    rng = np.random.default_rng(1234)
    perm = rng.permutation(slots).astype(np.int64)
    return {"uniform": [rng.integers(0, slots, n) for _ in range(sets)],
            "zipf": [zipf_slots(rng, n, slots, perm) for _ in range(sets)]}


def main() -> int:
    args, slots, reps = run_arguments(__doc__.splitlines()[0], "benchmarks/results")
    batch, hot = BATCH, IDS_PER_BAG
    n = batch * hot
    sets = 4
    lib = Library()
    dev = torch.device("cuda")
    stream = torch.cuda.Stream()
    torch.cuda.set_stream(stream)
    sp = stream.cuda_stream
    t_start = time.time()
    result = run_record(dev, args.quick, slots, batch, hot, reps)
    copy_gbps = result["copy_gbps"] = copy_bandwidth_gbps(dev, reps)

    storage = torch.empty((slots, DIM), dtype=torch.float32, device=dev).uniform_(-0.05, 0.05)
    record = torch.empty(1, dtype=torch.int64, device=dev)
    rec = record.data_ptr()
    lib.call("herald_cuda_error_reset", rec, sp)

    id_sets = {dist: [torch.from_numpy(ids).to(dev) for ids in drawn]
               for dist, drawn in draw_ids(slots, n, sets).items()}
    result["unique_per_batch"] = {k: int(torch.unique(v[0]).numel()) for k, v in id_sets.items()}

    # ---------------------------------------------------------------- lookup + sum
    out = torch.empty((batch, DIM), dtype=torch.float32, device=dev)
    lookup_bytes = n * DIM * 4 + batch * DIM * 4 + n * 8
    for dist, ids_list in id_sets.items():

        def ours(i, ids_list=ids_list, err=rec, out=out):
            lib.call(
                "herald_cuda_lookup",
                storage.data_ptr(),
                slots,
                DIM,
                ids_list[i % sets].data_ptr(),
                n,
                None,
                batch,
                int(Combiner.SUM),
                out.data_ptr(),
                sp,
                None,
                err,
            )

        def ours_sync(i, ids_list=ids_list):
            ours(i, err=None)

        bags = [ids.view(batch, hot) for ids in ids_list]

        def theirs(i, bags=bags):
            torch.nn.functional.embedding_bag(bags[i % sets], storage, mode="sum")

        ours(0)
        ref = torch.nn.functional.embedding_bag(bags[0], storage, mode="sum")
        err = float((out - ref).abs().max() / ref.abs().max())
        t_ours = median_ms(ours, reps)
        t_sync = median_ms(ours_sync, reps)
        t_torch = median_ms(theirs, reps)
        result[f"lookup_sum_{dist}"] = {
            "herald_ms": t_ours,
            "herald_sync_check_ms": t_sync,
            "torch_embedding_bag_ms": t_torch,
            "herald_gbps": lookup_bytes / t_ours / 1e6,
            "torch_gbps": lookup_bytes / t_torch / 1e6,
            "herald_fraction_of_copy": lookup_bytes / t_ours / 1e6 / copy_gbps,
            "speedup_vs_torch": t_torch / t_ours,
            "max_rel_diff_vs_torch": err,
        }
    del out

    # ---------------------------------------------------------------- dedup + optimizer apply
    grad_rows = torch.randn((n, DIM), dtype=torch.float32, device=dev) * 1e-3
    grad_out = torch.randn((batch, DIM), dtype=torch.float32, device=dev) * 1e-3
    unique = torch.empty(n, dtype=torch.int64, device=dev)
    num = torch.empty(1, dtype=torch.int64, device=dev)
    summed = torch.empty((n, DIM), dtype=torch.float32, device=dev)
    versions = torch.zeros(slots, dtype=torch.int64, device=dev)
    states = {
        Optimizer.SGD: None,
        Optimizer.ADAGRAD: torch.full((slots, DIM), 0.1, dtype=torch.float32, device=dev),
        Optimizer.ADAM: torch.zeros((slots, 2 * DIM), dtype=torch.float32, device=dev),
    }
    params = {k: OptimizerParams(int(k), 0.01, 0.9, 0.999, 1e-4, 0.1) for k in Optimizer}
    lr = 0.01

    torch_alloc = TorchAllocator(stream)
    allocator = {"ptr": torch_alloc.ptr}

    def dedup(ids, combiner=Combiner.NONE):
        grads = grad_rows if combiner == Combiner.NONE else grad_out
        lib.call(
            "herald_cuda_dedup_grad",
            ids.data_ptr(),
            n,
            slots,
            grads.data_ptr(),
            None,
            n if combiner == Combiner.NONE else batch,
            int(combiner),
            DIM,
            unique.data_ptr(),
            None,
            num.data_ptr(),
            summed.data_ptr(),
            sp,
            allocator["ptr"],
            rec,
        )

    def apply(kind):
        state = states[kind]
        lib.call(
            "herald_cuda_sparse_apply",
            ctypes.addressof(params[kind]),
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
            allocator["ptr"],
            rec,
        )

    def dedup_apply(ids, kind):
        lib.dedup_apply_rows(params[kind], storage, states[kind], versions, ids, grad_rows,
                             unique, num, summed, sp, allocator["ptr"], rec)

    for dist, ids_list in id_sets.items():
        entry: dict = {}
        u = result["unique_per_batch"][dist]

        def torch_sgd(i, ids_list=ids_list):
            uniq, inv = torch.unique(ids_list[i % sets], return_inverse=True)
            g = torch.zeros((uniq.numel(), DIM), dtype=torch.float32, device=dev)
            g.index_add_(0, inv, grad_rows)
            storage.index_add_(0, uniq, g, alpha=-lr)

        entry["torch_unique_index_add_sgd_ms"] = median_ms(torch_sgd, reps)
        entry["dedup_ms"] = median_ms(lambda i, ids_l=ids_list: dedup(ids_l[i % sets]), reps)
        entry["dedup_pooled_sum_ms"] = median_ms(
            lambda i, ids_l=ids_list: dedup(ids_l[i % sets], Combiner.SUM), reps
        )
        base_bytes = n * 8 + n * DIM * 4 + u * 8
        for kind in Optimizer:
            name = kind.name.lower()
            row_moves = {Optimizer.SGD: 2, Optimizer.ADAGRAD: 4, Optimizer.ADAM: 6}[kind]
            t_pipe = median_ms(
                lambda i, ids_l=ids_list, k=kind: (dedup(ids_l[i % sets]), apply(k)), reps
            )
            dedup(ids_list[0])
            t_apply = median_ms(lambda i, k=kind: apply(k), reps)
            apply_bytes = u * 8 + u * DIM * 4 * (1 + row_moves)  # grads + rows/state r/w
            entry[f"dedup_{name}_ms"] = t_pipe
            entry[f"apply_{name}_ms"] = t_apply
            entry[f"dedup_{name}_gbps"] = (base_bytes + u * DIM * 4 * row_moves) / t_pipe / 1e6
            entry[f"apply_{name}_gbps"] = apply_bytes / t_apply / 1e6
        allocator["ptr"] = None  # the default: cudaMallocAsync on the device's default pool
        entry["dedup_sgd_default_pool_ms"] = median_ms(
            lambda i, ids_l=ids_list: (dedup(ids_l[i % sets]), apply(Optimizer.SGD)), reps
        )
        allocator["ptr"] = torch_alloc.ptr
        for kind in Optimizer:
            name = kind.name.lower()
            t = median_ms(lambda i, ids_l=ids_list, k=kind: dedup_apply(ids_l[i % sets], k), reps)
            row_moves = {Optimizer.SGD: 2, Optimizer.ADAGRAD: 4, Optimizer.ADAM: 6}[kind]
            entry[f"fused_dedup_apply_{name}_ms"] = t
            entry[f"fused_dedup_apply_{name}_gbps"] = (
                (base_bytes + u * DIM * 4 * row_moves) / t / 1e6
            )
        # The goal's "dedup + SGD apply": the fused call (herald_cuda_dedup_apply); the two-call
        # path (dedup_grad, then sparse_apply with its own device checks) is reported beside it.
        entry["dedup_sgd_speedup_vs_torch"] = (
            entry["torch_unique_index_add_sgd_ms"] / entry["fused_dedup_apply_sgd_ms"]
        )
        entry["two_call_dedup_sgd_speedup_vs_torch"] = (
            entry["torch_unique_index_add_sgd_ms"] / entry["dedup_sgd_ms"]
        )
        for name in ("adagrad", "adam"):
            entry[f"{name}_over_sgd_apply"] = entry[f"apply_{name}_ms"] / entry["apply_sgd_ms"]
            entry[f"{name}_over_sgd_dedup_apply"] = (
                entry[f"dedup_{name}_ms"] / entry["dedup_sgd_ms"]
            )
            entry[f"{name}_over_sgd_fused"] = (
                entry[f"fused_dedup_apply_{name}_ms"] / entry["fused_dedup_apply_sgd_ms"]
            )
        result[f"grad_apply_{dist}"] = entry

    code, msg = lib.call("herald_cuda_error_read", rec, sp, check=False)
    result["device_checks"] = "ok" if code == 0 else msg
    uni = result["lookup_sum_uniform"]
    gu = result["grad_apply_uniform"]
    result["goals"] = {
        "lookup_sum_speedup_vs_torch_ge_1.3": uni["speedup_vs_torch"] >= 1.3,
        "lookup_sum_fraction_of_copy_ge_0.7": uni["herald_fraction_of_copy"] >= 0.7,
        "dedup_sgd_speedup_vs_torch_ge_2": gu["dedup_sgd_speedup_vs_torch"] >= 2.0,
        "adagrad_apply_within_1.5x_sgd": gu["adagrad_over_sgd_apply"] <= 1.5,
        "adam_apply_within_1.5x_sgd": gu["adam_over_sgd_apply"] <= 1.5,
        "adagrad_dedup_apply_within_1.5x_sgd": gu["adagrad_over_sgd_dedup_apply"] <= 1.5,
        "adam_dedup_apply_within_1.5x_sgd": gu["adam_over_sgd_dedup_apply"] <= 1.5,
        "adagrad_fused_within_1.5x_sgd": gu["adagrad_over_sgd_fused"] <= 1.5,
        "adam_fused_within_1.5x_sgd": gu["adam_over_sgd_fused"] <= 1.5,
    }
    result["seconds"] = time.time() - t_start

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"device {result['device']}  copy {copy_gbps:.0f} GB/s")
    for dist in ("uniform", "zipf"):
        lk = result[f"lookup_sum_{dist}"]
        ga = result[f"grad_apply_{dist}"]
        print(
            f"[{dist}] lookup+sum {lk['herald_ms'] * 1e3:.0f} us ({lk['herald_gbps']:.0f} GB/s, "
            f"{lk['herald_fraction_of_copy']:.2f} of copy) vs embedding_bag "
            f"{lk['torch_embedding_bag_ms'] * 1e3:.0f} us: {lk['speedup_vs_torch']:.2f}x"
        )
        print(
            f"[{dist}] fused dedup+sgd {ga['fused_dedup_apply_sgd_ms'] * 1e3:.0f} us "
            f"(two calls {ga['dedup_sgd_ms'] * 1e3:.0f} us) vs torch "
            f"{ga['torch_unique_index_add_sgd_ms'] * 1e3:.0f} us: "
            f"{ga['dedup_sgd_speedup_vs_torch']:.2f}x; fused sgd/adagrad/adam "
            f"{ga['fused_dedup_apply_sgd_ms'] * 1e3:.0f}/"
            f"{ga['fused_dedup_apply_adagrad_ms'] * 1e3:.0f}/"
            f"{ga['fused_dedup_apply_adam_ms'] * 1e3:.0f} us; apply sgd/adagrad/adam "
            f"{ga['apply_sgd_ms'] * 1e3:.0f}/{ga['apply_adagrad_ms'] * 1e3:.0f}/"
            f"{ga['apply_adam_ms'] * 1e3:.0f} us; dedup {ga['dedup_ms'] * 1e3:.0f} us"
        )
    print("goals:", json.dumps(result["goals"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
