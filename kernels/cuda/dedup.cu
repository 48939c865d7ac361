// CUDA dedup by slot and deterministic segment sum (the lookup gradient).
//
// Runs: a stable radix sort of (key, position) groups equal keys into runs whose positions are
// ascending. For dedup the runs are ranked by their first position (a flag per position and an
// exclusive scan), which gives the CPU kernel's first-appearance order. The segment sum walks the
// sorted order in fixed chunks of kChunk elements, one warp per chunk, adding each run's rows in
// position order; a short run (<= kChunk ids) is finished by the warp of the chunk it starts in,
// a long run leaves one partial per chunk, added in chunk order (32 chunks at a time for very
// long runs) by a second kernel. Every float addition happens in an order fixed by the input
// alone, so results are bitwise reproducible.
#include <stdint.h>

#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include "kernels/core/apply_checks.h"
#include "kernels/cuda/apply.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/vec.cuh"

namespace herald {
namespace cuda {
namespace {

constexpr int kChunk = 64;   // sorted elements per warp in the segment sum
constexpr int kUnroll = 8;   // rows in flight per lane
constexpr int kCombineUnroll = 16;  // chunk partials in flight per lane
constexpr int kSuper = 32;          // chunks per super-chunk (second level, for hot rows)
constexpr int64_t kNoTarget = 0x7fffffffffffffffLL;  // ChunkSumKernel: element ends no piece

// Records (element, NONFINITE) when a written gradient row segment is not finite.
__device__ __forceinline__ void ReportNonFinite(float v, int64_t row, int64_t dim, int64_t col,
                                                HeraldCudaError* error) {
  if (!isfinite(v)) ReportError(error, row * dim + col, HERALD_CUDA_CHECK_NONFINITE);
}
__device__ __forceinline__ void ReportNonFinite(const float4& v, int64_t row, int64_t dim,
                                                int64_t col, HeraldCudaError* error) {
  const float c[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if (!isfinite(c[k])) {
      ReportError(error, row * dim + 4 * col + k, HERALD_CUDA_CHECK_NONFINITE);
      return;
    }
  }
}

int EndBit(int64_t limit) {
  int bits = 1;
  while (bits < 63 && (int64_t{1} << bits) < limit) ++bits;
  return bits;
}

// ---------------------------------------------------------------- run construction kernels

// The first pass over the keys: the range check (into the error record, before any kernel that
// writes an output), the positions 0..n-1 to sort with them, and a zeroed list counter.
// The keys are copied as KeyT (uint32 when every valid key fits: half the sort traffic).
template <typename KeyT>
__global__ void IotaCheckKernel(const int64_t* keys, int64_t n, int64_t limit, int check,
                                KeyT* sort_keys, int32_t* positions, int32_t* zeros,
                                int32_t* list_count, HeraldCudaError* error) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (first == 0 && list_count != nullptr) *list_count = 0;
  for (int64_t i = first; i < n; i += stride) {
    positions[i] = static_cast<int32_t>(i);
    if (zeros != nullptr) zeros[i] = 0;
    const int64_t key = keys[i];
    sort_keys[i] = static_cast<KeyT>(key);
    if (key < 0 || key >= limit) ReportError(error, i, check);
  }
}

// 1 where sorted element k starts a run (fed to the scan as an iterator: no array, no kernel).
template <typename KeyT>
struct RunHead {
  const KeyT* sorted_keys;
  __host__ __device__ int32_t operator()(int64_t k) const {
    return (k == 0 || sorted_keys[k] != sorted_keys[k - 1]) ? 1 : 0;
  }
};
template <typename KeyT>
using RunHeadIterator =
    thrust::transform_iterator<RunHead<KeyT>, thrust::counting_iterator<int64_t>, int32_t>;

// run_count is the inclusive scan of the run heads: element k belongs to run run_count[k] - 1.
// run_start[r] for every run, run_start[num_runs] = n, *num_runs_out; and (dedup mode) a flag
// at the first position of every run.
__global__ void RunStartsKernel(const int32_t* run_count,
                                const int32_t* sorted_pos, int64_t n, int32_t* run_start,
                                int32_t* first_flag, int64_t* num_runs_out,
                                const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    if (k == 0 || run_count[k] != run_count[k - 1]) {
      run_start[run_count[k] - 1] = static_cast<int32_t>(k);
      if (first_flag != nullptr) first_flag[sorted_pos[k]] = 1;
    }
    if (k == n - 1) {
      const int32_t runs = run_count[k];
      run_start[runs] = static_cast<int32_t>(n);
      if (num_runs_out != nullptr) *num_runs_out = runs;
    }
  }
}

// Output row of every run: its rank by first position (dedup mode, rank_at_pos != NULL) or its
// key (inverse mode). Fills row_of_run, run_of_row and (dedup mode) unique[rank] = key. With
// `list` (dedup mode), also lists the rows whose run spans several segment-sum chunks (see
// CombineFlagKernel, which does this for inverse mode).
template <typename KeyT>
__global__ void RankKernel(const KeyT* sorted_keys, const int32_t* sorted_pos,
                           const int32_t* run_count, const int32_t* run_start, int64_t n,
                           const int32_t* rank_at_pos, int32_t* row_of_run, int32_t* run_of_row,
                           int64_t* unique, int32_t* list, int32_t* list_count,
                           const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  const int lane = threadIdx.x & 31;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x - lane;
       base < n; base += stride) {  // warp-uniform loop (the list append uses a ballot)
    const int64_t k = base + lane;
    bool multi_chunk = false;
    int32_t row = 0;
    if (k < n) {
      const int32_t r = run_count[k] - 1;
      const int32_t start = run_start[r];
      if (start == k) {
        row = rank_at_pos != nullptr ? rank_at_pos[sorted_pos[k]]
                                     : static_cast<int32_t>(sorted_keys[k]);
        row_of_run[r] = row;
        run_of_row[row] = r;
        if (unique != nullptr) unique[row] = static_cast<int64_t>(sorted_keys[k]);
        multi_chunk = run_start[r + 1] - start > kChunk;  // long: left partials
      }
    }
    if (list == nullptr) continue;
    const unsigned int mask = __ballot_sync(0xffffffffu, multi_chunk);
    if (mask == 0) continue;
    int32_t first = 0;
    if (lane == 0) first = atomicAdd(list_count, __popc(mask));
    first = __shfl_sync(0xffffffffu, first, 0);
    if (multi_chunk) list[first + __popc(mask & ((1u << lane) - 1))] = row;
  }
}

