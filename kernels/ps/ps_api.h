// C ABI of the parameter server's native pieces (framework-free, no TensorFlow, no global state).
// Used by herald_tf/ps/_native.py through ctypes, from a PS process or from a worker that serves
// rows itself (DESIGN §3). Every function validates before it changes anything, returns a
// HeraldStatusCode and fills `status`; no C++ exception crosses this boundary.
//
// HeraldKeyIndex maps int64 keys (any value, unbounded) to dense row indices 0, 1, 2, ... in
// order of first insertion. It never forgets a key, so row r stays the row of the same key for
// the index's life, and keys can be exported in row order (checkpoints). A handle is not
// thread-safe: the caller serialises calls on one handle (the PS holds its shard lock).
#ifndef HERALD_KERNELS_PS_PS_API_H_
#define HERALD_KERNELS_PS_PS_API_H_

#include <stdint.h>

#include "kernels/core/optimizer.h"
#include "kernels/core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

// Version of this ABI; bump on any incompatible change. Checked by herald_tf/ps/_native.py.
#define HERALD_PS_API_VERSION 5
int herald_ps_api_version(void);

typedef struct HeraldKeyIndex HeraldKeyIndex;  // opaque

// Creates an empty index sized for about `capacity_hint` keys (it grows as needed).
// On success *out holds a handle to release with herald_ps_key_index_destroy.
int herald_ps_key_index_create(int64_t capacity_hint, HeraldKeyIndex** out, HeraldStatus* status);

// Releases the index; NULL is a no-op.
void herald_ps_key_index_destroy(HeraldKeyIndex* index);

// Number of keys (= rows) held.
int64_t herald_ps_key_index_size(const HeraldKeyIndex* index);

// rows[i] = row of keys[i], or -1 when the key is absent. Changes nothing.
int herald_ps_key_index_lookup(const HeraldKeyIndex* index, const int64_t* keys /* (n) */,
                               int64_t n, int64_t* rows /* (n) */, HeraldStatus* status);

// As herald_ps_key_index_lookup, and checks the keys distinct in the same pass: *first_duplicate
// = position of the first key that repeats an earlier one (-1: all distinct), *first_index = that
// earlier position (as herald_ps_find_duplicate). Changes nothing.
int herald_ps_key_index_lookup_distinct(const HeraldKeyIndex* index,
                                        const int64_t* keys /* (n) */, int64_t n,
                                        int64_t* rows /* (n) */, int64_t* first_duplicate,
                                        int64_t* first_index, HeraldStatus* status);

// rows[i] = row of keys[i]; keys not yet present get the next rows (size, size + 1, ...) in order
// of first appearance in `keys`. is_new[i] = 1 exactly at the first appearance of a newly
// inserted key, else 0; *num_new = number of keys inserted. Storage for all of them is reserved
// before the first insert, so on failure (out of memory) the index is unchanged.
int herald_ps_key_index_lookup_or_insert(HeraldKeyIndex* index, const int64_t* keys /* (n) */,
                                         int64_t n, int64_t* rows /* (n) */,
                                         uint8_t* is_new /* (n) */, int64_t* num_new,
                                         HeraldStatus* status);

// out[r] = key of row r for r < size (out has room for `capacity` keys; capacity >= size).
int herald_ps_key_index_export(const HeraldKeyIndex* index, int64_t* out /* (capacity) */,
                               int64_t capacity, HeraldStatus* status);

// Position of the first key that appears twice in keys[0:n], or -1 when all are distinct.
// Written to *first_duplicate; *first_index gets the earlier position of that key.
int herald_ps_find_duplicate(const int64_t* keys /* (n) */, int64_t n, int64_t* first_duplicate,
                             int64_t* first_index, HeraldStatus* status);

// Position of the first non-finite value (NaN or +-Inf) in values[0:n], or -1 when all are
// finite, written to *first_bad. A bit test per value, no allocation.
int herald_ps_find_non_finite(const float* values /* (n) */, int64_t n, int64_t* first_bad,
                              HeraldStatus* status);

// Applies grads[k] to row rows[k] with herald::ApplyRow (versions[rows[k]] += 1), for gradients
// the PS validated on arrival: rows must be distinct and gradients finite (not re-checked here;
// herald_cpu_sparse_apply is the checking variant). Rows are range-checked before any change.
int herald_ps_apply_rows(const HeraldOptimizerParams* params, float* values /* (num_rows, dim) */,
                         float* state /* (num_rows, StateWidth) or NULL for SGD */,
                         int64_t* versions /* (num_rows) */, int64_t num_rows, int64_t dim,
                         const int64_t* rows /* (n) */, int64_t n,
                         const float* grads /* (n, dim) */, HeraldStatus* status);

// Client-side row movement of the transport (kernels/ps/shard_rows.cc).

// Stable partition of keys by shard: shard(key) = Mix64(uint64(key) ^ 0x5348415244484552) mod
// num_shards (herald_tf/ps/sharding.py). order[offsets[s]:offsets[s + 1]] = positions of shard s's
// keys, increasing.
int herald_ps_partition(const int64_t* keys /* (n) */, int64_t n, int64_t num_shards,
                        int64_t* order /* (n) */, int64_t* offsets /* (num_shards + 1) */,
                        HeraldStatus* status);

// out[k] = src[positions[k]] (rows of `width` floats) and *first_bad = flat index in `out` of the
// first NaN/Inf, or -1: the gather and the finite check of a push in one pass over the rows.
int herald_ps_gather_rows_checked(const float* src /* (src_rows, width) */, int64_t src_rows,
                                  int64_t width, const int64_t* positions /* (n) */, int64_t n,
                                  float* out /* (n, width) */, int64_t* first_bad,
                                  HeraldStatus* status);

// Receives n rows of `row_bytes` from socket `fd` into out[positions[k]], through a cache-sized
// staging buffer, so a pull reply lands in request order; reads nothing past the rows. Waits up
// to timeout_ms (< 0: no limit) for each piece of data. I/O outcome in *io_error: 0 all received, -1 the peer closed,
// ETIMEDOUT, or the errno of a failed call (the connection is then unusable). Positions are
// range-checked before anything is read.
int herald_ps_recv_rows(int fd, char* out /* (out_rows, row_bytes) */, int64_t out_rows,
                        int64_t row_bytes, const int64_t* positions /* (n) */, int64_t n,
                        int64_t timeout_ms, int* io_error, HeraldStatus* status);

// Receives n floats from socket `fd` into out[0:n], checking each piece for NaN/Inf while it is
// cache-warm: *first_bad = index of the first non-finite value, or -1. Waits and reports I/O as
// herald_ps_recv_rows.
int herald_ps_recv_floats_checked(int fd, float* out /* (n) */, int64_t n, int64_t timeout_ms,
                                  int64_t* first_bad, int* io_error, HeraldStatus* status);

// Sends rows src[positions[0]], src[positions[1]], ... (each `row_bytes`) to socket `fd`, gathered
// through a cache-sized staging buffer: a push's gradients leave in the shard's key order without
// a gathered copy in memory. Waits up to timeout_ms (< 0: no limit) whenever the socket is full.
// I/O outcome in *io_error as herald_ps_recv_rows (the connection is unusable after an error).
// Positions are range-checked before anything is sent.
int herald_ps_send_rows(int fd, const char* src /* (src_rows, row_bytes) */, int64_t src_rows,
                        int64_t row_bytes, const int64_t* positions /* (n) */, int64_t n,
                        int64_t timeout_ms, int* io_error, HeraldStatus* status);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HERALD_KERNELS_PS_PS_API_H_
