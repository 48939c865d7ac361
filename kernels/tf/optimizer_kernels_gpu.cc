// TF GPU kernel of SparseApply over the CUDA C ABI: the optimizer math of
// kernels/core/optimizer.h (herald::ApplyElement), as the CPU kernel and the PS run it.
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
namespace errors = ::tensorflow::errors;

class SparseApplyGpuOp : public OpKernel {
 public:
  explicit SparseApplyGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, OptimizerParamsFromAttrs(ctx, &params_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& slots_t = ctx->input(3);
    const Tensor& grads = ctx->input(4);
    const Tensor& lr = ctx->input(5);  // host memory (see the registration)
    OP_REQUIRES_OK(ctx, CheckIdVector(slots_t, "unique_slots"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> storage_var, state_var, versions_var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &storage_var));
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 1, ::tensorflow::DT_FLOAT, 2, &state_var));
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 2, ::tensorflow::DT_INT64, 1, &versions_var));
    // Locks are always taken in input order (storage, state, versions), as on the CPU.
    ::tensorflow::mutex_lock l0(*storage_var->mu());
    ::tensorflow::mutex_lock l1(*state_var->mu());
    ::tensorflow::mutex_lock l2(*versions_var->mu());
    Tensor* storage = storage_var->tensor();
    Tensor* state = state_var->tensor();
    Tensor* versions = versions_var->tensor();
    const int64_t slots = storage->dim_size(0), dim = storage->dim_size(1);
    const int64_t u = slots_t.NumElements();
    const int64_t width = StateWidth(params_.kind, dim);
    OP_REQUIRES_OK(ctx, CheckSparseApplyShapes(params_.kind, *storage, *state, *versions, grads,
                                               u, lr));
    OP_REQUIRES_OK(ctx, PrepareForUpdateGpu(ctx, storage_var.get()));
    OP_REQUIRES_OK(ctx, PrepareForUpdateGpu(ctx, state_var.get()));
    OP_REQUIRES_OK(ctx, PrepareForUpdateGpu(ctx, versions_var.get()));
    if (dim == 0) return;
    HeraldOptimizerParams p = params_;
    p.learning_rate = lr.scalar<float>()();
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_sparse_apply(
        &p, storage->flat<float>().data(), width > 0 ? state->flat<float>().data() : nullptr,
        versions->flat<int64_t>().data(), slots, dim, slots_t.flat<int64_t>().data(), u,
        nullptr, grads.flat<float>().data(), GpuStream(ctx), allocator.get(), nullptr, &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  HeraldOptimizerParams params_{};
};

REGISTER_KERNEL_BUILDER(Name("Herald>SparseApply")
                            .Device(::tensorflow::DEVICE_GPU)
                            .HostMemory("learning_rate"),
                        SparseApplyGpuOp);

}  // namespace
}  // namespace herald
