// Internal: the optimizer-apply launch shared by herald_cuda_sparse_apply and the fused
// herald_cuda_dedup_apply, and the gradient sources both read. Not part of the ABI.
#ifndef HERALD_KERNELS_CUDA_APPLY_CUH_
#define HERALD_KERNELS_CUDA_APPLY_CUH_

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/core/optimizer.h"
#include "kernels/cuda/cuda_api.h"
#include "kernels/cuda/vec.cuh"

namespace herald {
namespace cuda {

// Source row in grad_out and weight of id position `pos` of a lookup's gradient (combiner NONE:
// the id's own row; else its bag's row, by binary search over row_splits when ragged).
struct Sources {
  const int64_t* row_splits;  // (batch + 1) or NULL
  int64_t batch;
  int64_t ids_per_bag;  // dense bags; 0 for combiner NONE
  int combiner;

  __device__ __forceinline__ void Of(int64_t pos, int64_t* source, float* weight) const {
    if (combiner == HERALD_COMBINER_NONE) {
      *source = pos;
      *weight = 1.0f;
      return;
    }
    int64_t bag;
    if (row_splits == nullptr) {
      bag = pos / ids_per_bag;
    } else {  // largest b with row_splits[b] <= pos; it is < batch since row_splits[batch] = n
      int64_t lo = 0, hi = batch;
      while (hi - lo > 1) {
        const int64_t mid = (lo + hi) / 2;
        if (row_splits[mid] <= pos) lo = mid; else hi = mid;
      }
      bag = lo;
    }
    *source = bag;
    *weight = WeightOfSource(bag);
  }

  // The weight of every id whose source row is `source`.
  __device__ __forceinline__ float WeightOfSource(int64_t source) const {
    if (combiner == HERALD_COMBINER_NONE) return 1.0f;
    const int64_t length =
        row_splits == nullptr ? ids_per_bag : row_splits[source + 1] - row_splits[source];
    return BagScale(combiner, length);
  }
};

// Where the apply reads row k's gradient: summed[k], unless `direct` is given and
// direct[k] >= 0: then row k's run has one id, whose gradient 0 + weight * grad_out[direct[k]]
// is computed again by the apply with the segment sum's float operations (the fused dedup +
// apply neither writes nor re-reads the sums of single-id rows: most rows of a large batch).
struct GradientRows {
  const float* summed;     // (u, dim)
  const int32_t* direct;   // (u) or NULL
  const float* grad_out;   // (batch | n, dim), read where direct[k] >= 0
  Sources sources;
};

// Enqueues the apply of row k's gradient (see GradientRows) to row unique_slots[k] for k < u
// (capped at *u_device when given); writes nothing when `error` is set by then. No input checks:
// the caller has made sure that the slots are distinct and in range and the gradients finite
// (or checks them on the device before, into `error`).
int EnqueueApply(const HeraldOptimizerParams& params, float* storage /* (slots, dim) */,
                 float* state, int64_t* versions /* (slots) */, int64_t dim,
                 const int64_t* unique_slots /* (u) */, int64_t u,
                 const int64_t* u_device /* (1) or NULL */, const GradientRows& grads,
                 const HeraldCudaError* error, cudaStream_t stream, HeraldStatus* status);

}  // namespace cuda
}  // namespace herald

#endif  // HERALD_KERNELS_CUDA_APPLY_CUH_
