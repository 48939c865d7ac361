// The C ABI of herald's framework-free kernels (no TensorFlow types). The CPU implementation lives
// in kernels/cpu/, the CUDA one in kernels/cuda/ (cuda_api.h, same semantics, explicit stream).
// Every function validates its inputs before touching an output, returns a HeraldStatusCode and
// fills `status`; on failure no output or storage has been modified.
//
// Conventions: storage is row-major (slots, width) float32; ids are int64; `row_splits` has
// batch + 1 non-decreasing entries starting at 0 and ending at n (bag b is ids[splits[b]:splits[b+1]]).
#ifndef HERALD_KERNELS_CORE_C_API_H_
#define HERALD_KERNELS_CORE_C_API_H_

#include <stdint.h>

#include "kernels/core/initializer.h"
#include "kernels/core/optimizer.h"
#include "kernels/core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// Fixed integer values, mirrored by herald_tf._core.Combiner.
typedef enum {
  HERALD_COMBINER_NONE = 0,   // no pooling: one output row per id
  HERALD_COMBINER_SUM = 1,
  HERALD_COMBINER_MEAN = 2,   // empty bag -> zeros
  HERALD_COMBINER_SQRTN = 3,  // sum / sqrt(bag length); empty bag -> zeros
} HeraldCombiner;

// Optional parallel-for supplied by the caller (TensorFlow's intra-op pool in the TF adapters).
// parallel_for must call fn(fn_arg, begin, end) over disjoint ranges covering [0, n) and return
// when all calls have finished. Functions taking `const HeraldRunner*` run serially when it is NULL.
typedef struct {
  void* context;
  void (*parallel_for)(void* context, int64_t n, int64_t cost_per_unit,
                       void (*fn)(void* fn_arg, int64_t begin, int64_t end), void* fn_arg);
} HeraldRunner;

// Version of this ABI; bump on any incompatible change. Checked by the Python loader.
#define HERALD_C_API_VERSION 2
int herald_c_api_version(void);
// 1 when this library was built with the CUDA kernels, else 0.
int herald_cuda_built(void);

// Lookup with pooling: SUM adds the rows of a bag in id order, MEAN and SQRTN multiply that sum
// by 1/len and 1/sqrt(len). out: (batch, dim) for SUM/MEAN/SQRTN, (n, dim) for NONE (row_splits unused).
int herald_cpu_lookup(const float* storage /* (slots, dim) */, int64_t slots, int64_t dim,
                      const int64_t* slot_ids /* (n) */, int64_t n,
                      const int64_t* row_splits /* (batch + 1) */, int64_t batch,
                      int32_t combiner, float* out, const HeraldRunner* runner,
                      HeraldStatus* status);

// Dedup of ids in order of first appearance: unique[0:*num_unique] and inverse (n) with
// slot_ids[i] == unique[inverse[i]]. Ids must lie in [0, slots).
int herald_cpu_unique_slots(const int64_t* slot_ids /* (n) */, int64_t n, int64_t slots,
                            int64_t* unique /* (n) */, int64_t* inverse /* (n) */,
                            int64_t* num_unique, HeraldStatus* status);

// Gradient of herald_cpu_lookup: summed[u] = sum over ids i with inverse[i] == u of
// weight(i) * grad_out[bag(i)] (weight 1, 1/len or 1/sqrt(len) by combiner), accumulated in id
// order (deterministic). grad_out: (batch, dim), or (n, dim) for NONE.
int herald_cpu_lookup_grad(const float* grad_out, const int64_t* inverse /* (n) */, int64_t n,
                           const int64_t* row_splits /* (batch + 1) */, int64_t batch,
                           int32_t combiner, int64_t num_unique, int64_t dim,
                           float* summed /* (num_unique, dim) */, const HeraldRunner* runner,
                           HeraldStatus* status);

// summed[inverse[i]] += rows[i] for i = 0, 1, ..., n - 1 in that order (summed is not zeroed
// first): called once per array on a zeroed output, the sum herald_cpu_lookup_grad makes, bit
// for bit, over several arrays of rows (the PS adds up the ranks' pushes of a step this way).
int herald_cpu_add_rows_by_index(const float* rows /* (n, dim) */, const int64_t* inverse /* (n) */,
                                 int64_t n, int64_t num_unique, int64_t dim,
                                 float* summed /* (num_unique, dim) */, HeraldStatus* status);

// Sparse optimizer apply: for each u, row unique_slots[u] gets grads[u] and its version += 1.
// unique_slots must be distinct and in range; grads must be finite (else INVALID_ARGUMENT and
// nothing is changed). state: (slots, StateWidth(kind, dim)), may be NULL for SGD.
int herald_cpu_sparse_apply(const HeraldOptimizerParams* params,
                            float* storage /* (slots, dim) */, float* state,
                            int64_t* versions /* (slots) */, int64_t slots, int64_t dim,
                            const int64_t* unique_slots /* (u) */, int64_t u,
                            const float* grads /* (u, dim) */, const HeraldRunner* runner,
                            HeraldStatus* status);

// Initial rows for keys: out[i] = InitialValue(params, keys[i], 0..dim-1).
int herald_cpu_init_rows(const HeraldInitializerParams* params, const int64_t* keys /* (n) */,
                         int64_t n, int64_t dim, float* out /* (n, dim) */, HeraldStatus* status);

// Initial optimizer state of n new rows.
int herald_cpu_init_state(const HeraldOptimizerParams* params, int64_t n, int64_t dim,
                          float* state /* (n, StateWidth(kind, dim)) */, HeraldStatus* status);

// out[i] = storage[slot_ids[i]] (rows to push or flush).
int herald_cpu_gather_rows(const float* storage /* (slots, width) */, int64_t slots,
                           int64_t width, const int64_t* slot_ids /* (n) */, int64_t n,
                           float* out /* (n, width) */, HeraldStatus* status);

// storage[slot_ids[i]] = rows[i] (pulled rows into the cache). Ids must be distinct.
int herald_cpu_scatter_rows(float* storage /* (slots, width) */, int64_t slots, int64_t width,
                            const int64_t* slot_ids /* (n) */, int64_t n,
                            const float* rows /* (n, width) */, HeraldStatus* status);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HERALD_KERNELS_CORE_C_API_H_
