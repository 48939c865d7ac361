// The CUDA C ABI of herald's framework-free kernels: the same semantics as kernels/core/c_api.h
// (the CPU ABI), on device pointers, with an explicit stream. No TensorFlow header is included;
// the TF GPU adapters in kernels/tf/ and the ctypes harness in benchmarks/gpu/ call these.
//
// Conventions
// - Every pointer named in a shape comment is a *device* pointer, row-major; ids are int64.
// - Every call enqueues its work on `stream` and never throws. A call returns a HeraldStatusCode
//   and fills `status` (which may be NULL). Argument errors that the host can see (negative
//   sizes, unknown kinds, NULL pointers) are returned before anything is enqueued.
// - Temporary device memory comes from `allocator` (HeraldCudaAllocator below); NULL means
//   cudaMallocAsync/cudaFreeAsync on `stream` (the device's default memory pool). Each call
//   takes at most one temporary block, released (stream-ordered) before the call returns.
//
// Validation of data on the device (ids in range, row_splits well formed, distinct slots,
// finite gradients) runs as a check kernel *before* any kernel that writes an output or storage.
// The check kernel records the first offending position in a HeraldCudaError; every writing
// kernel reads that record first and writes nothing when it is set. So storage, optimizer state
// and versions are never modified by a call whose inputs are invalid, with or without a host sync.
// How the error reaches the caller depends on `error`:
// - error == NULL ("synchronous check"): the call uses a temporary record, waits for `stream`
//   (cudaStreamSynchronize) and returns HERALD_OUT_OF_RANGE / HERALD_INVALID_ARGUMENT with a
//   message naming the position and the value. No output has been written on failure, except
//   by herald_cuda_dedup_apply, which checks gradients finite as it sums them: its scratch
//   outputs (unique, num_unique, summed) may then be written; storage, state and versions not.
// - error != NULL ("asynchronous check"): a caller-owned device record (1 element), reset with
//   herald_cuda_error_reset. The call does not synchronize and returns HERALD_OK once enqueued;
//   the record is sticky: once set, every later call on the same stream that is given it writes
//   nothing. Read it with herald_cuda_error_read (which synchronizes). Later calls' checks still
//   run and the record keeps the smallest position found since the reset, so the position it
//   names may be a later call's: to know which call failed, read it before enqueuing the next.
#ifndef HERALD_KERNELS_CUDA_CUDA_API_H_
#define HERALD_KERNELS_CUDA_CUDA_API_H_

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/core/c_api.h"