__global__ void InverseKernel(const int32_t* sorted_pos, const int32_t* run_count,
                              const int32_t* row_of_run, int64_t n, int64_t* inverse,
                              const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += stride) {
    inverse[sorted_pos[k]] = row_of_run[run_count[k] - 1];
  }
}

// ---------------------------------------------------------------- segment sum kernels

// One warp per chunk of kChunk sorted elements; see the file comment. partial: (chunks, 2, dim):
// [c][0] the piece of a run that started before chunk c, [c][1] the piece of a run that starts in
// c and continues after it.
template <int V>
__global__ void __launch_bounds__(kThreads)
    ChunkSumKernel(const float* __restrict__ grad_out, int64_t dim,
                   const int32_t* __restrict__ sorted_pos,
                   const int32_t* __restrict__ run_count,
                   const int32_t* __restrict__ run_start, const int32_t* __restrict__ row_of_run,
                   int64_t n, Sources sources, float* __restrict__ summed,
                   float* __restrict__ partial, int32_t* __restrict__ direct,
                   const HeraldCudaError* error, HeraldCudaError* finite_error) {
  if (ErrorSet(error)) return;
  using VecT = typename Vec<V>::Type;
  const int lane = threadIdx.x & 31;
  const int64_t chunk = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t k0 = chunk * kChunk;
  if (k0 >= n) return;
  const int64_t k1 = k0 + kChunk < n ? k0 + kChunk : n;
  // Short runs (<= kChunk ids) crossing a chunk boundary belong wholly to the chunk where they
  // start: this warp skips the tail of one started before k0 and finishes one running past k1.
  // Only long runs leave partials. [a, b) is the range this warp adds.
  int64_t a = k0, b = k1;
  if (k0 > 0) {
    const int32_t r = run_count[k0] - 1;
    if (run_start[r] < k0 && run_start[r + 1] - run_start[r] <= kChunk) a = run_start[r + 1];
  }
  {
    const int32_t r = run_count[k1 - 1] - 1;
    if (run_start[r] >= k0 && run_start[r + 1] > k1 && run_start[r + 1] - run_start[r] <= kChunk) {
      b = run_start[r + 1];
    }
  }
  const int64_t dim_v = dim / V;
  const VecT* grads = reinterpret_cast<const VecT*>(grad_out);
  VecT* out_v = reinterpret_cast<VecT*>(summed);
  VecT* part_v = reinterpret_cast<VecT*>(partial);
  for (int64_t c0 = 0; c0 < dim_v; c0 += 32) {
    const int64_t col = c0 + lane;
    const bool active = col < dim_v;
    VecT acc = Vec<V>::Zero();
    for (int64_t base = a; base < b; base += 32) {
      const int count = static_cast<int>(b - base < 32 ? b - base : 32);
      // Per lane (one element each, in parallel): its source row and weight, and, when the
      // element ends a run piece, where the piece goes: target >= 0 is a summed row (the run
      // lies inside this chunk), target < 0 encodes partial slot -1 - target; 0x7fff... = none.
      // (The targets are resolved after the first row loads are issued: their chain of
      // dependent loads then overlaps those loads.)
      int64_t my_source = 0;
      float my_weight = 0.0f;
      int64_t my_target = kNoTarget;
      int64_t my_single = -1;  // with `direct`: the source row when this run has one id
      int32_t my_run = -1;  // >= 0: this lane's element ends a run piece
      if (lane < count) {
        const int64_t k = base + lane;
        sources.Of(sorted_pos[k], &my_source, &my_weight);
        if ((k + 1 == b) || run_count[k + 1] != run_count[k]) my_run = run_count[k] - 1;
      }
      for (int t0 = 0; t0 < count; t0 += kUnroll) {
        VecT r[kUnroll];
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) {
          const int64_t src = __shfl_sync(0xffffffffu, my_source, (t0 + k) & 31);
          r[k] = (active && t0 + k < count) ? Vec<V>::Load(grads + src * dim_v + col)
                                            : Vec<V>::Zero();
        }
        if (t0 == 0 && my_run >= 0) {
          const int32_t run = my_run;
          const bool short_run = run_start[run + 1] - run_start[run] <= kChunk;
          const bool starts_in = run_start[run] >= k0;
          const bool ends_in = run_start[run + 1] <= k1;
          my_target = (short_run || (starts_in && ends_in))
                          ? static_cast<int64_t>(row_of_run[run])
                          : -1 - (chunk * 2 + (starts_in ? 1 : 0));
          if (run_start[run + 1] - run_start[run] == 1) my_single = my_source;
        }
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) {
          const int t = t0 + k;
          const float w = __shfl_sync(0xffffffffu, my_weight, t & 31);
          const int64_t target = __shfl_sync(0xffffffffu, my_target, t & 31);
          const int64_t single =
              direct != nullptr ? __shfl_sync(0xffffffffu, my_single, t & 31) : -1;
          if (t < count) {
            Vec<V>::AddScaled(acc, w, r[k]);
            if (target != kNoTarget) {
              if (target >= 0 && direct != nullptr && lane == 0 && c0 == 0) {
                direct[target] = static_cast<int32_t>(single);
              }
              if (active) {
                if (target >= 0) {
                  // A single-id row is only checked: the apply reads its source row again.
                  if (single < 0) out_v[target * dim_v + col] = acc;
                  if (finite_error != nullptr) {
                    ReportNonFinite(acc, target, dim, col, finite_error);
                  }
                } else {
                  part_v[(-1 - target) * dim_v + col] = acc;
                }
              }
              acc = Vec<V>::Zero();
            }
          }
        }
      }
    }
  }
}

