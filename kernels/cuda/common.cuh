// Internals shared by herald's CUDA kernels: the checked-call macro, the temporary-memory block,
// the device error record and the check kernels that run before any write. Not part of the ABI.
#ifndef HERALD_KERNELS_CUDA_COMMON_CUH_
#define HERALD_KERNELS_CUDA_COMMON_CUH_

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/core/status.h"
#include "kernels/cuda/cuda_api.h"

// Checks a CUDA runtime call; on failure fills `status` with file:line and the CUDA error and
// returns HERALD_INTERNAL from the enclosing function.
#define HERALD_CUDA_CHECK(expr, status)                                                       \
  do {                                                                                        \
    const cudaError_t herald_err_ = (expr);                                                   \
    if (herald_err_ != cudaSuccess) {                                                         \
      return ::herald::SetStatus((status), HERALD_INTERNAL, "%s:%d: %s failed: %s (%s)",      \
                                 __FILE__, __LINE__, #expr, cudaGetErrorName(herald_err_),    \
                                 cudaGetErrorString(herald_err_));                            \
    }                                                                                         \
  } while (0)

// Checks a kernel launch (launch configuration and earlier asynchronous errors).
#define HERALD_CUDA_CHECK_LAUNCH(status) HERALD_CUDA_CHECK(cudaGetLastError(), status)

// Returns from the enclosing function when `expr` (a herald call) did not return HERALD_OK.
#define HERALD_RETURN_IF_ERROR(expr)        \
  do {                                      \
    const int herald_code_ = (expr);        \
    if (herald_code_ != HERALD_OK) return herald_code_; \
  } while (0)

namespace herald {
namespace cuda {

constexpr int kThreads = 256;
constexpr unsigned long long kNoError = ~0ULL;

inline unsigned int BlocksFor(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > 0x7fffffff) blocks = 0x7fffffff;
  return static_cast<unsigned int>(blocks);
}

// ---------------------------------------------------------------- device error record

__device__ __forceinline__ bool ErrorSet(const HeraldCudaError* error) {
  return *reinterpret_cast<const volatile unsigned long long*>(&error->key) != kNoError;
}

__device__ __forceinline__ void ReportError(HeraldCudaError* error, int64_t position, int check) {
  const unsigned long long key =
      (static_cast<unsigned long long>(position) << 8) | static_cast<unsigned long long>(check);
  atomicMin(&error->key, key);
}

// ---------------------------------------------------------------- temporary memory

// One temporary device block per call, carved into aligned arrays. Plan the arrays with Take()
// (pointers are offsets until Allocate()), then Allocate(); the destructor releases the block on
// the stream, after everything the call enqueued (stream order makes that safe).
class TempBlock {
 public:
  TempBlock(const HeraldCudaAllocator* allocator, cudaStream_t stream)
      : allocator_(allocator), stream_(stream) {}
  TempBlock(const TempBlock&) = delete;
  TempBlock& operator=(const TempBlock&) = delete;
  ~TempBlock() { Release(); }

  // Reserves `count` elements of T; returns the offset to pass to Get().
  template <typename T>
  size_t Take(size_t count) {
    const size_t offset = (bytes_ + 255) & ~static_cast<size_t>(255);
    bytes_ = offset + count * sizeof(T);
    return offset;
  }

  int Allocate(HeraldStatus* status) {
    if (bytes_ == 0) return HERALD_OK;
    if (allocator_ != nullptr) {
      base_ = allocator_->allocate(allocator_->context, bytes_, stream_);
      if (base_ == nullptr) {
        return SetStatus(status, HERALD_INTERNAL,
                         "%s:%d: the injected allocator returned no memory for %zu bytes",
                         __FILE__, __LINE__, bytes_);
      }
      return HERALD_OK;
    }
    HERALD_CUDA_CHECK(cudaMallocAsync(&base_, bytes_, stream_), status);
    return HERALD_OK;
  }

  template <typename T>
  T* Get(size_t offset) const {
    return reinterpret_cast<T*>(static_cast<char*>(base_) + offset);
  }

 private:
  void Release() {
    if (base_ == nullptr) return;
    if (allocator_ != nullptr) {
      allocator_->deallocate(allocator_->context, base_, bytes_, stream_);
    } else {
      cudaFreeAsync(base_, stream_);  // a failure here has nowhere to go; memory stays pooled
    }
    base_ = nullptr;
  }

  const HeraldCudaAllocator* allocator_;
  cudaStream_t stream_;
  size_t bytes_ = 0;
  void* base_ = nullptr;
};

// The error record a call uses: the caller's (asynchronous check) or one in the call's
// temporary block (synchronous check; Finish() then waits and converts it into a status).
class ErrorScope {
 public:
  ErrorScope(HeraldCudaError* caller, TempBlock* temp)
      : caller_(caller), offset_(caller ? 0 : temp->Take<HeraldCudaError>(1)) {}

