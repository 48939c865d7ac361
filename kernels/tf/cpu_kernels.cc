// The CPU backend of the TF kernels (kernels/tf/op_kernels.h) over the C ABI of
// kernels/core/c_api.h, with the op's intra-op thread pool as the runner.
#include <string.h>

#include <limits>

#include "kernels/core/c_api.h"
#include "kernels/tf/op_kernels.h"
#include "kernels/tf/tf_adapter.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace herald {
namespace {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

struct CpuBackend {
  static Status Lookup(OpKernelContext* ctx, const float* storage, int64_t slots, int64_t dim,
                       const int64_t* ids, int64_t n, const int64_t* row_splits, int64_t batch,
                       int32_t combiner, float* out) {
    HeraldRunner runner = CpuRunner(ctx);
    HeraldStatus st{};
    const int code = herald_cpu_lookup(storage, slots, dim, ids, n, row_splits, batch, combiner,
                                       out, &runner, &st);
    return ToTfStatus(code, st);
  }

  // Dedup on the host first (its count sizes the outputs), then the segment sum.
  static Status LookupGrad(OpKernelContext* ctx, const LookupGradInputs& in) {
    Tensor unique, inverse;
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({in.n}), &unique));
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({in.n}), &inverse));
    int64_t num_unique = 0;
    HeraldStatus st{};
    int code = herald_cpu_unique_slots(in.ids, in.n, std::numeric_limits<int64_t>::max(),
                                       unique.flat<int64_t>().data(),
                                       inverse.flat<int64_t>().data(), &num_unique, &st);
    TF_RETURN_IF_ERROR(ToTfStatus(code, st));
    Tensor* unique_out = nullptr;
    Tensor* summed = nullptr;
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({num_unique}), &unique_out));
    TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({num_unique, in.dim}), &summed));
    if (num_unique > 0) {
      memcpy(unique_out->flat<int64_t>().data(), unique.flat<int64_t>().data(),
             sizeof(int64_t) * num_unique);
    }
    if (in.dim == 0) return Status();
    const bool pooled = in.row_splits != nullptr;
    HeraldRunner runner = CpuRunner(ctx);
    code = herald_cpu_lookup_grad(in.grad->flat<float>().data(), inverse.flat<int64_t>().data(),
                                  in.n, in.row_splits, pooled ? in.batch : 0, in.combiner,
                                  num_unique, in.dim, summed->flat<float>().data(), &runner, &st);
    return ToTfStatus(code, st);
  }

  static Status SparseApply(OpKernelContext* ctx, const HeraldOptimizerParams& params,
                            float* storage, float* state, int64_t* versions, int64_t slots,
                            int64_t dim, const int64_t* unique_slots, int64_t u,
                            const float* grads) {
    HeraldRunner runner = CpuRunner(ctx);
    HeraldStatus st{};
    const int code = herald_cpu_sparse_apply(&params, storage, state, versions, slots, dim,
                                             unique_slots, u, grads, &runner, &st);
    return ToTfStatus(code, st);
  }

  static Status InitRows(OpKernelContext* /*ctx*/, const HeraldInitializerParams& params,
                         const int64_t* keys, int64_t n, int64_t dim, float* out) {
    HeraldStatus st{};
    const int code = herald_cpu_init_rows(&params, keys, n, dim, out, &st);
    return ToTfStatus(code, st);
  }

  static Status GatherRows(OpKernelContext* /*ctx*/, const float* storage, int64_t slots,
                           int64_t width, const int64_t* ids, int64_t n, float* out) {
    HeraldStatus st{};
    const int code = herald_cpu_gather_rows(storage, slots, width, ids, n, out, &st);
    return ToTfStatus(code, st);
  }

  static Status ScatterRows(OpKernelContext* /*ctx*/, float* storage, int64_t slots,
                            int64_t width, const int64_t* ids, int64_t n, const float* rows) {
    HeraldStatus st{};
    const int code = herald_cpu_scatter_rows(storage, slots, width, ids, n, rows, &st);
    return ToTfStatus(code, st);
  }

  static Status PrepareForUpdate(OpKernelContext* ctx, ::tensorflow::Var* var) {
    return herald::PrepareForUpdate(ctx, var);
  }
};

using ::tensorflow::DEVICE_CPU;

REGISTER_KERNEL_BUILDER(Name("Herald>Lookup").Device(DEVICE_CPU), LookupOp<CpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>LookupGrad").Device(DEVICE_CPU), LookupGradOp<CpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>SparseApply").Device(DEVICE_CPU),
                        SparseApplyOp<CpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>InitRows").Device(DEVICE_CPU), InitRowsOp<CpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>GatherRows").Device(DEVICE_CPU), GatherRowsOp<CpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>ScatterRows").Device(DEVICE_CPU),
                        ScatterRowsOp<CpuBackend>);

}  // namespace
}  // namespace herald
