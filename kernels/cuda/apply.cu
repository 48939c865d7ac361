// CUDA writes into slot storage: the fused sparse optimizer apply (herald::ApplyElement from
// kernels/core/optimizer.h, the same math as the CPU kernel and the parameter server), row
// scatter for pulled rows, and deterministic row/state initialisation.
#include <stdint.h>

#include "kernels/core/apply_checks.h"
#include "kernels/core/initializer.h"
#include "kernels/core/optimizer.h"
#include "kernels/cuda/apply.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace herald {
namespace cuda {
namespace {

// Lane r < R of a warp reads the slot of row k0 + r; the slots are broadcast to the warp.
// Returns the number of rows (<= R) of this group and, in *my_slot, lane r's slot.
template <int R>
__device__ __forceinline__ int LoadRowSlots(int64_t k0, int64_t u,
                                            const int64_t* __restrict__ unique_slots,
                                            int64_t* slot, int64_t* my_slot) {
  const int lane = threadIdx.x & 31;
  *my_slot = 0;
  if (lane < R && k0 + lane < u) *my_slot = unique_slots[k0 + lane];
#pragma unroll
  for (int r = 0; r < R; ++r) slot[r] = __shfl_sync(0xffffffffu, *my_slot, r);
  return u - k0 < R ? static_cast<int>(u - k0) : R;
}

// Lane r < rows bumps row r's version and returns the version before (0 on other lanes). Called
// after the rows' loads are issued, so this read-modify-write is off their critical path.
template <int R>
__device__ __forceinline__ int64_t BumpVersion(int rows, int64_t my_slot,
                                               int64_t* __restrict__ versions) {
  const int lane = threadIdx.x & 31;
  int64_t version = 0;
  if (lane < R && lane < rows) {
    version = versions[my_slot];
    versions[my_slot] = version + 1;
  }
  return version;
}

// Where rows k0 .. k0 + rows - 1 read their gradient (GradientRows): source[r] >= 0 is the
// grad_out row of a single-id row, to be scaled by weight[r]; -1 a summed row. Lane r resolves
// row r; the results are broadcast to the warp (32-bit, to keep the apply's registers few).
template <int R>
__device__ __forceinline__ void LoadGradientSources(int64_t k0, int rows,
                                                    const GradientRows& grads, int32_t* source,
                                                    float* weight) {
  const int lane = threadIdx.x & 31;
  int32_t my_source = -1;
  float my_weight = 0.0f;
  if (lane < R && lane < rows) {
    my_source = grads.direct[k0 + lane];
    if (my_source >= 0) my_weight = grads.sources.WeightOfSource(my_source);
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    source[r] = __shfl_sync(0xffffffffu, my_source, r);
    weight[r] = __shfl_sync(0xffffffffu, my_weight, r);
  }
}

// Adam's bias corrections of the R rows (lane r computes row r's in double, as the CPU does,
// then broadcasts them). Called after the rows' loads are issued, so the pow overlaps them.
template <int KIND, int R>
__device__ __forceinline__ void RowFactors(const HeraldOptimizerParams& p, int64_t my_version,
                                           RowCoefficients* rc) {
  RowCoefficients mine{1.0f, 1.0f};
  if (KIND == HERALD_OPT_ADAM) mine = RowCoefficientsFor(p, my_version);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    rc[r].inv_bias1 = KIND == HERALD_OPT_ADAM ? __shfl_sync(0xffffffffu, mine.inv_bias1, r) : 1.0f;
    rc[r].inv_bias2 = KIND == HERALD_OPT_ADAM ? __shfl_sync(0xffffffffu, mine.inv_bias2, r) : 1.0f;
  }
}

#ifndef HERALD_APPLY_ROWS
#define HERALD_APPLY_ROWS 4  // rows per warp in the 4-wide apply (a tuning knob)
#endif

// One warp per R rows, 4 columns a lane: the loads of all R rows (gradient, value, state) are
// issued before any math, so a warp keeps R times more memory traffic in flight. The columns are
// staged in registers as a 4-column "row" (value[4], state[0:4] = first state block,
// state[4:8] = second), so ApplyElement(..., jj, 4, g) touches exactly the elements it would in
// storage: the math is herald::ApplyElement, unchanged.
// DIRECT: grads.direct is given (the fused dedup + apply); a separate instantiation keeps the
// plain apply's registers (and so its occupancy) as they are.
template <int KIND, int R, bool DIRECT>
__global__ void __launch_bounds__(kThreads)
    ApplyVec4Kernel(HeraldOptimizerParams params, float* __restrict__ storage,
                    float* __restrict__ state, int64_t* __restrict__ versions, int64_t dim,
                    const int64_t* __restrict__ unique_slots, int64_t u, const int64_t* u_device,
                    GradientRows grads, const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  if (u_device != nullptr && *u_device < u) u = *u_device;
  HeraldOptimizerParams p = params;
  p.kind = KIND;  // lets the compiler fold ApplyElement's switch
  const int64_t width = StateWidth(KIND, dim);
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t k0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32 * R;
       k0 < u; k0 += warps * R) {
    int64_t slot[R];
    int64_t my_slot;
    const int rows = LoadRowSlots<R>(k0, u, unique_slots, slot, &my_slot);
    int32_t source[R];
    float weight[R];
    if (DIRECT) LoadGradientSources<R>(k0, rows, grads, source, weight);
    RowCoefficients rc[R];
    bool have_rc = false;
    for (int64_t j0 = 0; j0 < dim; j0 += 128) {  // warp-uniform loop: lanes shuffle inside
      const int64_t j = j0 + 4 * lane;
      const bool active = j < dim;
      float g[R][4], val[R][4], st[R][8];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows || !active) continue;
        const float* g_row = DIRECT && source[r] >= 0 ? grads.grad_out + source[r] * dim
                                                      : grads.summed + (k0 + r) * dim;
        const float4 g4 = *reinterpret_cast<const float4*>(g_row + j);
        const float4 v4 = *reinterpret_cast<const float4*>(storage + slot[r] * dim + j);
        g[r][0] = g4.x; g[r][1] = g4.y; g[r][2] = g4.z; g[r][3] = g4.w;
        val[r][0] = v4.x; val[r][1] = v4.y; val[r][2] = v4.z; val[r][3] = v4.w;
        if (KIND != HERALD_OPT_SGD) {
          const float4 a = *reinterpret_cast<const float4*>(state + slot[r] * width + j);
          st[r][0] = a.x; st[r][1] = a.y; st[r][2] = a.z; st[r][3] = a.w;
        }
        if (KIND == HERALD_OPT_ADAM) {
          const float4 b = *reinterpret_cast<const float4*>(state + slot[r] * width + dim + j);
          st[r][4] = b.x; st[r][5] = b.y; st[r][6] = b.z; st[r][7] = b.w;
        }
      }
      if (!have_rc) {  // after the first loads were issued: the version RMW and pow overlap them
        RowFactors<KIND, R>(p, BumpVersion<R>(rows, my_slot, versions), rc);
        have_rc = true;
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r >= rows || !active) continue;
        if (DIRECT && source[r] >= 0) {
#pragma unroll
          for (int jj = 0; jj < 4; ++jj) g[r][jj] = 0.0f + weight[r] * g[r][jj];
        }
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) ApplyElement(p, rc[r], val[r], st[r], jj, 4, g[r][jj]);
        *reinterpret_cast<float4*>(storage + slot[r] * dim + j) =
            make_float4(val[r][0], val[r][1], val[r][2], val[r][3]);
        if (KIND != HERALD_OPT_SGD) {
          *reinterpret_cast<float4*>(state + slot[r] * width + j) =
              make_float4(st[r][0], st[r][1], st[r][2], st[r][3]);
        }
        if (KIND == HERALD_OPT_ADAM) {
          *reinterpret_cast<float4*>(state + slot[r] * width + dim + j) =
              make_float4(st[r][4], st[r][5], st[r][6], st[r][7]);
        }
      }
    }
  }
}

