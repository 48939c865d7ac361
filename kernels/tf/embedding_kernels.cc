// TF CPU kernels of Lookup and LookupGrad over the C ABI (kernels/core/c_api.h).
#include <limits>
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
using ::tensorflow::TensorShape;

class LookupOp : public OpKernel {
 public:
  explicit LookupOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
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
                ::tensorflow::errors::InvalidArgument(
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
    HeraldRunner runner = CpuRunner(ctx);
    HeraldStatus st{};
    const int code = herald_cpu_lookup(storage.flat<float>().data(), slots, dim,
                                       ids.flat<int64_t>().data(), n,
                                       pooled ? splits.flat<int64_t>().data() : nullptr, batch,
                                       combiner_, out->flat<float>().data(), &runner, &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  int32_t combiner_;
};

class LookupGradOp : public OpKernel {
 public:
  explicit LookupGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string name;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiner", &name));
    combiner_ = CombinerFromName(name);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& ids = ctx->input(1);
    const Tensor& splits = ctx->input(2);
    OP_REQUIRES(ctx, grad.dims() == 2,
                ::tensorflow::errors::InvalidArgument(
                    "Expected grad to be a matrix. Received: shape ", grad.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    OP_REQUIRES_OK(ctx, CheckIdVector(splits, "row_splits"));
    const bool pooled = combiner_ != HERALD_COMBINER_NONE;
    const int64_t n = ids.NumElements(), dim = grad.dim_size(1);
    const int64_t batch = pooled ? splits.NumElements() - 1 : n;
    OP_REQUIRES(ctx, grad.dim_size(0) == batch,
                ::tensorflow::errors::InvalidArgument(
                    "Expected grad with ", batch, " rows (one per ", pooled ? "bag" : "id",
                    "). Received: shape ", grad.shape().DebugString()));
    Tensor unique, inverse;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({n}), &unique));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({n}), &inverse));
    int64_t num_unique = 0;
    HeraldStatus st{};
    int code = herald_cpu_unique_slots(ids.flat<int64_t>().data(), n,
                                       std::numeric_limits<int64_t>::max(),
                                       unique.flat<int64_t>().data(),
                                       inverse.flat<int64_t>().data(), &num_unique, &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
    Tensor* unique_out = nullptr;
    Tensor* summed = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({num_unique}), &unique_out));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({num_unique, dim}), &summed));
    if (num_unique > 0) {
      memcpy(unique_out->flat<int64_t>().data(), unique.flat<int64_t>().data(),
             sizeof(int64_t) * num_unique);
    }
    if (dim == 0) return;
    HeraldRunner runner = CpuRunner(ctx);
    code = herald_cpu_lookup_grad(grad.flat<float>().data(), inverse.flat<int64_t>().data(), n,
                                  pooled ? splits.flat<int64_t>().data() : nullptr,
                                  pooled ? batch : 0, combiner_, num_unique, dim,
                                  summed->flat<float>().data(), &runner, &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  int32_t combiner_;
};

REGISTER_KERNEL_BUILDER(Name("Herald>Lookup").Device(::tensorflow::DEVICE_CPU), LookupOp);
REGISTER_KERNEL_BUILDER(Name("Herald>LookupGrad").Device(::tensorflow::DEVICE_CPU), LookupGradOp);

}  // namespace
}  // namespace herald
