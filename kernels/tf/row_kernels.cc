// TF CPU kernels of InitRows, GatherRows and ScatterRows over the C ABI.
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
namespace errors = ::tensorflow::errors;

class InitRowsOp : public OpKernel {
 public:
  explicit InitRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, InitializerParamsFromAttrs(ctx, &params_, &dim_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& keys = ctx->input(0);
    OP_REQUIRES_OK(ctx, CheckIdVector(keys, "keys"));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({keys.NumElements(), dim_}), &out));
    HeraldStatus st{};
    const int code = herald_cpu_init_rows(&params_, keys.flat<int64_t>().data(),
                                          keys.NumElements(), dim_, out->flat<float>().data(),
                                          &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }

 private:
  int64_t dim_ = 0;
  HeraldInitializerParams params_{};
};

class GatherRowsOp : public OpKernel {
 public:
  explicit GatherRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

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
    HeraldStatus st{};
    const int code = herald_cpu_gather_rows(storage.flat<float>().data(), storage.dim_size(0),
                                            width, ids.flat<int64_t>().data(), ids.NumElements(),
                                            out->flat<float>().data(), &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }
};

class ScatterRowsOp : public OpKernel {
 public:
  explicit ScatterRowsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

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
    OP_REQUIRES_OK(ctx, PrepareForUpdate(ctx, var.get()));
    HeraldStatus st{};
    const int code = herald_cpu_scatter_rows(storage->flat<float>().data(), storage->dim_size(0),
                                             width, ids.flat<int64_t>().data(), ids.NumElements(),
                                             rows.flat<float>().data(), &st);
    OP_REQUIRES_OK(ctx, ToTfStatus(code, st));
  }
};

REGISTER_KERNEL_BUILDER(Name("Herald>InitRows").Device(::tensorflow::DEVICE_CPU), InitRowsOp);
REGISTER_KERNEL_BUILDER(Name("Herald>GatherRows").Device(::tensorflow::DEVICE_CPU), GatherRowsOp);
REGISTER_KERNEL_BUILDER(Name("Herald>ScatterRows").Device(::tensorflow::DEVICE_CPU),
                        ScatterRowsOp);

}  // namespace
}  // namespace herald
