// TF GPU kernels of Lookup and LookupGrad over the CUDA C ABI (kernels/cuda/cuda_api.h); the
// same op contract as embedding_kernels.cc (CPU). Compiled only when CUDA is present.
#include <stdint.h>

#include <limits>
#include <string>

#include "kernels/cuda/cuda_api.h"
#include "kernels/tf/tf_adapter.h"
#include "kernels/tf/tf_adapter_gpu.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace herald {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

class LookupGpuOp : public OpKernel {
 public:
  explicit LookupGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string name;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiner", &name));
    combiner_ = CombinerFromName(name);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& ids = ctx->input(1);
    const Tensor& splits = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    OP_REQUIRES_OK(ctx, CheckIdVector(splits, "row_splits"));
    const bool pooled = combiner_ != HERALD_COMBINER_NONE;
    OP_REQUIRES(ctx, !pooled || splits.NumElements() >= 1,
                errors::InvalidArgument(
                    "Expected row_splits with at least one entry (batch + 1). Received: 0"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &var));
    ::tensorflow::tf_shared_lock lock(*var->mu());
    const Tensor& storage = *var->tensor();
    const int64_t slots = storage.dim_size(0), dim = storage.dim_size(1);
    const int64_t n = ids.NumElements();
    const int64_t batch = pooled ? splits.NumElements() - 1 : 0;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({pooled ? batch : n, dim}), &out));
    if (dim == 0) return;
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_lookup(
        storage.flat<float>().data(), slots, dim, ids.flat<int64_t>().data(), n,
        pooled ? splits.flat<int64_t>().data() : nullptr, batch, combiner_,
        out->flat<float>().data(), GpuStream(ctx), allocator.get(), nullptr, &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  int32_t combiner_;
};

// Dedup + segment sum on the device (one sort); the output size (number of unique slots) is
// read back to the host once, as every op with a data-dependent shape must.
class LookupGradGpuOp : public OpKernel {
 public:
  explicit LookupGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string name;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiner", &name));
    combiner_ = CombinerFromName(name);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& ids = ctx->input(1);
    const Tensor& splits = ctx->input(2);
    OP_REQUIRES(ctx, grad.dims() == 2,
                errors::InvalidArgument("Expected grad to be a matrix. Received: shape ",
                                        grad.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    OP_REQUIRES_OK(ctx, CheckIdVector(splits, "row_splits"));
    const bool pooled = combiner_ != HERALD_COMBINER_NONE;
    const int64_t n = ids.NumElements(), dim = grad.dim_size(1);
    const int64_t batch = pooled ? splits.NumElements() - 1 : n;
    OP_REQUIRES(ctx, grad.dim_size(0) == batch,
                errors::InvalidArgument("Expected grad with ", batch, " rows (one per ",
                                        pooled ? "bag" : "id",
                                        "). Received: shape ", grad.shape().DebugString()));
    Tensor unique, num, summed;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({n}), &unique));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({1}), &num));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({n, dim}), &summed));
    const cudaStream_t stream = GpuStream(ctx);
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    // The op has no storage input: ids are checked against [0, 2^63 - 1).
    const int64_t any_slot = std::numeric_limits<int64_t>::max();
    int code;
    if (dim == 0) {
      code = herald_cuda_unique_slots(ids.flat<int64_t>().data(), n, any_slot,
                                      unique.flat<int64_t>().data(), nullptr,
                                      num.flat<int64_t>().data(), stream, allocator.get(),
                                      nullptr, &st);
    } else {
      code = herald_cuda_dedup_grad(
          ids.flat<int64_t>().data(), n, any_slot, grad.flat<float>().data(),
          pooled ? splits.flat<int64_t>().data() : nullptr, batch, combiner_, dim,
          unique.flat<int64_t>().data(), nullptr, num.flat<int64_t>().data(),
          summed.flat<float>().data(), stream, allocator.get(), nullptr, &st);
    }
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
    int64_t num_unique = 0;
    OP_REQUIRES_OK(ctx, CudaStatus(cudaMemcpyAsync(&num_unique, num.flat<int64_t>().data(),
                                                   sizeof(num_unique), cudaMemcpyDeviceToHost,
                                                   stream),
                                   "cudaMemcpyAsync (number of unique slots)"));
    OP_REQUIRES_OK(ctx, CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
    Tensor* unique_out = nullptr;
    Tensor* summed_out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({num_unique}), &unique_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({num_unique, dim}), &summed_out));
    if (num_unique == 0) return;
    OP_REQUIRES_OK(ctx, CudaStatus(cudaMemcpyAsync(unique_out->flat<int64_t>().data(),
                                                   unique.flat<int64_t>().data(),
                                                   sizeof(int64_t) * num_unique,
                                                   cudaMemcpyDeviceToDevice, stream),
                                   "cudaMemcpyAsync (unique slots)"));
    if (dim == 0) return;
    OP_REQUIRES_OK(ctx, CudaStatus(cudaMemcpyAsync(summed_out->flat<float>().data(),
                                                   summed.flat<float>().data(),
                                                   sizeof(float) * num_unique * dim,
                                                   cudaMemcpyDeviceToDevice, stream),
                                   "cudaMemcpyAsync (summed gradients)"));
  }

 private:
  int32_t combiner_;
};

REGISTER_KERNEL_BUILDER(Name("Herald>Lookup").Device(::tensorflow::DEVICE_GPU), LookupGpuOp);
REGISTER_KERNEL_BUILDER(Name("Herald>LookupGrad").Device(::tensorflow::DEVICE_GPU),
                        LookupGradGpuOp);

}  // namespace
}  // namespace herald