// Which rows ChunkSumKernel could not finish: rows whose run spans several chunks, and rows
// with no run (inverse mode: a unique index no id maps to, written as zeros). One thread per
// row; flagged rows are appended to `list` (warp-aggregated atomics: the list order varies from
// run to run, the work done for each row does not, so results stay deterministic).
__global__ void __launch_bounds__(kThreads)
    CombineFlagKernel(const int32_t* __restrict__ run_of_row,
                      const int32_t* __restrict__ run_start, int64_t rows,
                      const int64_t* rows_device, int32_t* __restrict__ list,
                      int32_t* __restrict__ count, const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  if (rows_device != nullptr) rows = *rows_device;
  const int lane = threadIdx.x & 31;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x - lane;
       base < rows; base += stride) {
    const int64_t row = base + lane;
    bool need = false;
    if (row < rows) {
      const int32_t r = run_of_row[row];
      need = r < 0 || run_start[r + 1] - run_start[r] > kChunk;
    }
    const unsigned int mask = __ballot_sync(0xffffffffu, need);
    if (mask == 0) continue;
    int32_t first = 0;
    if (lane == 0) first = atomicAdd(count, __popc(mask));
    first = __shfl_sync(0xffffffffu, first, 0);
    if (need) list[first + __popc(mask & ((1u << lane) - 1))] = static_cast<int32_t>(row);
  }
}

// acc += p[0], p[stride], ..., p[(count - 1) * stride], in this order; rounds of
// kCombineUnroll unconditional loads (index clamped to the last) so they are all in flight.
template <int V>
__device__ __forceinline__ void AddStrided(typename Vec<V>::Type& acc,
                                           const typename Vec<V>::Type* p, int64_t stride,
                                           int64_t count) {
  using VecT = typename Vec<V>::Type;
  for (int64_t i0 = 0; i0 < count; i0 += kCombineUnroll) {
    VecT v[kCombineUnroll];
#pragma unroll
    for (int k = 0; k < kCombineUnroll; ++k) {
      const int64_t i = i0 + k < count ? i0 + k : count - 1;
      v[k] = p[i * stride];
    }
#pragma unroll
    for (int k = 0; k < kCombineUnroll; ++k) {
      if (i0 + k < count) Vec<V>::AddTo(acc, v[k]);
    }
  }
}

