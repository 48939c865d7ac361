#include "kernels/tf/tf_adapter.h"

#include <string.h>

#include "tensorflow/core/framework/resource_handle.h"
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

Status CheckIdVector(const ::tensorflow::Tensor& t, const char* name) {
  if (t.dims() != 1) {
    return errors::InvalidArgument("Expected ", name, " to be a vector. Received: shape ",
                                   t.shape().DebugString());
  }
  return ::tensorflow::OkStatus();
}

}  // namespace herald