// Any dim or alignment: one warp per row, ApplyElement directly on storage.
template <int KIND>
__global__ void __launch_bounds__(kThreads)
    ApplyScalarKernel(HeraldOptimizerParams params, float* __restrict__ storage,
                      float* __restrict__ state, int64_t* __restrict__ versions, int64_t dim,
                      const int64_t* __restrict__ unique_slots, int64_t u,
                      const int64_t* u_device, GradientRows grads,
                      const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  if (u_device != nullptr && *u_device < u) u = *u_device;
  HeraldOptimizerParams p = params;
  p.kind = KIND;
  const int64_t width = StateWidth(KIND, dim);
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t k = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32; k < u;
       k += warps) {
    int64_t slot[1];
    int64_t my_slot;
    RowCoefficients rc[1];
    const int rows = LoadRowSlots<1>(k, u, unique_slots, slot, &my_slot);
    int32_t source[1] = {-1};
    float weight[1];
    if (grads.direct != nullptr) LoadGradientSources<1>(k, rows, grads, source, weight);
    RowFactors<KIND, 1>(p, BumpVersion<1>(rows, my_slot, versions), rc);
    float* value = storage + slot[0] * dim;
    float* row_state = state + slot[0] * width;  // unused (width 0) for SGD
    const float* g = source[0] >= 0 ? grads.grad_out + source[0] * dim : grads.summed + k * dim;
    for (int64_t j = lane; j < dim; j += 32) {
      const float gj = source[0] >= 0 ? 0.0f + weight[0] * g[j] : g[j];
      ApplyElement(p, rc[0], value, row_state, j, dim, gj);
    }
  }
}