// Level 2 for hot rows: super-chunk S (chunks kSuper*S .. kSuper*S + kSuper - 1) lying strictly
// inside one run (the run started before it and continues after it) gets
// super[S] = sum of those chunks' partials, in chunk order. One warp per super-chunk.
template <int V>
__global__ void __launch_bounds__(kThreads)
    SuperSumKernel(const int32_t* __restrict__ run_count, const int32_t* __restrict__ run_start,
                   int64_t n, int64_t supers, int64_t dim, const float* __restrict__ partial,
                   float* __restrict__ super, const HeraldCudaError* error) {
  if (ErrorSet(error)) return;
  using VecT = typename Vec<V>::Type;
  const int lane = threadIdx.x & 31;
  const int64_t S = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (S >= supers) return;
  const int64_t first = S * kSuper * kChunk;  // first element of the super-chunk
  const int32_t r = run_count[first] - 1;
  if (!(run_start[r] < first && run_start[r + 1] > (S + 1) * kSuper * kChunk)) return;
  const int64_t dim_v = dim / V;
  const VecT* part_v = reinterpret_cast<const VecT*>(partial);
  VecT* super_v = reinterpret_cast<VecT*>(super);
  for (int64_t col = lane; col < dim_v; col += 32) {
    VecT acc = part_v[(S * kSuper * 2) * dim_v + col];
    AddStrided<V>(acc, part_v + ((S * kSuper + 1) * 2) * dim_v + col, 2 * dim_v, kSuper - 1);
    super_v[S * dim_v + col] = acc;
  }
}

// One warp per flagged row, zeros for a row with no run; else the run's pieces in a fixed order:
// its first chunk's tail piece, the chunk partials up to the first super-chunk boundary, the
// super-chunk sums strictly inside the run, then the remaining chunk partials up to its last
// chunk. (The exact conditions under which SuperSumKernel filled super[S].)
template <int V>
__global__ void __launch_bounds__(kThreads)
    CombineKernel(const int32_t* __restrict__ list, const int32_t* __restrict__ count,
                  const int32_t* __restrict__ run_of_row, const int32_t* __restrict__ run_start,
                  int64_t dim, const float* __restrict__ partial, const float* __restrict__ super,
                  float* __restrict__ summed, int32_t* __restrict__ direct,
                  const HeraldCudaError* error, HeraldCudaError* finite_error) {
  if (ErrorSet(error)) return;
  using VecT = typename Vec<V>::Type;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t dim_v = dim / V;
  const VecT* part_v = reinterpret_cast<const VecT*>(partial);
  const VecT* super_v = reinterpret_cast<const VecT*>(super);
  VecT* out_v = reinterpret_cast<VecT*>(summed);
  const int64_t total = *count;
  for (int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
       e < total; e += warps) {
    const int64_t row = list[e];
    const int32_t r = run_of_row[row];
    if (direct != nullptr && lane == 0) direct[row] = -1;
    const int64_t cs = r < 0 ? 0 : run_start[r] / kChunk;
    const int64_t ce = r < 0 ? 0 : (run_start[r + 1] - 1) / kChunk;
    // Chunks cs+1 .. ce: [cs+1, s_lo*kSuper) as partials, super-chunks [s_lo, s_hi), then
    // [s_hi*kSuper, ce] as partials; s_hi is the first super-chunk not ending before ce.
    const int64_t s_lo = (cs + 1 + kSuper - 1) / kSuper;
    const int64_t s_hi = ce / kSuper > s_lo ? ce / kSuper : s_lo;
    const bool use_super = s_hi > s_lo;
    const int64_t mid_begin = use_super ? s_lo * kSuper : ce + 1;
    const int64_t tail_begin = use_super ? s_hi * kSuper : ce + 1;
    for (int64_t col = lane; col < dim_v; col += 32) {
      VecT acc = Vec<V>::Zero();
      if (r >= 0) {
        acc = part_v[(cs * 2 + 1) * dim_v + col];
        AddStrided<V>(acc, part_v + ((cs + 1) * 2) * dim_v + col, 2 * dim_v, mid_begin - cs - 1);
        if (use_super) {
          AddStrided<V>(acc, super_v + s_lo * dim_v + col, dim_v, s_hi - s_lo);
          AddStrided<V>(acc, part_v + (tail_begin * 2) * dim_v + col, 2 * dim_v,
                        ce + 1 - tail_begin);
        }
      }
      out_v[row * dim_v + col] = acc;
      if (finite_error != nullptr) ReportNonFinite(acc, row, dim, col, finite_error);
    }
  }
}

// ---------------------------------------------------------------- host side

// Temporary bytes CUB needs for the sort and the scans of n items with KeyT sort keys.
template <typename KeyT>
int QueryCubBytes(int64_t n, size_t* bytes, HeraldStatus* status) {
  size_t sort_bytes = 0, exclusive_bytes = 0, inclusive_bytes = 0;
  HERALD_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
                        nullptr, sort_bytes, static_cast<const KeyT*>(nullptr),
                        static_cast<KeyT*>(nullptr), static_cast<const int32_t*>(nullptr),
                        static_cast<int32_t*>(nullptr), static_cast<int>(n), 0,
                        static_cast<int>(8 * sizeof(KeyT))),
                    status);
  HERALD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, exclusive_bytes,
                                                  static_cast<const int32_t*>(nullptr),
                                                  static_cast<int32_t*>(nullptr),
                                                  static_cast<int>(n)),
                    status);
  const RunHeadIterator<KeyT> heads(thrust::counting_iterator<int64_t>(0), RunHead<KeyT>{nullptr});
  HERALD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, inclusive_bytes, heads,
                                                  static_cast<int32_t*>(nullptr),
                                                  static_cast<int>(n)),
                    status);
  *bytes = sort_bytes;
  if (exclusive_bytes > *bytes) *bytes = exclusive_bytes;
  if (inclusive_bytes > *bytes) *bytes = inclusive_bytes;
  return HERALD_OK;
}

