// Internal: the optimizer-apply launch shared by herald_cuda_sparse_apply and the fused
// herald_cuda_dedup_apply. Not part of the ABI.
#ifndef HERALD_KERNELS_CUDA_APPLY_CUH_
#define HERALD_KERNELS_CUDA_APPLY_CUH_

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/core/optimizer.h"
#include "kernels/cuda/cuda_api.h"

namespace herald {
namespace cuda {

// Host checks of an apply call: optimizer kind, sizes, state present when the kind needs it.
int CheckApplyArgs(const HeraldOptimizerParams* params, int64_t slots, int64_t dim, int64_t u,
                   const float* state, HeraldStatus* status);

// Enqueues the apply of grads[k] to row unique_slots[k] for k < u (capped at *u_device when
// given); writes nothing when `error` is set by then. No input checks: the caller has made sure
// that the slots are distinct and in range and the gradients finite (or checks them on the
// device before, into `error`).
int EnqueueApply(const HeraldOptimizerParams& params, float* storage /* (slots, dim) */,
                 float* state, int64_t* versions /* (slots) */, int64_t dim,
                 const int64_t* unique_slots /* (u) */, int64_t u,
                 const int64_t* u_device /* (1) or NULL */, const float* grads /* (u, dim) */,
                 const HeraldCudaError* error, cudaStream_t stream, HeraldStatus* status);

}  // namespace cuda
}  // namespace herald

#endif  // HERALD_KERNELS_CUDA_APPLY_CUH_
