#include "kernels/tf/tf_adapter_gpu.h"

#include <cuda_runtime_api.h>

#include "tensorflow/core/framework/device_base.h"
#include "tensorflow/core/platform/errors.h"
#include "xla/stream_executor/stream.h"

namespace herald {

namespace errors = ::tensorflow::errors;

cudaStream_t GpuStream(::tensorflow::OpKernelContext* ctx) {
  return static_cast<cudaStream_t>(
      ctx->op_device_context()->stream()->platform_specific_handle().stream);
}

TfCudaAllocator::TfCudaAllocator(::tensorflow::OpKernelContext* ctx) : ctx_(ctx) {
  allocator_.allocate = &TfCudaAllocator::Allocate;
  allocator_.deallocate = &TfCudaAllocator::Deallocate;
  allocator_.context = this;
}

void* TfCudaAllocator::Allocate(void* context, size_t bytes, cudaStream_t /*stream*/) {
  auto* self = static_cast<TfCudaAllocator*>(context);
  ::tensorflow::Tensor t;
  const int64_t size = static_cast<int64_t>(bytes > 0 ? bytes : 1);
  if (!self->ctx_->allocate_temp(::tensorflow::DT_INT8, ::tensorflow::TensorShape({size}), &t)
           .ok()) {
    return nullptr;  // the CUDA core turns this into HERALD_INTERNAL
  }
  self->temps_.push_back(t);
  return t.data();
}

void TfCudaAllocator::Deallocate(void* /*context*/, void* /*ptr*/, size_t /*bytes*/,
                                 cudaStream_t /*stream*/) {
  // Released with the temporaries at the end of Compute (stream-ordered by TF's allocator).
}

::tensorflow::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return ::tensorflow::OkStatus();
  return errors::Internal(what, " failed: ", cudaGetErrorName(err), " (",
                          cudaGetErrorString(err), ")");
}

::tensorflow::Status PrepareForUpdateGpu(::tensorflow::OpKernelContext* ctx,
                                         ::tensorflow::Var* var) {
  ::tensorflow::Tensor* t = var->tensor();
  if (t->RefCountIsOne()) return ::tensorflow::OkStatus();
  ::tensorflow::Tensor copy;
  TF_RETURN_IF_ERROR(ctx->allocate_temp(t->dtype(), t->shape(), &copy));
  if (t->TotalBytes() > 0) {
    TF_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(copy.data(), t->data(), t->TotalBytes(),
                                                  cudaMemcpyDeviceToDevice, GpuStream(ctx)),
                                  "cudaMemcpyAsync (copy-on-write of a storage variable)"));
  }
  *t = copy;
  return ::tensorflow::OkStatus();
}

}  // namespace herald