// The temporary arrays of one dedup/segment-sum call (offsets into a TempBlock).
struct RunPlan {
  int64_t n = 0;
  bool dedup = true;  // rows ranked by first appearance (else rows are the keys)
  size_t keys_in, keys_out, pos_in, pos_out, head, run_count, run_start, flag, row_of_run,
      run_of_row,
      cub_temp;
  size_t cub_bytes = 0;

  int Plan(TempBlock* temp, int64_t count, int64_t rows_capacity, bool rank_by_first,
           HeraldStatus* status) {
    n = count;
    dedup = rank_by_first;
    keys_in = temp->Take<unsigned long long>(n);  // uint32 or uint64 keys
    keys_out = temp->Take<unsigned long long>(n);
    pos_in = temp->Take<int32_t>(n);
    pos_out = temp->Take<int32_t>(n);
    head = temp->Take<int32_t>(n);
    run_count = temp->Take<int32_t>(n);
    run_start = temp->Take<int32_t>(n + 1);
    flag = temp->Take<int32_t>(n);
    row_of_run = temp->Take<int32_t>(n);
    run_of_row = temp->Take<int32_t>(rows_capacity);
    size_t bytes = 0;
    cub_bytes = 0;
    HERALD_RETURN_IF_ERROR(QueryCubBytes<uint32_t>(n, &bytes, status));
    cub_bytes = bytes;
    HERALD_RETURN_IF_ERROR(QueryCubBytes<unsigned long long>(n, &bytes, status));
    if (bytes > cub_bytes) cub_bytes = bytes;
    cub_temp = temp->Take<char>(cub_bytes);
    return HERALD_OK;
  }
};

// Sorts keys (validated to lie in [0, limit)) and builds runs, row_of_run/run_of_row, and
// optionally unique, inverse and the device row count.
// Range-checks the keys against [0, limit) first (recording `check`). list/list_count: the
// multi-chunk row list of a following dedup-mode segment sum, or NULL.
template <typename KeyT>
int EnqueueRunsT(const RunPlan& p, const TempBlock& t, const int64_t* keys, int64_t limit,
                 int check, int64_t rows_capacity, int64_t* unique, int64_t* inverse,
                 int64_t* num_rows, int32_t* list, int32_t* list_count, HeraldCudaError* error,
                 cudaStream_t stream, HeraldStatus* status) {
  const int64_t n = p.n;
  const unsigned int blocks = BlocksFor(n, kThreads * 4);
  int32_t* pos_in = t.Get<int32_t>(p.pos_in);
  int32_t* pos_out = t.Get<int32_t>(p.pos_out);
  KeyT* keys_in = t.Get<KeyT>(p.keys_in);
  KeyT* keys_out = t.Get<KeyT>(p.keys_out);
  int32_t* head = t.Get<int32_t>(p.head);
  int32_t* run_count = t.Get<int32_t>(p.run_count);
  int32_t* run_start = t.Get<int32_t>(p.run_start);
  int32_t* flag = t.Get<int32_t>(p.flag);
  int32_t* row_of_run = t.Get<int32_t>(p.row_of_run);
  int32_t* run_of_row = t.Get<int32_t>(p.run_of_row);
  void* cub_temp = t.Get<void>(p.cub_temp);
  size_t cub_bytes = p.cub_bytes;

  IotaCheckKernel<KeyT><<<blocks, kThreads, 0, stream>>>(
      keys, n, limit, check, keys_in, pos_in, p.dedup ? flag : nullptr, list_count, error);
  HERALD_CUDA_CHECK_LAUNCH(status);
  HERALD_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
                        cub_temp, cub_bytes, static_cast<const KeyT*>(keys_in), keys_out, pos_in,
                        pos_out, static_cast<int>(n), 0, EndBit(limit), stream),
                    status);
  cub_bytes = p.cub_bytes;
  const RunHeadIterator<KeyT> heads(thrust::counting_iterator<int64_t>(0),
                                    RunHead<KeyT>{keys_out});
  HERALD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(cub_temp, cub_bytes, heads, run_count,
                                                  static_cast<int>(n), stream),
                    status);
  if (!p.dedup) {  // (dedup mode: IotaCheckKernel zeroed the first-position flags)
    HERALD_CUDA_CHECK(
        cudaMemsetAsync(run_of_row, 0xff, sizeof(int32_t) * rows_capacity, stream), status);
  }
  RunStartsKernel<<<blocks, kThreads, 0, stream>>>(run_count, pos_out, n, run_start,
                                                   p.dedup ? flag : nullptr, num_rows, error);
  HERALD_CUDA_CHECK_LAUNCH(status);
  int32_t* rank_at_pos = nullptr;
  if (p.dedup) {  // rank of a run = number of run starts at earlier positions
    rank_at_pos = head;
    cub_bytes = p.cub_bytes;
    HERALD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(cub_temp, cub_bytes, flag, rank_at_pos,
                                                    static_cast<int>(n), stream),
                      status);
  }
  RankKernel<KeyT><<<blocks, kThreads, 0, stream>>>(keys_out, pos_out, run_count, run_start, n,
                                              rank_at_pos, row_of_run, run_of_row, unique,
                                              p.dedup ? list : nullptr, list_count, error);
  HERALD_CUDA_CHECK_LAUNCH(status);
  if (inverse != nullptr) {
    InverseKernel<<<blocks, kThreads, 0, stream>>>(pos_out, run_count, row_of_run, n, inverse,
                                                   error);
    HERALD_CUDA_CHECK_LAUNCH(status);
  }
  return HERALD_OK;
}

