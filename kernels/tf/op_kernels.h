// The TF kernels of the herald ops, written once for both devices: input checks, variable lookup
// and locking, and output allocation live here; each device's C ABI call lives in a Backend
// (CpuBackend in cpu_kernels.cc over kernels/core/c_api.h, GpuBackend in gpu_kernels.cc over
// kernels/cuda/cuda_api.h), which also registers the kernels.
//
// A Backend provides, each returning a ::tensorflow::Status:
//   Lookup, LookupGrad, SparseApply, InitRows, GatherRows, ScatterRows (the C ABI calls below)
//   and PrepareForUpdate (copy-on-write of a variable about to be updated in place).
#ifndef HERALD_KERNELS_TF_OP_KERNELS_H_
#define HERALD_KERNELS_TF_OP_KERNELS_H_

#include <stdint.h>

#include <string>

#include "kernels/core/c_api.h"
#include "kernels/core/optimizer.h"
#include "kernels/tf/tf_adapter.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace herald {

// The validated inputs of LookupGrad, handed to Backend::LookupGrad, which allocates the two
// outputs (unique slots, summed rows): their size is only known after the dedup.
struct LookupGradInputs {
  const ::tensorflow::Tensor* grad;
  const int64_t* ids;
  const int64_t* row_splits;  // NULL unless pooled
  int64_t n, dim, batch;       // batch: grad rows (bags, or ids for combiner "none")
  int32_t combiner;
};

// Base of the kernels with a "combiner" attr (sum, mean, sqrtn or none), parsed once here.
class CombinerOpKernel : public ::tensorflow::OpKernel {
 protected:
  explicit CombinerOpKernel(::tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string name;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiner", &name));
    combiner_ = CombinerFromName(name);
  }

  int32_t combiner_;
};

template <class Backend>
class LookupOp : public CombinerOpKernel {
 public:
  explicit LookupOp(::tensorflow::OpKernelConstruction* ctx) : CombinerOpKernel(ctx) {}

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const ::tensorflow::Tensor& ids = ctx->input(1);
    const ::tensorflow::Tensor& splits = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    OP_REQUIRES_OK(ctx, CheckIdVector(splits, "row_splits"));
    const bool pooled = combiner_ != HERALD_COMBINER_NONE;
    OP_REQUIRES(ctx, !pooled || splits.NumElements() >= 1,
                ::tensorflow::errors::InvalidArgument(
                    "Expected row_splits with at least one entry (batch + 1). Received: 0"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &var));
    ::tensorflow::tf_shared_lock lock(*var->mu());
    const ::tensorflow::Tensor& storage = *var->tensor();
    const int64_t slots = storage.dim_size(0), dim = storage.dim_size(1);
    const int64_t n = ids.NumElements();
    const int64_t batch = pooled ? splits.NumElements() - 1 : 0;
    ::tensorflow::Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ::tensorflow::TensorShape({pooled ? batch : n, dim}),
                                             &out));
    OP_REQUIRES_OK(ctx, Backend::Lookup(ctx, storage.flat<float>().data(), slots, dim,
                                        ids.flat<int64_t>().data(), n,
                                        pooled ? splits.flat<int64_t>().data() : nullptr, batch,
                                        combiner_, out->flat<float>().data()));
  }
};

