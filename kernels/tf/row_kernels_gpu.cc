// TF GPU kernels of InitRows, GatherRows and ScatterRows over the CUDA C ABI.
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

class InitRowsGpuOp : public OpKernel {
 public:
  explicit InitRowsGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, InitializerParamsFromAttrs(ctx, &params_, &dim_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& keys = ctx->input(0);
    OP_REQUIRES_OK(ctx, CheckIdVector(keys, "keys"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({keys.NumElements(), dim_}), &out));
    HeraldStatus st{};
    const int code = herald_cuda_init_rows(&params_, keys.flat<int64_t>().data(),
                                           keys.NumElements(), dim_, out->flat<float>().data(),
                                           GpuStream(ctx), &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  int64_t dim_ = 0;
  HeraldInitializerParams params_{};
};

class GatherRowsGpuOp : public OpKernel {
 public:
  explicit GatherRowsGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& ids = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &var));
    ::tensorflow::tf_shared_lock lock(*var->mu());
    const Tensor& storage = *var->tensor();
    const int64_t width = storage.dim_size(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({ids.NumElements(), width}), &out));
    if (width == 0) return;
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_gather_rows(
        storage.flat<float>().data(), storage.dim_size(0), width, ids.flat<int64_t>().data(),
        ids.NumElements(), out->flat<float>().data(), GpuStream(ctx), allocator.get(), nullptr,
        &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }
};

class ScatterRowsGpuOp : public OpKernel {
 public:
  explicit ScatterRowsGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& ids = ctx->input(1);
    const Tensor& rows = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &var));
    ::tensorflow::mutex_lock lock(*var->mu());
    Tensor* storage = var->tensor();
    const int64_t width = storage->dim_size(1);
    OP_REQUIRES(ctx, rows.dims() == 2 && rows.dim_size(0) == ids.NumElements() &&
                         rows.dim_size(1) == width,
                errors::InvalidArgument("Expected rows of shape [", ids.NumElements(), ",", width,
                                        "]. Received: ", rows.shape().DebugString()));
    if (width == 0) return;
    OP_REQUIRES_OK(ctx, PrepareForUpdateGpu(ctx, var.get()));
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_scatter_rows(
        storage->flat<float>().data(), storage->dim_size(0), width, ids.flat<int64_t>().data(),
        ids.NumElements(), rows.flat<float>().data(), GpuStream(ctx), allocator.get(), nullptr,
        &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }
};

REGISTER_KERNEL_BUILDER(Name("Herald>InitRows").Device(::tensorflow::DEVICE_GPU), InitRowsGpuOp);
REGISTER_KERNEL_BUILDER(Name("Herald>GatherRows").Device(::tensorflow::DEVICE_GPU),
                        GatherRowsGpuOp);
REGISTER_KERNEL_BUILDER(Name("Herald>ScatterRows").Device(::tensorflow::DEVICE_GPU),
                        ScatterRowsGpuOp);

}  // namespace
}  // namespace herald