// Sorts as uint32 when every valid key fits (limit <= 2^32), else as uint64.
int EnqueueRuns(const RunPlan& p, const TempBlock& t, const int64_t* keys, int64_t limit,
                int check, int64_t rows_capacity, int64_t* unique, int64_t* inverse,
                int64_t* num_rows, int32_t* list, int32_t* list_count, HeraldCudaError* error,
                cudaStream_t stream, HeraldStatus* status) {
  if (limit <= (int64_t{1} << 32)) {
    return EnqueueRunsT<uint32_t>(p, t, keys, limit, check, rows_capacity, unique, inverse,
                                  num_rows, list, list_count, error, stream, status);
  }
  return EnqueueRunsT<unsigned long long>(p, t, keys, limit, check, rows_capacity, unique,
                                          inverse, num_rows, list, list_count, error, stream,
                                          status);
}

struct SumPlan {
  size_t partial = 0, super = 0, list = 0, count = 0, direct = 0;
  int64_t chunks = 0, supers = 0;
  bool with_direct = false;  // GradientRows::direct for a fused apply
  void Plan(TempBlock* temp, int64_t n, int64_t rows_capacity, int64_t dim, bool for_apply) {
    chunks = (n + kChunk - 1) / kChunk;
    supers = chunks / kSuper;  // whole super-chunks only
    partial = temp->Take<float>(static_cast<size_t>(chunks) * 2 * dim);
    super = temp->Take<float>(static_cast<size_t>(supers > 0 ? supers : 1) * dim);
    list = temp->Take<int32_t>(rows_capacity);
    count = temp->Take<int32_t>(1);
    with_direct = for_apply;
    if (for_apply) direct = temp->Take<int32_t>(rows_capacity);
  }
  int32_t* Direct(const TempBlock& t) const {
    return with_direct ? t.Get<int32_t>(direct) : nullptr;
  }
};

int EnqueueSegmentSum(const RunPlan& p, const SumPlan& s, const TempBlock& t,
                      const float* grad_out, int64_t dim, const Sources& sources, int64_t rows,
                      const int64_t* rows_device, float* summed, const HeraldCudaError* error,
                      HeraldCudaError* finite_error, cudaStream_t stream, HeraldStatus* status) {
  float* partial = t.Get<float>(s.partial);
  const bool vec = dim % 4 == 0 && Aligned16(grad_out) && Aligned16(summed) && Aligned16(partial);
  const unsigned int chunk_blocks = BlocksFor(s.chunks, kThreads / 32);
  // The flagged rows are few (multi-chunk runs); enough warps to spread them over the chip.
  // (a small grid: launching thousands of blocks that find no work costs ~20 us on an H100)
  const unsigned int combine_blocks = BlocksFor(rows < 8192 ? rows : 8192, kThreads / 32);
  float* super = t.Get<float>(s.super);
  int32_t* list = t.Get<int32_t>(s.list);
  int32_t* count = t.Get<int32_t>(s.count);
  if (!p.dedup) {  // dedup mode: RankKernel listed the rows (and IotaCheckKernel zeroed count)
    CombineFlagKernel<<<BlocksFor(rows, kThreads * 4), kThreads, 0, stream>>>(
        t.Get<int32_t>(p.run_of_row), t.Get<int32_t>(p.run_start), rows, rows_device, list,
        count, error);
    HERALD_CUDA_CHECK_LAUNCH(status);
  }
#define HERALD_LAUNCH_SUM(V)                                                                   \
  do {                                                                                         \
    ChunkSumKernel<V><<<chunk_blocks, kThreads, 0, stream>>>(                                  \
        grad_out, dim, t.Get<int32_t>(p.pos_out), t.Get<int32_t>(p.run_count),                 \
        t.Get<int32_t>(p.run_start), t.Get<int32_t>(p.row_of_run), p.n, sources, summed,       \
        partial, s.Direct(t), error, finite_error);                                            \
    HERALD_CUDA_CHECK_LAUNCH(status);                                                          \
    if (s.supers > 0) {                                                                        \
      SuperSumKernel<V><<<BlocksFor(s.supers, kThreads / 32), kThreads, 0, stream>>>(          \
          t.Get<int32_t>(p.run_count), t.Get<int32_t>(p.run_start), p.n, s.supers, dim,        \
          partial, super, error);                                                              \
      HERALD_CUDA_CHECK_LAUNCH(status);                                                        \
    }                                                                                          \
    CombineKernel<V><<<combine_blocks, kThreads, 0, stream>>>(                                 \
        list, count, t.Get<int32_t>(p.run_of_row), t.Get<int32_t>(p.run_start), dim, partial,  \
        super, summed, s.Direct(t), error, finite_error);                                      \
    HERALD_CUDA_CHECK_LAUNCH(status);                                                          \
  } while (0)
  if (vec) {
    HERALD_LAUNCH_SUM(4);
  } else {
    HERALD_LAUNCH_SUM(1);
  }
#undef HERALD_LAUNCH_SUM
  return HERALD_OK;
}