template <class Backend>
class LookupGradOp : public CombinerOpKernel {
 public:
  explicit LookupGradOp(::tensorflow::OpKernelConstruction* ctx) : CombinerOpKernel(ctx) {}

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const ::tensorflow::Tensor& grad = ctx->input(0);
    const ::tensorflow::Tensor& ids = ctx->input(1);
    const ::tensorflow::Tensor& splits = ctx->input(2);
    OP_REQUIRES(ctx, grad.dims() == 2,
                ::tensorflow::errors::InvalidArgument(
                    "Expected grad to be a matrix. Received: shape ", grad.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    OP_REQUIRES_OK(ctx, CheckIdVector(splits, "row_splits"));
    const bool pooled = combiner_ != HERALD_COMBINER_NONE;
    const int64_t n = ids.NumElements();
    const int64_t batch = pooled ? splits.NumElements() - 1 : n;
    OP_REQUIRES(ctx, grad.dim_size(0) == batch,
                ::tensorflow::errors::InvalidArgument(
                    "Expected grad with ", batch, " rows (one per ", pooled ? "bag" : "id",
                    "). Received: shape ", grad.shape().DebugString()));
    const LookupGradInputs in{&grad,
                              ids.flat<int64_t>().data(),
                              pooled ? splits.flat<int64_t>().data() : nullptr,
                              n,
                              grad.dim_size(1),
                              batch,
                              combiner_};
    OP_REQUIRES_OK(ctx, Backend::LookupGrad(ctx, in));
  }
};

template <class Backend>
class SparseApplyOp : public ::tensorflow::OpKernel {
 public:
  explicit SparseApplyOp(::tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, OptimizerParamsFromAttrs(ctx, &params_));
  }

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const ::tensorflow::Tensor& slots_t = ctx->input(3);
    const ::tensorflow::Tensor& grads = ctx->input(4);
    const ::tensorflow::Tensor& lr = ctx->input(5);  // host memory on every device
    OP_REQUIRES_OK(ctx, CheckIdVector(slots_t, "unique_slots"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> storage_var, state_var, versions_var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &storage_var));
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 1, ::tensorflow::DT_FLOAT, 2, &state_var));
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 2, ::tensorflow::DT_INT64, 1, &versions_var));
    // Locks are always taken in input order (storage, state, versions).
    ::tensorflow::mutex_lock l0(*storage_var->mu());
    ::tensorflow::mutex_lock l1(*state_var->mu());
    ::tensorflow::mutex_lock l2(*versions_var->mu());
    ::tensorflow::Tensor* storage = storage_var->tensor();
    ::tensorflow::Tensor* state = state_var->tensor();
    ::tensorflow::Tensor* versions = versions_var->tensor();
    const int64_t slots = storage->dim_size(0), dim = storage->dim_size(1);
    const int64_t u = slots_t.NumElements();
    const int64_t width = StateWidth(params_.kind, dim);
    OP_REQUIRES_OK(ctx, CheckSparseApplyShapes(params_.kind, *storage, *state, *versions, grads,
                                               u, lr));
    OP_REQUIRES_OK(ctx, Backend::PrepareForUpdate(ctx, storage_var.get()));
    OP_REQUIRES_OK(ctx, Backend::PrepareForUpdate(ctx, state_var.get()));
    OP_REQUIRES_OK(ctx, Backend::PrepareForUpdate(ctx, versions_var.get()));
    HeraldOptimizerParams p = params_;
    p.learning_rate = lr.scalar<float>()();
    OP_REQUIRES_OK(ctx, Backend::SparseApply(
                            ctx, p, storage->flat<float>().data(),
                            width > 0 ? state->flat<float>().data() : nullptr,
                            versions->flat<int64_t>().data(), slots, dim,
                            slots_t.flat<int64_t>().data(), u, grads.flat<float>().data()));
  }

 private:
  HeraldOptimizerParams params_{};
};

template <class Backend>
class InitRowsOp : public ::tensorflow::OpKernel {
 public:
  explicit InitRowsOp(::tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, InitializerParamsFromAttrs(ctx, &params_, &dim_));
  }

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const ::tensorflow::Tensor& keys = ctx->input(0);
    OP_REQUIRES_OK(ctx, CheckIdVector(keys, "keys"));
    ::tensorflow::Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, ::tensorflow::TensorShape({keys.NumElements(), dim_}), &out));
    OP_REQUIRES_OK(ctx, Backend::InitRows(ctx, params_, keys.flat<int64_t>().data(),
                                          keys.NumElements(), dim_, out->flat<float>().data()));
  }

 private:
  int64_t dim_ = 0;
  HeraldInitializerParams params_{};
};

template <class Backend>
class GatherRowsOp : public ::tensorflow::OpKernel {
 public:
  explicit GatherRowsOp(::tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const ::tensorflow::Tensor& ids = ctx->input(1);
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &var));
    ::tensorflow::tf_shared_lock lock(*var->mu());
    const ::tensorflow::Tensor& storage = *var->tensor();
    const int64_t width = storage.dim_size(1);
    ::tensorflow::Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, ::tensorflow::TensorShape({ids.NumElements(), width}), &out));
    if (width == 0) return;
    OP_REQUIRES_OK(ctx, Backend::GatherRows(ctx, storage.flat<float>().data(),
                                            storage.dim_size(0), width,
                                            ids.flat<int64_t>().data(), ids.NumElements(),
                                            out->flat<float>().data()));
  }
};

template <class Backend>
class ScatterRowsOp : public ::tensorflow::OpKernel {
 public:
  explicit ScatterRowsOp(::tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(::tensorflow::OpKernelContext* ctx) override {
    const ::tensorflow::Tensor& ids = ctx->input(1);
    const ::tensorflow::Tensor& rows = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckIdVector(ids, "slot_ids"));
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
    OP_REQUIRES_OK(ctx, LookupStorage(ctx, 0, ::tensorflow::DT_FLOAT, 2, &var));
    ::tensorflow::mutex_lock lock(*var->mu());
    ::tensorflow::Tensor* storage = var->tensor();
    const int64_t width = storage->dim_size(1);
    OP_REQUIRES(ctx,
                rows.dims() == 2 && rows.dim_size(0) == ids.NumElements() &&
                    rows.dim_size(1) == width,
                ::tensorflow::errors::InvalidArgument("Expected rows of shape [",
                                                      ids.NumElements(), ",", width,
                                                      "]. Received: ", rows.shape().DebugString()));
    if (width == 0) return;
    OP_REQUIRES_OK(ctx, Backend::PrepareForUpdate(ctx, var.get()));
    OP_REQUIRES_OK(ctx, Backend::ScatterRows(ctx, storage->flat<float>().data(),
                                             storage->dim_size(0), width,
                                             ids.flat<int64_t>().data(), ids.NumElements(),
                                             rows.flat<float>().data()));
  }
};

}  // namespace herald

#endif  // HERALD_KERNELS_TF_OP_KERNELS_H_
