// TF CPU kernel of SparseApply over the C ABI: the optimizer math of kernels/core/optimizer.h.
#include <string>

#include "kernels/core/c_api.h"
#include "kernels/tf/tf_adapter.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace herald {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
namespace errors = ::tensorflow::errors;

class SparseApplyOp : public OpKernel {
 public:
  explicit SparseApplyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, OptimizerParamsFromAttrs(ctx, &params_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& slots_t = ctx->input(3);
    const Tensor& grads = ctx->input(4);
    const Tensor& lr = ctx->input(5);
    OP_REQUIRES_OK(ctx, CheckIdVector(slots_t, "unique_slots"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> storage_var, state_var, versions_var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &storage_var));
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 1, ::tensorflow::DT_FLOAT, 2, &state_var));
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 2, ::tensorflow::DT_INT64, 1, &versions_var));
    // Locks are always taken in input order (storage, state, versions).
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
    OP_REQUIRES_OK(ctx, PrepareForUpdate(ctx, storage_var.get()));
    OP_REQUIRES_OK(ctx, PrepareForUpdate(ctx, state_var.get()));
    OP_REQUIRES_OK(ctx, PrepareForUpdate(ctx, versions_var.get()));
    HeraldOptimizerParams p = params_;
    p.learning_rate = lr.scalar<float>()();
    HeraldRunner runner = CpuRunner(ctx);
    HeraldStatus st{};
    const int code = herald_cpu_sparse_apply(
        &p, storage->flat<float>().data(), width > 0 ? state->flat<float>().data() : nullptr,
        versions->flat<int64_t>().data(), slots, dim, slots_t.flat<int64_t>().data(), u,
        grads.flat<float>().data(), &runner, &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  HeraldOptimizerParams params_{};
};

REGISTER_KERNEL_BUILDER(Name("Herald>SparseApply").Device(::tensorflow::DEVICE_CPU),
                        SparseApplyOp);

}  // namespace
}  // namespace herald
