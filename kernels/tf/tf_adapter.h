// The one place where herald's C ABI meets TensorFlow: status conversion, the intra-op thread
// pool as a HeraldRunner, and locked access to resource-variable storage.
#ifndef HERALD_KERNELS_TF_TF_ADAPTER_H_
#define HERALD_KERNELS_TF_TF_ADAPTER_H_

#include <string>

#include "kernels/core/c_api.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"

namespace herald {

// Converts a C ABI result into a TensorFlow status (the only conversion in the project).
::tensorflow::Status ToTfStatus(int code, const HeraldStatus& status);

// A HeraldRunner backed by the op's CPU worker threads. Lives as long as the OpKernelContext.
HeraldRunner CpuRunner(::tensorflow::OpKernelContext* ctx);

// Maps a combiner attribute ("none", "sum", "mean", "sqrtn") to HeraldCombiner.
int32_t CombinerFromName(const std::string& name);

// Looks up the resource variable at input `index`, checking it holds an initialized float32 or
// int64 matrix/vector; the caller must keep the returned reference and lock var->mu().
::tensorflow::Status LookupStorage(::tensorflow::OpKernelContext* ctx, int index,
                                   ::tensorflow::DataType dtype, int rank,
                                   ::tensorflow::core::RefCountPtr<::tensorflow::Var>* var);

// Before an in-place update: if another tensor still shares the variable's buffer (a pending
// read), give the variable a private copy so that reader keeps the value it read.
::tensorflow::Status PrepareForUpdate(::tensorflow::OpKernelContext* ctx, ::tensorflow::Var* var);

// Attributes of SparseApply (optimizer, beta1, beta2, epsilon) as C ABI parameters; the learning
// rate is an input of each step.
::tensorflow::Status OptimizerParamsFromAttrs(::tensorflow::OpKernelConstruction* ctx,
                                              HeraldOptimizerParams* params);

// Attributes of InitRows (dim, seed, initializer, a, b) as C ABI parameters.
::tensorflow::Status InitializerParamsFromAttrs(::tensorflow::OpKernelConstruction* ctx,
                                                HeraldInitializerParams* params, int64_t* dim);

// SparseApply's inputs agree: state (slots, StateWidth), versions (slots), grads (u, dim) and a
// scalar learning rate.
::tensorflow::Status CheckSparseApplyShapes(int32_t kind, const ::tensorflow::Tensor& storage,
                                            const ::tensorflow::Tensor& state,
                                            const ::tensorflow::Tensor& versions,
                                            const ::tensorflow::Tensor& grads, int64_t u,
                                            const ::tensorflow::Tensor& learning_rate);

// Checks that `t` is a vector of int64 ids and names it in the error.
::tensorflow::Status CheckIdVector(const ::tensorflow::Tensor& t, const char* name);

}  // namespace herald

#endif  // HERALD_KERNELS_TF_TF_ADAPTER_H_