// storage[ids[i]] = rows[i], one thread per V floats.
template <int V>
__global__ void __launch_bounds__(kThreads)
    ScatterKernel(float* __restrict__ storage, int64_t width, const int64_t* __restrict__ ids,
                  int64_t n, const float* __restrict__ rows, const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  using VecT = typename Vec<V>::Type;
  const int64_t width_v = width / V;
  const int64_t total = n * width_v;
  VecT* out = reinterpret_cast<VecT*>(storage);
  const VecT* in = reinterpret_cast<const VecT*>(rows);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t row = i / width_v;
    const int64_t col = i - row * width_v;
    out[ids[row] * width_v + col] = in[i];
  }
}

__global__ void InitRowsKernel(HeraldInitializerParams params, const int64_t* __restrict__ keys,
                               int64_t n, int64_t dim, float* __restrict__ out) {
  const int64_t total = n * dim;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t row = i / dim;
    out[i] = InitialValue(params, keys[row], i - row * dim);
  }
}

}  // namespace

template <int KIND>
int LaunchApply(const HeraldOptimizerParams& params, float* storage, float* state,
                int64_t* versions, int64_t dim, const int64_t* unique_slots, int64_t u,
                const int64_t* u_device, const GradientRows& grads, const HeraldCudaError* error,
                cudaStream_t stream, HeraldStatus* status) {
  const bool vec = dim % 4 == 0 && Aligned16(storage) && Aligned16(grads.summed) &&
                   (grads.direct == nullptr || Aligned16(grads.grad_out)) &&
                   (KIND == HERALD_OPT_SGD || Aligned16(state));
  // SGD moves the fewest bytes per row: more rows per warp keep enough traffic in flight
  // (measured on an H200: 8 rows 124 us vs 4 rows 132 us for SGD; Adam best at 4).
  constexpr int kRows = KIND == HERALD_OPT_SGD ? 2 * HERALD_APPLY_ROWS : HERALD_APPLY_ROWS;
  const unsigned int vec_blocks = BlocksFor(u, kThreads / 32 * kRows);
  if (vec && grads.direct != nullptr) {
    ApplyVec4Kernel<KIND, kRows, true><<<vec_blocks, kThreads, 0, stream>>>(
        params, storage, state, versions, dim, unique_slots, u, u_device, grads, error);
  } else if (vec) {
    ApplyVec4Kernel<KIND, kRows, false><<<vec_blocks, kThreads, 0, stream>>>(
        params, storage, state, versions, dim, unique_slots, u, u_device, grads, error);
  } else {
    ApplyScalarKernel<KIND><<<BlocksFor(u, kThreads / 32), kThreads, 0, stream>>>(
        params, storage, state, versions, dim, unique_slots, u, u_device, grads, error);
  }
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

int EnqueueApply(const HeraldOptimizerParams& params, float* storage, float* state,
                 int64_t* versions, int64_t dim, const int64_t* unique_slots, int64_t u,
                 const int64_t* u_device, const GradientRows& grads, const HeraldCudaError* error,
                 cudaStream_t stream, HeraldStatus* status) {
  if (u == 0) return HERALD_OK;
  switch (params.kind) {
    case HERALD_OPT_SGD:
      return LaunchApply<HERALD_OPT_SGD>(params, storage, state, versions, dim, unique_slots, u,
                                         u_device, grads, error, stream, status);
    case HERALD_OPT_ADAGRAD:
      return LaunchApply<HERALD_OPT_ADAGRAD>(params, storage, state, versions, dim, unique_slots,
                                             u, u_device, grads, error, stream, status);
    default:
      return LaunchApply<HERALD_OPT_ADAM>(params, storage, state, versions, dim, unique_slots, u,
                                          u_device, grads, error, stream, status);
  }
}

}  // namespace cuda
}  // namespace herald

