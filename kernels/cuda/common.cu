// Error record, check kernels and the small ABI entry points of herald's CUDA core.
#include <math.h>

#include "kernels/cuda/common.cuh"

namespace herald {
namespace cuda {

int StatusFromErrorKey(unsigned long long key, bool has_value, int64_t value, const char* what,
                       HeraldStatus* status) {
  if (key == kNoError) return SetOk(status);
  const long long position = static_cast<long long>(key >> 8);
  const int check = static_cast<int>(key & 0xff);
  switch (check) {
    case HERALD_CUDA_CHECK_ID_RANGE:
      if (has_value) {
        return SetStatus(status, HERALD_OUT_OF_RANGE,
                         "Expected every %s in [0, slots). Received: %lld at position %lld", what,
                         static_cast<long long>(value), position);
      }
      return SetStatus(status, HERALD_OUT_OF_RANGE,
                       "Expected every %s in [0, slots). Received: an id out of range at "
                       "position %lld",
                       what, position);
    case HERALD_CUDA_CHECK_SPLITS:
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected row_splits to start at 0, never decrease and end at n. "
                       "Received: a violation at bag %lld",
                       position);
    case HERALD_CUDA_CHECK_DUPLICATE:
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected distinct %s (sum gradients first). Received: slot %lld more "
                       "than once",
                       what, position);
    case HERALD_CUDA_CHECK_NONFINITE:
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected finite gradients. Received: NaN or Inf at flat element %lld "
                       "(row = element / dim)",
                       position);
    case HERALD_CUDA_CHECK_INVERSE:
      return SetStatus(status, HERALD_OUT_OF_RANGE,
                       "Expected every inverse index in [0, num_unique). Received: %lld at "
                       "position %lld",
                       has_value ? static_cast<long long>(value) : -1LL, position);
    default:
      return SetStatus(status, HERALD_INTERNAL, "Unknown device check %d at position %lld",
                       check, position);
  }
}

int ErrorScope::Finish(cudaStream_t stream, const int64_t* ids, const char* what,
                       HeraldStatus* status) {
  if (caller_ != nullptr) return SetOk(status);
  unsigned long long key = kNoError;
  HERALD_CUDA_CHECK(cudaMemcpyAsync(&key, &record_->key, sizeof(key), cudaMemcpyDeviceToHost,
                                    stream),
                    status);
  HERALD_CUDA_CHECK(cudaStreamSynchronize(stream), status);
  const int check = static_cast<int>(key & 0xff);
  int64_t value = 0;
  const bool has_value = key != kNoError && ids != nullptr &&
                         (check == HERALD_CUDA_CHECK_ID_RANGE || check == HERALD_CUDA_CHECK_INVERSE);
  if (has_value) {
    HERALD_CUDA_CHECK(cudaMemcpy(&value, ids + (key >> 8), sizeof(value), cudaMemcpyDeviceToHost),
                      status);
  }
  return StatusFromErrorKey(key, has_value, value, what, status);
}

namespace {
__global__ void CheckRangeKernel(const int64_t* ids, int64_t n, const int64_t* n_device,
                                 int64_t limit, int check, HeraldCudaError* error) {
  if (n_device != nullptr && *n_device < n) n = *n_device;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t id = ids[i];
    if (id < 0 || id >= limit) ReportError(error, i, check);
  }
}
}  // namespace

namespace {
__global__ void CheckSplitsKernel(const int64_t* row_splits, int64_t batch, int64_t n,
                                  HeraldCudaError* error) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b <= batch;
       b += stride) {
    const int64_t v = row_splits[b];
    bool bad = false;
    if (b == 0) bad = v != 0;
    if (b == batch) bad = bad || v != n;
    if (b > 0) bad = bad || v < row_splits[b - 1];
    if (bad) ReportError(error, b, HERALD_CUDA_CHECK_SPLITS);
  }
}
}  // namespace

namespace {
__global__ void CheckDistinctKernel(const int64_t* ids, int64_t n, const int64_t* n_device,
                                    int64_t slots, unsigned int* bitmap, HeraldCudaError* error) {
  if (n_device != nullptr && *n_device < n) n = *n_device;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t id = ids[i];
    if (id < 0 || id >= slots) continue;
    const unsigned int bit = 1u << (id & 31);
    const unsigned int old = atomicOr(bitmap + (id >> 5), bit);
    if (old & bit) ReportError(error, id, HERALD_CUDA_CHECK_DUPLICATE);
  }
}
}  // namespace

namespace {
// One thread per 4 floats when aligned (the first non-finite component is reported).
template <int V>
__global__ void CheckFiniteKernel(const float* values, int64_t count, const int64_t* count_device,
                                  int64_t row_width, HeraldCudaError* error) {
  if (count_device != nullptr) {
    const int64_t limit = *count_device * row_width;
    if (limit < count) count = limit;
  }
  const int64_t count_v = count / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count_v;
       i += stride) {
    if (V == 4) {
      const float4 v = reinterpret_cast<const float4*>(values)[i];
      if (!(isfinite(v.x) && isfinite(v.y) && isfinite(v.z) && isfinite(v.w))) {
        const int first = !isfinite(v.x) ? 0 : !isfinite(v.y) ? 1 : !isfinite(v.z) ? 2 : 3;
        ReportError(error, 4 * i + first, HERALD_CUDA_CHECK_NONFINITE);
      }
    } else if (!isfinite(values[i])) {
      ReportError(error, i, HERALD_CUDA_CHECK_NONFINITE);
    }
  }
}
}  // namespace

