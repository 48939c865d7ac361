// CUDA lookup: fused gather + pooling (SUM/MEAN/SQRTN over dense or ragged bags), plain gather
// (combiner NONE) and row gather for pushes. Rows are read with 16-byte loads when the width is a
// multiple of 4 floats and the pointers are 16-byte aligned.
#include <stdint.h>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace herald {
namespace cuda {
namespace {

// Tuning knobs (the harness builds variants with -D to compare them): rows loaded per round
// before the first add (independent gathers in flight per lane), and the minimum resident blocks
// per SM that caps the pooling kernel's registers.
#ifndef HERALD_POOL_UNROLL
#define HERALD_POOL_UNROLL 8
#endif
#ifndef HERALD_POOL_MIN_BLOCKS
#define HERALD_POOL_MIN_BLOCKS 4  // measured on an H200: 67 us vs 73 us for 2 (u=8)
#endif
constexpr int kUnroll = HERALD_POOL_UNROLL;

// One warp per bag. Lane l holds columns [V*(c0 + l), V*(c0 + l) + V) of chunk c0; the bag's
// ids are loaded 32 at a time (one per lane) and broadcast with shuffles. Addition is in id
// order, then MEAN/SQRTN multiply by the CPU kernel's scale, so results match the CPU's order.
template <int V, bool kRagged>
__global__ void __launch_bounds__(kThreads, HERALD_POOL_MIN_BLOCKS)
    PoolKernel(const float* __restrict__ storage, int64_t dim, const int64_t* __restrict__ ids,
               const int64_t* __restrict__ row_splits, int64_t batch, int64_t ids_per_bag,
               int combiner, float* __restrict__ out, const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  using VecT = typename Vec<V>::Type;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t dim_v = dim / V;
  const VecT* rows = reinterpret_cast<const VecT*>(storage);
  VecT* out_v = reinterpret_cast<VecT*>(out);
  for (int64_t bag = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
       bag < batch; bag += warps) {
    const int64_t lo = kRagged ? row_splits[bag] : bag * ids_per_bag;
    const int64_t hi = kRagged ? row_splits[bag + 1] : lo + ids_per_bag;
    const float scale = BagScale(combiner, hi - lo);
    for (int64_t c0 = 0; c0 < dim_v; c0 += 32) {
      const int64_t col = c0 + lane;
      const bool active = col < dim_v;
      VecT acc = Vec<V>::Zero();
      for (int64_t base = lo; base < hi; base += 32) {
        const int count = static_cast<int>(hi - base < 32 ? hi - base : 32);
        const int64_t my_id = lane < count ? ids[base + lane] : 0;
        // Rounds of kUnroll independent loads (the last one predicated), then in-order adds.
        for (int t0 = 0; t0 < count; t0 += kUnroll) {
          VecT r[kUnroll];
#pragma unroll
          for (int k = 0; k < kUnroll; ++k) {
            const int64_t id = __shfl_sync(0xffffffffu, my_id, (t0 + k) & 31);
            r[k] = (active && t0 + k < count) ? Vec<V>::Load(rows + id * dim_v + col)
                                              : Vec<V>::Zero();
          }
#pragma unroll
          for (int k = 0; k < kUnroll; ++k) {
            if (t0 + k < count) Vec<V>::AddTo(acc, r[k]);
          }
        }
      }
      if (combiner != HERALD_COMBINER_SUM) Vec<V>::Scale(acc, scale);
      if (active) out_v[bag * dim_v + col] = acc;
    }
  }
}

// out[i] = storage[ids[i]], one thread per V floats.
template <int V>
__global__ void __launch_bounds__(kThreads)
    GatherKernel(const float* __restrict__ storage, int64_t width, const int64_t* __restrict__ ids,
                 int64_t n, float* __restrict__ out, const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  using VecT = typename Vec<V>::Type;
  const int64_t width_v = width / V;
  const int64_t total = n * width_v;
  const VecT* rows = reinterpret_cast<const VecT*>(storage);
  VecT* out_v = reinterpret_cast<VecT*>(out);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t row = i / width_v;
    const int64_t col = i - row * width_v;
    out_v[i] = Vec<V>::Load(rows + ids[row] * width_v + col);
  }
}

int EnqueueGather(const float* storage, int64_t width, const int64_t* ids, int64_t n, float* out,
                  const HeraldCudaError* error, cudaStream_t stream, HeraldStatus* status) {
  if (n == 0) return HERALD_OK;
  const bool vec = width % 4 == 0 && Aligned16(storage) && Aligned16(out);
  const int64_t work = n * (vec ? width / 4 : width);
  const unsigned int blocks = BlocksFor(work, kThreads);
  if (vec) {
    GatherKernel<4><<<blocks, kThreads, 0, stream>>>(storage, width, ids, n, out, error);
  } else {
    GatherKernel<1><<<blocks, kThreads, 0, stream>>>(storage, width, ids, n, out, error);
  }
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

int EnqueuePool(const float* storage, int64_t dim, const int64_t* ids, const int64_t* row_splits,
                int64_t batch, int64_t ids_per_bag, int32_t combiner, float* out,
                const HeraldCudaError* error, cudaStream_t stream, HeraldStatus* status) {
  if (batch == 0) return HERALD_OK;
  const bool vec = dim % 4 == 0 && Aligned16(storage) && Aligned16(out);
  const unsigned int blocks = BlocksFor(batch, kThreads / 32);
  const bool ragged = row_splits != nullptr;
#define HERALD_LAUNCH_POOL(V, R)                                                              \
  PoolKernel<V, R><<<blocks, kThreads, 0, stream>>>(storage, dim, ids, row_splits, batch,     \
                                                     ids_per_bag, combiner, out, error)
  if (vec && ragged) {
    HERALD_LAUNCH_POOL(4, true);
  } else if (vec) {
    HERALD_LAUNCH_POOL(4, false);
  } else if (ragged) {
    HERALD_LAUNCH_POOL(1, true);
  } else {
    HERALD_LAUNCH_POOL(1, false);
  }
#undef HERALD_LAUNCH_POOL
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

}  // namespace
}  // namespace cuda
}  // namespace herald