#ifdef __cplusplus
extern "C" {
#endif

// Version of this ABI; bump on any incompatible change.
#define HERALD_CUDA_API_VERSION 1
int herald_cuda_api_version(void);

// Stream-ordered device memory. `allocate` returns NULL on failure; memory may be used by work
// enqueued on `stream` after the call and is released with `deallocate` on the same stream after
// the last work that uses it has been enqueued (so a pool must be stream-ordered, as TF's GPU
// allocator and cudaMallocAsync are).
typedef struct {
  void* (*allocate)(void* context, size_t bytes, cudaStream_t stream);
  void (*deallocate)(void* context, void* ptr, size_t bytes, cudaStream_t stream);
  void* context;  // passed back unchanged
} HeraldCudaAllocator;

// What a device-side check found (fixed integer values).
typedef enum {
  HERALD_CUDA_CHECK_OK = 0,
  HERALD_CUDA_CHECK_ID_RANGE = 1,     // an id outside [0, slots)   -> HERALD_OUT_OF_RANGE
  HERALD_CUDA_CHECK_SPLITS = 2,       // row_splits not 0..n non-decreasing -> INVALID_ARGUMENT
  HERALD_CUDA_CHECK_DUPLICATE = 3,    // a slot repeated where distinct slots are required
  HERALD_CUDA_CHECK_NONFINITE = 4,    // a NaN or Inf gradient element
  HERALD_CUDA_CHECK_INVERSE = 5,      // an inverse index outside [0, num_unique)
} HeraldCudaCheck;

// The device-side error record: `key` is ULLONG_MAX when no error was seen, else
// (position << 8) | HeraldCudaCheck of the smallest offending position (deterministic).
// For row_splits errors the position is the bag; for gradients, the element index; for
// duplicates, the duplicated slot value (the smallest one).
typedef struct {
  unsigned long long key;
} HeraldCudaError;

// Sets `error` (device, 1) to "no error", on `stream`.
int herald_cuda_error_reset(HeraldCudaError* error, cudaStream_t stream, HeraldStatus* status);

// Waits for `stream`, reads `error` (device, 1) and converts it into the returned status.
int herald_cuda_error_read(const HeraldCudaError* error, cudaStream_t stream,
                           HeraldStatus* status);

// Lookup with pooling. out: (batch, dim) for SUM/MEAN/SQRTN, (n, dim) for NONE.
// row_splits: (batch + 1) ragged bags; or NULL for dense [batch, n / batch] bags (n must then be
// a multiple of batch). Summation inside a bag is in id order; MEAN/SQRTN multiply the sum by
// 1/len or 1/sqrt(len) (empty bag -> zeros), as the CPU kernel does.
int herald_cuda_lookup(const float* storage /* (slots, dim) */, int64_t slots, int64_t dim,
                       const int64_t* slot_ids /* (n) */, int64_t n,
                       const int64_t* row_splits /* (batch + 1) or NULL */, int64_t batch,
                       int32_t combiner, float* out /* (batch | n, dim) */, cudaStream_t stream,
                       const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                       HeraldStatus* status);

// Dedup in order of first appearance (the CPU kernel's order): unique[0:*num_unique] and
// inverse with slot_ids[i] == unique[inverse[i]]. num_unique is a *device* int64 (1), so the
// call needs no host sync; entries of unique past *num_unique are left as they were.
// Sort-based: a stable radix sort of (id, position), then runs ranked by first position.
int herald_cuda_unique_slots(const int64_t* slot_ids /* (n) */, int64_t n, int64_t slots,
                             int64_t* unique /* (n) */, int64_t* inverse /* (n) */,
                             int64_t* num_unique /* (1) */, cudaStream_t stream,
                             const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                             HeraldStatus* status);

// Gradient of herald_cuda_lookup from `inverse` (as herald_cpu_lookup_grad): summed[u] = sum over
// ids i with inverse[i] == u of weight(i) * grad_out[bag(i)]. grad_out: (batch, dim), or (n, dim)
// for NONE. Deterministic: a row with at most 64 ids is summed in id order (as the CPU does);
// a longer row in id order within fixed chunks of 64 sorted ids, the chunk partial sums then in
// chunk order (groups of 32 chunks first for very long rows). The result is bitwise identical
// from run to run (not always to the CPU's purely sequential order for rows of > 64 ids).
// num_unique is a host value here (the row count of `summed`).
int herald_cuda_lookup_grad(const float* grad_out, const int64_t* inverse /* (n) */, int64_t n,
                            const int64_t* row_splits /* (batch + 1) or NULL */, int64_t batch,
                            int32_t combiner, int64_t num_unique, int64_t dim,
                            float* summed /* (num_unique, dim) */, cudaStream_t stream,
                            const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                            HeraldStatus* status);

// Fused dedup + gradient: herald_cuda_unique_slots followed by herald_cuda_lookup_grad with one
// sort. unique/inverse/num_unique as in herald_cuda_unique_slots (inverse may be NULL);
// summed: rows [0, *num_unique) are written. Same summation order as herald_cuda_lookup_grad.
int herald_cuda_dedup_grad(const int64_t* slot_ids /* (n) */, int64_t n, int64_t slots,
                           const float* grad_out /* (batch | n, dim) */,
                           const int64_t* row_splits /* (batch + 1) or NULL */, int64_t batch,
                           int32_t combiner, int64_t dim, int64_t* unique /* (n) */,
                           int64_t* inverse /* (n) or NULL */, int64_t* num_unique /* (1) */,
                           float* summed /* (n, dim) */, cudaStream_t stream,
                           const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                           HeraldStatus* status);

// Sparse optimizer apply (herald::ApplyElement from kernels/core/optimizer.h, the CPU's math):
// for each k < u, row unique_slots[k] gets grads[k] and its version += 1. unique_slots must be
// distinct and in range and grads finite; checked on the device before any write.
// u_device: NULL, or a device int64 (1) holding the number of rows to apply (<= u), e.g.
// herald_cuda_dedup_grad's num_unique; then u is the capacity of unique_slots/grads.
// state: (slots, StateWidth(kind, dim)), may be NULL for SGD. Distinctness uses a bitmap of
// slots / 8 bytes of temporary memory.
int herald_cuda_sparse_apply(const HeraldOptimizerParams* params,
                             float* storage /* (slots, dim) */, float* state,
                             int64_t* versions /* (slots) */, int64_t slots, int64_t dim,
                             const int64_t* unique_slots /* (u) */, int64_t u,
                             const int64_t* u_device /* (1) or NULL */,
                             const float* grads /* (u, dim) */, cudaStream_t stream,
                             const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                             HeraldStatus* status);

// Fused gradient + optimizer apply for rows this process owns (Herald's private rows):
// herald_cuda_dedup_grad followed by the apply of the summed rows to the unique rows, as
// herald_cuda_sparse_apply would do, in one call with no host sync in between. unique and
// num_unique are written as by herald_cuda_dedup_grad; summed is the workspace of the apply:
// it holds the sums of the rows with several ids, while a row with a single id is applied
// straight from its grad_out row (the same float operations, so the result is bitwise that of
// dedup_grad + sparse_apply) and its summed row is not written: most rows of a large batch, whose
// sums would otherwise be written and read back. Every row's gradient is checked for NaN/Inf as
// it is computed (a non-finite one -> INVALID_ARGUMENT naming the flat element of `summed`);
// then storage, state and versions are unchanged. Saves sparse_apply's separate checks (a full
// read of the gradients, a slots/8-byte bitmap): unique rows are distinct and in range by
// construction.
int herald_cuda_dedup_apply(const HeraldOptimizerParams* params,
                            float* storage /* (slots, dim) */, float* state,
                            int64_t* versions /* (slots) */, int64_t slots, int64_t dim,
                            const int64_t* slot_ids /* (n) */, int64_t n,
                            const float* grad_out /* (batch | n, dim) */,
                            const int64_t* row_splits /* (batch + 1) or NULL */, int64_t batch,
                            int32_t combiner, int64_t* unique /* (n) */,
                            int64_t* num_unique /* (1) */, float* summed /* (n, dim) */,
                            cudaStream_t stream, const HeraldCudaAllocator* allocator,
                            HeraldCudaError* error, HeraldStatus* status);

// Initial rows for keys: out[i][j] = herald::InitialValue(params, keys[i], j).
int herald_cuda_init_rows(const HeraldInitializerParams* params, const int64_t* keys /* (n) */,
                          int64_t n, int64_t dim, float* out /* (n, dim) */, cudaStream_t stream,
                          HeraldStatus* status);

// Initial optimizer state of n new rows.
int herald_cuda_init_state(const HeraldOptimizerParams* params, int64_t n, int64_t dim,
                           float* state /* (n, StateWidth(kind, dim)) */, cudaStream_t stream,
                           HeraldStatus* status);

// out[i] = storage[slot_ids[i]] (rows to push or flush).
int herald_cuda_gather_rows(const float* storage /* (slots, width) */, int64_t slots,
                            int64_t width, const int64_t* slot_ids /* (n) */, int64_t n,
                            float* out /* (n, width) */, cudaStream_t stream,
                            const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                            HeraldStatus* status);

// storage[slot_ids[i]] = rows[i] (pulled rows into the cache). Ids must be distinct and in
// range (checked on the device first; slots / 8 bytes of temporary bitmap).
int herald_cuda_scatter_rows(float* storage /* (slots, width) */, int64_t slots, int64_t width,
                             const int64_t* slot_ids /* (n) */, int64_t n,
                             const float* rows /* (n, width) */, cudaStream_t stream,
                             const HeraldCudaAllocator* allocator, HeraldCudaError* error,
                             HeraldStatus* status);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HERALD_KERNELS_CUDA_CUDA_API_H_