int CheckCount(int64_t n, HeraldStatus* status) {
  if (n < 0 || n >= (int64_t{1} << 31) - 1) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected 0 <= n < 2^31 - 1 ids per call on the GPU. Received: n=%lld",
                     static_cast<long long>(n));
  }
  return SetOk(status);
}

}  // namespace

// herald_cuda_dedup_grad, and with `params` != NULL the fused apply of the summed rows to
// (storage, state, versions): the summed rows are checked for non-finite values as they are
// written (into the call's error record), so the apply kernel that follows writes nothing when
// one is found; the unique rows are distinct and in range by construction.
int DedupGrad(const int64_t* slot_ids, int64_t n, int64_t slots, const float* grad_out,
              const int64_t* row_splits, int64_t batch, int32_t combiner, int64_t dim,
              int64_t* unique, int64_t* inverse, int64_t* num_unique, float* summed,
              const HeraldOptimizerParams* params, float* storage, float* state,
              int64_t* versions, cudaStream_t stream, const HeraldCudaAllocator* allocator,
              HeraldCudaError* error, HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(CheckCount(n, status));
  HERALD_RETURN_IF_ERROR(CheckLookupArgs(slots, dim, n, batch, combiner, status));
  const bool pooled = combiner != HERALD_COMBINER_NONE;
  int64_t ids_per_bag = 0;
  if (pooled) HERALD_RETURN_IF_ERROR(CheckDenseBags(row_splits, n, batch, &ids_per_bag, status));
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  RunPlan plan;
  SumPlan sum;
  if (n > 0) {
    HERALD_RETURN_IF_ERROR(plan.Plan(&temp, n, n, true, status));
    sum.Plan(&temp, n, n, dim, params != nullptr);
  }
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  // row_splits here; the ids' range is checked by EnqueueRuns' first kernel.
  HERALD_RETURN_IF_ERROR(EnqueueIdChecks(nullptr, n, nullptr, slots, HERALD_CUDA_CHECK_ID_RANGE,
                                         pooled ? row_splits : nullptr, batch, scope.record(),
                                         stream, status));
  if (n == 0) {
    HERALD_RETURN_IF_ERROR(EnqueueSetInt64(num_unique, 0, scope.record(), stream, status));
  } else {
    HERALD_RETURN_IF_ERROR(EnqueueRuns(plan, temp, slot_ids, slots, HERALD_CUDA_CHECK_ID_RANGE,
                                       n, unique, inverse, num_unique,
                                       temp.Get<int32_t>(sum.list), temp.Get<int32_t>(sum.count),
                                       scope.record(), stream, status));
    const Sources sources{pooled ? row_splits : nullptr, batch, ids_per_bag, combiner};
    HERALD_RETURN_IF_ERROR(EnqueueSegmentSum(plan, sum, temp, grad_out, dim, sources, n,
                                             num_unique, summed, scope.record(),
                                             params != nullptr ? scope.record() : nullptr,
                                             stream, status));
    if (params != nullptr) {
      const GradientRows grads{summed, sum.Direct(temp), grad_out, sources};
      HERALD_RETURN_IF_ERROR(EnqueueApply(*params, storage, state, versions, dim, unique, n,
                                          num_unique, grads, scope.record(), stream, status));
    }
  }
  return scope.Finish(stream, slot_ids, "slot id", status);
}

}  // namespace cuda
}  // namespace herald

using herald::SetOk;
using herald::SetStatus;
using herald::cuda::ErrorScope;
using herald::cuda::RunPlan;
using herald::cuda::Sources;
using herald::cuda::SumPlan;
using herald::cuda::TempBlock;

