// The GPU backend of the TF kernels (kernels/tf/op_kernels.h) over the CUDA C ABI of
// kernels/cuda/cuda_api.h: the op's stream, TF's allocator injected, the synchronous check mode
// (see tf_adapter_gpu.h). Compiled only when CUDA is present.
#include <stdint.h>

#include <limits>

#include "kernels/cuda/cuda_api.h"
#include "kernels/tf/op_kernels.h"
#include "kernels/tf/tf_adapter.h"
#include "kernels/tf/tf_adapter_gpu.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace herald {
namespace {

using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

struct GpuBackend {
  static Status Lookup(OpKernelContext* ctx, const float* storage, int64_t slots, int64_t dim,
                       const int64_t* ids, int64_t n, const int64_t* row_splits, int64_t batch,
                       int32_t combiner, float* out) {
    if (dim == 0) return Status();
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_lookup(storage, slots, dim, ids, n, row_splits, batch, combiner,
                                        out, GpuStream(ctx), allocator.get(), nullptr, &st);
    return ToTfStatus(code, st);
  }

  // Dedup + segment sum on the device (one sort); the output size (number of unique slots) is
  // read back to the host once, as every op with a data-dependent shape must.
  static Status LookupGrad(OpKernelContext* ctx, const LookupGradInputs& in) {
    Tensor unique, num, summed;
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({in.n}), &unique));
    TF_RETURN_IF_ERROR(ctx->allocate_temp(::tensorflow::DT_INT64, TensorShape({1}), &num));
    TF_RETURN_IF_ERROR(
        ctx->allocate_temp(::tensorflow::DT_FLOAT, TensorShape({in.n, in.dim}), &summed));
    const cudaStream_t stream = GpuStream(ctx);
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    // The op has no storage input: ids are checked against [0, 2^63 - 1).
    const int64_t any_slot = std::numeric_limits<int64_t>::max();
    int code;
    if (in.dim == 0) {
      code = herald_cuda_unique_slots(in.ids, in.n, any_slot, unique.flat<int64_t>().data(),
                                      nullptr, num.flat<int64_t>().data(), stream,
                                      allocator.get(), nullptr, &st);
    } else {
      code = herald_cuda_dedup_grad(in.ids, in.n, any_slot, in.grad->flat<float>().data(),
                                    in.row_splits, in.batch, in.combiner, in.dim,
                                    unique.flat<int64_t>().data(), nullptr,
                                    num.flat<int64_t>().data(), summed.flat<float>().data(),
                                    stream, allocator.get(), nullptr, &st);
    }
    TF_RETURN_IF_ERROR(ToTfStatus(code, st));
    int64_t num_unique = 0;
    TF_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(&num_unique, num.flat<int64_t>().data(),
                                                  sizeof(num_unique), cudaMemcpyDeviceToHost,
                                                  stream),
                                  "cudaMemcpyAsync (number of unique slots)"));
    TF_RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize"));
    Tensor* unique_out = nullptr;
    Tensor* summed_out = nullptr;
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({num_unique}), &unique_out));
    TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({num_unique, in.dim}), &summed_out));
    if (num_unique == 0) return Status();
    TF_RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(unique_out->flat<int64_t>().data(),
                                                  unique.flat<int64_t>().data(),
                                                  sizeof(int64_t) * num_unique,
                                                  cudaMemcpyDeviceToDevice, stream),
                                  "cudaMemcpyAsync (unique slots)"));
    if (in.dim == 0) return Status();
    return CudaStatus(cudaMemcpyAsync(summed_out->flat<float>().data(),
                                      summed.flat<float>().data(),
                                      sizeof(float) * num_unique * in.dim,
                                      cudaMemcpyDeviceToDevice, stream),
                      "cudaMemcpyAsync (summed gradients)");
  }

  static Status SparseApply(OpKernelContext* ctx, const HeraldOptimizerParams& params,
                            float* storage, float* state, int64_t* versions, int64_t slots,
                            int64_t dim, const int64_t* unique_slots, int64_t u,
                            const float* grads) {
    if (dim == 0) return Status();
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_sparse_apply(&params, storage, state, versions, slots, dim,
                                              unique_slots, u, nullptr, grads, GpuStream(ctx),
                                              allocator.get(), nullptr, &st);
    return ToTfStatus(code, st);
  }

  static Status InitRows(OpKernelContext* ctx, const HeraldInitializerParams& params,
                         const int64_t* keys, int64_t n, int64_t dim, float* out) {
    HeraldStatus st{};
    const int code = herald_cuda_init_rows(&params, keys, n, dim, out, GpuStream(ctx), &st);
    return ToTfStatus(code, st);
  }

  static Status GatherRows(OpKernelContext* ctx, const float* storage, int64_t slots,
                           int64_t width, const int64_t* ids, int64_t n, float* out) {
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_gather_rows(storage, slots, width, ids, n, out, GpuStream(ctx),
                                             allocator.get(), nullptr, &st);
    return ToTfStatus(code, st);
  }

  static Status ScatterRows(OpKernelContext* ctx, float* storage, int64_t slots, int64_t width,
                            const int64_t* ids, int64_t n, const float* rows) {
    TfCudaAllocator allocator(ctx);
    HeraldStatus st{};
    const int code = herald_cuda_scatter_rows(storage, slots, width, ids, n, rows,
                                              GpuStream(ctx), allocator.get(), nullptr, &st);
    return ToTfStatus(code, st);
  }

  static Status PrepareForUpdate(OpKernelContext* ctx, ::tensorflow::Var* var) {
    return PrepareForUpdateGpu(ctx, var);
  }
};

using ::tensorflow::DEVICE_GPU;

REGISTER_KERNEL_BUILDER(Name("Herald>Lookup").Device(DEVICE_GPU), LookupOp<GpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>LookupGrad").Device(DEVICE_GPU), LookupGradOp<GpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>SparseApply").Device(DEVICE_GPU).HostMemory("learning_rate"),
                        SparseApplyOp<GpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>InitRows").Device(DEVICE_GPU), InitRowsOp<GpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>GatherRows").Device(DEVICE_GPU), GatherRowsOp<GpuBackend>);
REGISTER_KERNEL_BUILDER(Name("Herald>ScatterRows").Device(DEVICE_GPU),
                        ScatterRowsOp<GpuBackend>);

}  // namespace
}  // namespace herald