namespace {
__global__ void FillKernel(float* out, int64_t count, float value, const HeraldCudaError* error) {
  if (error != nullptr && ErrorSet(error)) return;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += stride) {
    out[i] = value;
  }
}

__global__ void SetInt64Kernel(int64_t* out, int64_t value, const HeraldCudaError* error) {
  if (error != nullptr && ErrorSet(error)) return;
  *out = value;
}
}  // namespace

int EnqueueFill(float* out, int64_t count, float value, const HeraldCudaError* error,
                cudaStream_t stream, HeraldStatus* status) {
  if (count == 0) return HERALD_OK;
  FillKernel<<<BlocksFor(count, kThreads * 8), kThreads, 0, stream>>>(out, count, value, error);
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

int EnqueueSetInt64(int64_t* out, int64_t value, const HeraldCudaError* error,
                    cudaStream_t stream, HeraldStatus* status) {
  SetInt64Kernel<<<1, 1, 0, stream>>>(out, value, error);
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

int EnqueueDistinctCheck(const int64_t* ids, int64_t n, const int64_t* n_device, int64_t slots,
                         unsigned int* bitmap, HeraldCudaError* error, cudaStream_t stream,
                         HeraldStatus* status) {
  if (n == 0) return HERALD_OK;
  HERALD_CUDA_CHECK(cudaMemsetAsync(bitmap, 0, BitmapWords(slots) * sizeof(unsigned int), stream),
                    status);
  CheckDistinctKernel<<<BlocksFor(n, kThreads * 4), kThreads, 0, stream>>>(ids, n, n_device, slots,
                                                                          bitmap, error);
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

int EnqueueFiniteCheck(const float* values, int64_t count, const int64_t* count_device,
                       int64_t row_width, HeraldCudaError* error, cudaStream_t stream,
                       HeraldStatus* status) {
  if (count == 0) return HERALD_OK;
  if (row_width % 4 == 0 && count % 4 == 0 && (reinterpret_cast<uintptr_t>(values) & 15) == 0) {
    CheckFiniteKernel<4><<<BlocksFor(count / 4, kThreads * 4), kThreads, 0, stream>>>(
        values, count, count_device, row_width, error);
  } else {
    CheckFiniteKernel<1><<<BlocksFor(count, kThreads * 4), kThreads, 0, stream>>>(
        values, count, count_device, row_width, error);
  }
  HERALD_CUDA_CHECK_LAUNCH(status);
  return HERALD_OK;
}

int EnqueueIdChecks(const int64_t* ids, int64_t n, const int64_t* n_device, int64_t limit,
                    int check,
                    const int64_t* row_splits, int64_t batch, HeraldCudaError* error,
                    cudaStream_t stream, HeraldStatus* status) {
  if (n > 0 && ids != nullptr) {
    CheckRangeKernel<<<BlocksFor(n, kThreads * 4), kThreads, 0, stream>>>(ids, n, n_device, limit,
                                                                         check, error);
    HERALD_CUDA_CHECK_LAUNCH(status);
  }
  if (row_splits != nullptr) {
    CheckSplitsKernel<<<BlocksFor(batch + 1, kThreads * 4), kThreads, 0, stream>>>(
        row_splits, batch, n, error);
    HERALD_CUDA_CHECK_LAUNCH(status);
  }
  return HERALD_OK;
}

}  // namespace cuda
}  // namespace herald

using herald::SetOk;
using herald::SetStatus;

extern "C" {

int herald_cuda_api_version(void) { return HERALD_CUDA_API_VERSION; }

int herald_cuda_error_reset(HeraldCudaError* error, cudaStream_t stream, HeraldStatus* status) {
  if (error == nullptr) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected an error record. Received: NULL");
  }
  HERALD_CUDA_CHECK(cudaMemsetAsync(error, 0xff, sizeof(HeraldCudaError), stream), status);
  return SetOk(status);
}

int herald_cuda_error_read(const HeraldCudaError* error, cudaStream_t stream,
                           HeraldStatus* status) {
  if (error == nullptr) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected an error record. Received: NULL");
  }
  unsigned long long key = herald::cuda::kNoError;
  HERALD_CUDA_CHECK(
      cudaMemcpyAsync(&key, &error->key, sizeof(key), cudaMemcpyDeviceToHost, stream), status);
  HERALD_CUDA_CHECK(cudaStreamSynchronize(stream), status);
  return herald::cuda::StatusFromErrorKey(key, false, 0, "id", status);
}

}  // extern "C"