extern "C" {

int herald_cuda_unique_slots(const int64_t* slot_ids, int64_t n, int64_t slots, int64_t* unique,
                             int64_t* inverse, int64_t* num_unique, cudaStream_t stream,
                             const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                             HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckCount(n, status));
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckRowArgs(slots, 1, n, status));
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  RunPlan plan;
  if (n > 0) HERALD_RETURN_IF_ERROR(plan.Plan(&temp, n, n, true, status));
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  if (n == 0) {
    HERALD_RETURN_IF_ERROR(
        herald::cuda::EnqueueSetInt64(num_unique, 0, scope.record(), stream, status));
  } else {  // the range check is EnqueueRuns' first kernel
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueRuns(
        plan, temp, slot_ids, slots, HERALD_CUDA_CHECK_ID_RANGE, n, unique, inverse, num_unique,
        nullptr, nullptr, scope.record(), stream, status));
  }
  return scope.Finish(stream, slot_ids, "slot id", status);
}

int herald_cuda_lookup_grad(const float* grad_out, const int64_t* inverse, int64_t n,
                            const int64_t* row_splits, int64_t batch, int32_t combiner,
                            int64_t num_unique, int64_t dim, float* summed, cudaStream_t stream,
                            const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                            HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::cuda::CheckCount(n, status));
  HERALD_RETURN_IF_ERROR(
      herald::cuda::CheckLookupArgs(num_unique, dim, n, batch, combiner, status));
  if (num_unique >= (int64_t{1} << 31) - 1) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected num_unique < 2^31 - 1. Received: %lld",
                     static_cast<long long>(num_unique));
  }
  const bool pooled = combiner != HERALD_COMBINER_NONE;
  int64_t ids_per_bag = 0;
  if (pooled) {
    HERALD_RETURN_IF_ERROR(
        herald::cuda::CheckDenseBags(row_splits, n, batch, &ids_per_bag, status));
  }
  TempBlock temp(allocator, stream);
  ErrorScope scope(error, &temp);
  RunPlan plan;
  SumPlan sum;
  if (n > 0) {
    HERALD_RETURN_IF_ERROR(plan.Plan(&temp, n, num_unique, false, status));
    sum.Plan(&temp, n, num_unique, dim, false);
  }
  HERALD_RETURN_IF_ERROR(temp.Allocate(status));
  HERALD_RETURN_IF_ERROR(scope.Start(&temp, stream, status));
  // row_splits here; the inverse indices' range is checked by EnqueueRuns' first kernel.
  HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueIdChecks(nullptr, n, nullptr, num_unique,
                                                       HERALD_CUDA_CHECK_INVERSE,
                                                       pooled ? row_splits : nullptr, batch,
                                                       scope.record(), stream, status));
  if (n == 0) {
    // Every row is an empty sum.
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueFill(summed, num_unique * dim, 0.0f,
                                                     scope.record(), stream, status));
  } else {
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueRuns(
        plan, temp, inverse, num_unique, HERALD_CUDA_CHECK_INVERSE, num_unique, nullptr, nullptr,
        nullptr, temp.Get<int32_t>(sum.list), temp.Get<int32_t>(sum.count), scope.record(),
        stream, status));
    const Sources sources{pooled ? row_splits : nullptr, batch, ids_per_bag, combiner};
    HERALD_RETURN_IF_ERROR(herald::cuda::EnqueueSegmentSum(plan, sum, temp, grad_out, dim,
                                                           sources, num_unique, nullptr, summed,
                                                           scope.record(), nullptr, stream,
                                                           status));
  }
  return scope.Finish(stream, inverse, "inverse index", status);
}

int herald_cuda_dedup_grad(const int64_t* slot_ids, int64_t n, int64_t slots,
                           const float* grad_out, const int64_t* row_splits, int64_t batch,
                           int32_t combiner, int64_t dim, int64_t* unique, int64_t* inverse,
                           int64_t* num_unique, float* summed, cudaStream_t stream,
                           const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                           HeraldStatus* status) {
  return herald::cuda::DedupGrad(slot_ids, n, slots, grad_out, row_splits, batch, combiner, dim,
                                 unique, inverse, num_unique, summed, nullptr, nullptr, nullptr,
                                 nullptr, stream, allocator, error, status);
}

int herald_cuda_dedup_apply(const HeraldOptimizerParams* params, float* storage, float* state,
                            int64_t* versions, int64_t slots, int64_t dim,
                            const int64_t* slot_ids, int64_t n, const float* grad_out,
                            const int64_t* row_splits, int64_t batch, int32_t combiner,
                            int64_t* unique, int64_t* num_unique, float* summed,
                            cudaStream_t stream, const HeraldCudaAllocator* allocator,
                            HeraldCudaError* error, HeraldStatus* status) {
  HERALD_RETURN_IF_ERROR(herald::CheckApplyArgs(params, slots, dim, n, state, status));
  return herald::cuda::DedupGrad(slot_ids, n, slots, grad_out, row_splits, batch, combiner, dim,
                                 unique, nullptr, num_unique, summed, params, storage, state,
                                 versions, stream, allocator, error, status);
}

}  // extern "C"