using herald::SetOk;
using herald::SetStatus;
using herald::cuda::ErrorScope;
using herald::cuda::TempBlock;

extern "C" {

int herald_cuda_sparse_apply(const HeraldOptimizerParams* params, float* storage, float* state,
                             int64_t* versions, int64_t slots, int64_t dim,
                             const int64_t* unique_slots, int64_t u, const int64_t* u_device,
                             const float* grads, cudaStream_t stream,
                             const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                             HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::CheckApplyArgs(params, slots, dim, u, state, status));
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  const size_t bitmap = temp.Take<unsigned int>(herald::cuda::BitmapWords(slots));
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  if (u > 0) {
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueIdChecks(unique_slots, u, u_device, slots,
                                                         HERALD_CUDA_CHECK_ID_RANGE, nullptr, 0,
                                                         scope.record(), stream, status));
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueDistinctCheck(
        unique_slots, u, u_device, slots, temp.Get<unsigned int>(bitmap), scope.record(), stream,
        status));
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueFiniteCheck(grads, u * dim, u_device, dim,
                                                            scope.record(), stream, status));
    const herald::cuda::GradientRows rows{grads, nullptr, nullptr, {}};
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueApply(*params, storage, state, versions, dim,
                                                      unique_slots, u, u_device, rows,
                                                      scope.record(), stream, status));
  }
  return scope.Finish(stream, unique_slots, "unique slot", status);
}

int herald_cuda_scatter_rows(float* storage, int64_t slots, int64_t width,
                             const int64_t* slot_ids, int64_t n, const float* rows,
                             cudaStream_t stream, const HeraldCudaAllocator* allocator,
                             HeraldCudaError* error, HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckRowArgs(slots, width, n, status));
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  const size_t bitmap = temp.Take<unsigned int>(herald::cuda::BitmapWords(slots));
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  if (n > 0) {
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueIdChecks(slot_ids, n, nullptr, slots,
                                                         HERALD_CUDA_CHECK_ID_RANGE, nullptr, 0,
                                                         scope.record(), stream, status));
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueDistinctCheck(
        slot_ids, n, nullptr, slots, temp.Get<unsigned int>(bitmap), scope.record(), stream,
        status));
    const bool vec = width % 4 == 0 && herald::cuda::Aligned16(storage) &&
                     herald::cuda::Aligned16(rows);
    const int64_t work = n * (vec ? width / 4 : width);
    const unsigned int blocks = herald::cuda::BlocksFor(work, herald::cuda::kThreads);
    if (vec) {
      herald::cuda::ScatterKernel<4><<<blocks, herald::cuda::kThreads, 0, stream>>>(
          storage, width, slot_ids, n, rows, scope.record());
    } else {
      herald::cuda::ScatterKernel<1><<<blocks, herald::cuda::kThreads, 0, stream>>>(
          storage, width, slot_ids, n, rows, scope.record());
    }
    HERALD_CUDA_CHECK_LAUNCH(status);
  }
  return scope.Finish(stream, slot_ids, "slot id", status);
}

int herald_cuda_init_rows(const HeraldInitializerParams* params, const int64_t* keys, int64_t n,
                          int64_t dim, float* out, cudaStream_t stream, HeraldStatus* status) {
  if (params == nullptr || !herald::IsValidInitializerKind(params->kind)) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected initializer kind in {0: uniform, 1: normal, 2: zeros}. Received: %d",
                     params ? params->kind : -1);
  }
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckRowArgs(0, dim, n, status));
  if (n > 0) {
    herald::cuda::InitRowsKernel<<<herald::cuda::BlocksFor(n * dim, herald::cuda::kThreads * 4),
                                   herald::cuda::kThreads, 0, stream>>>(*params, keys, n, dim,
                                                                        out);
    HERALD_CUDA_CHECK_LAUNCH(status);
  }
  return SetOk(status);
}

int herald_cuda_init_state(const HeraldOptimizerParams* params, int64_t n, int64_t dim,
                           float* state, cudaStream_t stream, HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::CheckOptimizerKind(params, status));
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckRowArgs(0, dim, n, status));
  HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueFill(state,
                                                   n * herald::StateWidth(params->kind, dim),
                                                   herald::InitialStateValue(*params), nullptr,
                                                   stream, status));
  return SetOk(status);
}

}  // extern "C"