  // Call after TempBlock::Allocate(): resets a temporary record.
  int Start(TempBlock* temp, cudaStream_t stream, HeraldStatus* status) {
    record_ = caller_ ? caller_ : temp->Get<HeraldCudaError>(offset_);
    if (caller_ == nullptr) {
      HERALD_CUDA_CHECK(cudaMemsetAsync(record_, 0xff, sizeof(HeraldCudaError), stream), status);
    }
    return HERALD_OK;
  }
  HeraldCudaError* record() const { return record_; }

  // Asynchronous: HERALD_OK. Synchronous: waits for the stream and reports the record.
  // `ids` (device, may be NULL): the array whose value at the offending position is quoted.
  int Finish(cudaStream_t stream, const int64_t* ids, const char* what, HeraldStatus* status);

 private:
  HeraldCudaError* caller_;
  size_t offset_;
  HeraldCudaError* record_ = nullptr;
};

// Converts an error key into a status (host). `value` is quoted when has_value.
int StatusFromErrorKey(unsigned long long key, bool has_value, int64_t value, const char* what,
                       HeraldStatus* status);

// ---------------------------------------------------------------- host argument checks

inline int CheckRowArgs(int64_t slots, int64_t width, int64_t n, HeraldStatus* status) {
  if (slots < 0 || width <= 0 || n < 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected slots >= 0, a row width > 0 and n >= 0. Received: slots=%lld, "
                     "width=%lld, n=%lld",
                     static_cast<long long>(slots), static_cast<long long>(width),
                     static_cast<long long>(n));
  }
  return SetOk(status);
}

inline int CheckLookupArgs(int64_t slots, int64_t dim, int64_t n, int64_t batch, int32_t combiner,
                           HeraldStatus* status) {
  if (slots < 0 || dim <= 0 || n < 0 || batch < 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected slots >= 0, dim > 0, n >= 0 and batch >= 0. Received: slots=%lld, "
                     "dim=%lld, n=%lld, batch=%lld",
                     static_cast<long long>(slots), static_cast<long long>(dim),
                     static_cast<long long>(n), static_cast<long long>(batch));
  }
  if (combiner < HERALD_COMBINER_NONE || combiner > HERALD_COMBINER_SQRTN) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected combiner in {0: none, 1: sum, 2: mean, 3: sqrtn}. Received: %d",
                     combiner);
  }
  return SetOk(status);
}

// Pooled bags: ragged (row_splits given) or dense (n == batch * ids_per_bag).
inline int CheckDenseBags(const int64_t* row_splits, int64_t n, int64_t batch,
                          int64_t* ids_per_bag, HeraldStatus* status) {
  *ids_per_bag = 0;
  if (row_splits != nullptr) return SetOk(status);
  if ((batch == 0 && n != 0) || (batch > 0 && n % batch != 0)) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected n to be a multiple of batch for dense bags (row_splits NULL). "
                     "Received: n=%lld, batch=%lld",
                     static_cast<long long>(n), static_cast<long long>(batch));
  }
  *ids_per_bag = batch > 0 ? n / batch : 0;
  return SetOk(status);
}

// ---------------------------------------------------------------- check launches

inline int64_t BitmapWords(int64_t slots) { return (slots + 31) / 32; }

// Range check of n ids (capped at *n_device when n_device != NULL; none when ids is NULL) against [0, limit),
// recording `check`; and, when row_splits != NULL, the row_splits check (batch + 1 entries:
// start at 0, non-decreasing, end at n; records the bag).
int EnqueueIdChecks(const int64_t* ids, int64_t n, const int64_t* n_device, int64_t limit,
                    int check,
                    const int64_t* row_splits, int64_t batch, HeraldCudaError* error,
                    cudaStream_t stream, HeraldStatus* status);

// Every id in [0, slots) appears once. `bitmap`: BitmapWords(slots) words of temporary memory
// (zeroed here). The id that finds its bit already set records (id, DUPLICATE): the key holds
// the *slot value*, so the smallest duplicated slot is reported, deterministically. Ids outside
// [0, slots) are skipped (the range check reports them).
int EnqueueDistinctCheck(const int64_t* ids, int64_t n, const int64_t* n_device, int64_t slots,
                         unsigned int* bitmap, HeraldCudaError* error, cudaStream_t stream,
                         HeraldStatus* status);

// values[0:count] finite (count capped at (*count_device) * row_width when count_device != NULL).
int EnqueueFiniteCheck(const float* values, int64_t count, const int64_t* count_device,
                       int64_t row_width, HeraldCudaError* error, cudaStream_t stream,
                       HeraldStatus* status);

// out[0:count] = value, unless the error record is set (then nothing is written).
int EnqueueFill(float* out, int64_t count, float value, const HeraldCudaError* error,
                cudaStream_t stream, HeraldStatus* status);

// *out = value (device int64), unless the error record is set.
int EnqueueSetInt64(int64_t* out, int64_t value, const HeraldCudaError* error,
                    cudaStream_t stream, HeraldStatus* status);

}  // namespace cuda
}  // namespace herald

#endif  // HERALD_KERNELS_CUDA_COMMON_CUH_