using herald::SetOk;
using herald::SetStatus;
using herald::cuda::ErrorScope;
using herald::cuda::TempBlock;

extern "C" {

int herald_cuda_lookup(const float* storage, int64_t slots, int64_t dim, const int64_t* slot_ids,
                       int64_t n, const int64_t* row_splits, int64_t batch, int32_t combiner,
                       float* out, cudaStream_t stream, const HeraldCudaAllocator* allocator,
                       HeraldCudaError* error, HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckLookupArgs(slots, dim, n, batch, combiner, status));
  const bool pooled = combiner != HERALD_COMBINER_NONE;
  int64_t ids_per_bag = 0;
  if (pooled) {
    HERALD_RETURN_IF_ERROR(
        herald::cuda::CheckDenseBags(row_splits, n, batch, &ids_per_bag, status));
  }
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueIdChecks(slot_ids, n, nullptr, slots, HERALD_CUDA_CHECK_ID_RANGE, pooled ? row_splits : nullptr, batch,
      scope.record(), stream, status));
  if (pooled) {
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueuePool(storage, dim, slot_ids, row_splits, batch,
                                                     ids_per_bag, combiner, out, scope.record(),
                                                     stream, status));
  } else {
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueGather(storage, dim, slot_ids, n, out,
                                                       scope.record(), stream, status));
  }
  return scope.Finish(stream, slot_ids, "slot id", status);
}

int herald_cuda_gather_rows(const float* storage, int64_t slots, int64_t width,
                            const int64_t* slot_ids, int64_t n, float* out, cudaStream_t stream,
                            const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                            HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckRowArgs(slots, width, n, status));
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueIdChecks(slot_ids, n, nullptr, slots,
                                                       HERALD_CUDA_CHECK_ID_RANGE, nullptr, 0,
                                                       scope.record(), stream, status));
  HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueGather(storage, width, slot_ids, n, out,
                                                     scope.record(), stream, status));
  return scope.Finish(stream, slot_ids, "slot id", status);
}

}  // extern "C"
