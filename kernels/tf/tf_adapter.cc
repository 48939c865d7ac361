#include "kernels/tf/tf_adapter.h"

#include <string.h>

#include <string>

#include "tensorflow/core/framework/resource_handle.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/errors.h"

namespace herald {

using ::tensorflow::DataType;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
namespace errors = ::tensorflow::errors;

Status ToTfStatus(int code, const HeraldStatus& status) {
  switch (code) {
    case HERALD_OK:
      return ::tensorflow::OkStatus();
    case HERALD_INVALID_ARGUMENT:
      return errors::InvalidArgument(status.message);
    case HERALD_OUT_OF_RANGE:
      // TF reserves OutOfRange for end-of-sequence; a bad id is the caller's argument error.
      return errors::InvalidArgument(status.message);
    case HERALD_UNIMPLEMENTED:
      return errors::Unimplemented(status.message);
    default:
      return errors::Internal(status.message);
  }
}

namespace {

void ParallelForOnPool(void* context, int64_t n, int64_t cost_per_unit,
                       void (*fn)(void* fn_arg, int64_t begin, int64_t end), void* fn_arg) {
  auto* ctx = static_cast<OpKernelContext*>(context);
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor(n, cost_per_unit, [fn, fn_arg](int64_t begin, int64_t end) {
    fn(fn_arg, begin, end);
  });
}

}  // namespace

HeraldRunner CpuRunner(OpKernelContext* ctx) {
  HeraldRunner runner;
  runner.context = ctx;
  runner.parallel_for = &ParallelForOnPool;
  return runner;
}

int32_t CombinerFromName(const std::string& name) {
  if (name == "none") return HERALD_COMBINER_NONE;
  if (name == "mean") return HERALD_COMBINER_MEAN;
  if (name == "sqrtn") return HERALD_COMBINER_SQRTN;
  return HERALD_COMBINER_SUM;
}

Status LookupStorage(OpKernelContext* ctx, int index, DataType dtype, int rank,
                     ::tensorflow::core::RefCountPtr<::tensorflow::Var>* var) {
  TF_RETURN_IF_ERROR(::tensorflow::LookupResource(
      ctx, ::tensorflow::HandleFromInput(ctx, index), var));
  const ::tensorflow::Tensor& t = *(*var)->tensor();
  if (!(*var)->is_initialized) {
    return errors::FailedPrecondition("Expected an initialized storage variable at input ",
                                      index, ".");
  }
  if (t.dtype() != dtype || t.dims() != rank) {
    return errors::InvalidArgument("Expected storage input ", index, " to be a rank-", rank, " ",
                                   ::tensorflow::DataTypeString(dtype),
                                   " variable. Received: ", ::tensorflow::DataTypeString(t.dtype()),
                                   " of shape ", t.shape().DebugString());
  }
  return ::tensorflow::OkStatus();
}

Status PrepareForUpdate(OpKernelContext* ctx, ::tensorflow::Var* var) {
  ::tensorflow::Tensor* t = var->tensor();
  if (t->RefCountIsOne()) return ::tensorflow::OkStatus();
  ::tensorflow::Tensor copy;
  TF_RETURN_IF_ERROR(ctx->allocate_temp(t->dtype(), t->shape(), &copy));
  if (t->TotalBytes() > 0) {
    memcpy(copy.data(), t->data(), t->TotalBytes());
  }
  *t = copy;
  return ::tensorflow::OkStatus();
}

Status OptimizerParamsFromAttrs(::tensorflow::OpKernelConstruction* ctx,
                                HeraldOptimizerParams* params) {
  std::string name;
  TF_RETURN_IF_ERROR(ctx->GetAttr("optimizer", &name));
  params->kind = name == "adam" ? HERALD_OPT_ADAM
                                : (name == "adagrad" ? HERALD_OPT_ADAGRAD : HERALD_OPT_SGD);
  TF_RETURN_IF_ERROR(ctx->GetAttr("beta1", &params->beta1));
  TF_RETURN_IF_ERROR(ctx->GetAttr("beta2", &params->beta2));
  TF_RETURN_IF_ERROR(ctx->GetAttr("epsilon", &params->epsilon));
  params->initial_accumulator = 0.0f;  // only used when rows are created, not in an apply
  return ::tensorflow::OkStatus();
}

Status InitializerParamsFromAttrs(::tensorflow::OpKernelConstruction* ctx,
                                  HeraldInitializerParams* params, int64_t* dim) {
  std::string kind;
  int64_t seed = 0;
  TF_RETURN_IF_ERROR(ctx->GetAttr("dim", dim));
  TF_RETURN_IF_ERROR(ctx->GetAttr("seed", &seed));
  TF_RETURN_IF_ERROR(ctx->GetAttr("initializer", &kind));
  TF_RETURN_IF_ERROR(ctx->GetAttr("a", &params->a));
  TF_RETURN_IF_ERROR(ctx->GetAttr("b", &params->b));
  params->kind = kind == "normal" ? HERALD_INIT_NORMAL
                                  : (kind == "zeros" ? HERALD_INIT_ZEROS : HERALD_INIT_UNIFORM);
  params->seed = static_cast<uint64_t>(seed);  // the attr carries the uint64 seed's bits
  return ::tensorflow::OkStatus();
}

Status CheckSparseApplyShapes(int32_t kind, const ::tensorflow::Tensor& storage,
                              const ::tensorflow::Tensor& state,
                              const ::tensorflow::Tensor& versions,
                              const ::tensorflow::Tensor& grads, int64_t u,
                              const ::tensorflow::Tensor& learning_rate) {
  if (!::tensorflow::TensorShapeUtils::IsScalar(learning_rate.shape())) {
    return errors::InvalidArgument("Expected a scalar learning_rate. Received: shape ",
                                   learning_rate.shape().DebugString());
  }
  const int64_t slots = storage.dim_size(0), dim = storage.dim_size(1);
  const int64_t width = StateWidth(kind, dim);
  if (state.dim_size(0) != slots || state.dim_size(1) != width) {
    return errors::InvalidArgument("Expected optimizer state of shape [", slots, ",", width,
                                   "]. Received: ", state.shape().DebugString());
  }
  if (versions.dim_size(0) != slots) {
    return errors::InvalidArgument("Expected versions of shape [", slots,
                                   "]. Received: ", versions.shape().DebugString());
  }
  if (grads.dims() != 2 || grads.dim_size(0) != u || grads.dim_size(1) != dim) {
    return errors::InvalidArgument("Expected grads of shape [", u, ",", dim,
                                   "] (one row per slot, storage width). Received: ",
                                   grads.shape().DebugString());
  }
  return ::tensorflow::OkStatus();
}

Status CheckIdVector(const ::tensorflow::Tensor& t, const char* name) {
  if (t.dims() != 1) {
    return errors::InvalidArgument("Expected ", name, " to be a vector. Received: shape ",
                                   t.shape().DebugString());
  }
  return ::tensorflow::OkStatus();
}

}  // namespace herald
