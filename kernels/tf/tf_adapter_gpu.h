// GPU side of the TF adapter: the op's CUDA stream, TF's allocator injected into the CUDA core,
// and copy-on-write of resource variables on the device. Status conversion stays in
// tf_adapter.h (ToTfStatus), the one place for it.
//
// Every GPU kernel calls the CUDA C ABI (kernels/cuda/cuda_api.h) in its synchronous check mode
// (error record NULL): the call waits for the op's stream once, so invalid ids or gradients
// become an InvalidArgument of this op, and storage is never modified by an invalid call.
#ifndef HERALD_KERNELS_TF_TF_ADAPTER_GPU_H_
#define HERALD_KERNELS_TF_TF_ADAPTER_GPU_H_

#include <vector>

#include "kernels/cuda/cuda_api.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"

namespace herald {

// The CUDA stream TF runs this op's GPU work on.
cudaStream_t GpuStream(::tensorflow::OpKernelContext* ctx);

// A HeraldCudaAllocator over ctx->allocate_temp. Temporary tensors live until this object is
// destroyed (the end of Compute); TF's GPU allocator orders reuse on the op's stream, so memory
// released then is safe for work still queued. Create one per Compute call, on its stack.
class TfCudaAllocator {
 public:
  explicit TfCudaAllocator(::tensorflow::OpKernelContext* ctx);
  TfCudaAllocator(const TfCudaAllocator&) = delete;
  TfCudaAllocator& operator=(const TfCudaAllocator&) = delete;
  const HeraldCudaAllocator* get() const { return &allocator_; }

 private:
  static void* Allocate(void* context, size_t bytes, cudaStream_t stream);
  static void Deallocate(void* context, void* ptr, size_t bytes, cudaStream_t stream);

  ::tensorflow::OpKernelContext* ctx_;
  std::vector<::tensorflow::Tensor> temps_;
  HeraldCudaAllocator allocator_;
};

// Before an in-place update on the GPU: if another tensor still shares the variable's buffer,
// give the variable a private device copy (cudaMemcpyAsync on the op's stream).
::tensorflow::Status PrepareForUpdateGpu(::tensorflow::OpKernelContext* ctx,
                                         ::tensorflow::Var* var);

// A CUDA runtime error as a TF Internal status naming the call site.
::tensorflow::Status CudaStatus(cudaError_t err, const char* what);

}  // namespace herald

#endif  // HERALD_KERNELS_TF_TF_ADAPTER_GPU_H_
