// Host loops over rows scattered in a table, shared by the CPU kernels and the parameter server:
// a cache-line prefetch of a row, a row copy that bypasses the caches, and the sparse optimizer
// apply (herald::ApplyRow on each listed row).
// Listed rows jump around a table larger than the caches, which the hardware prefetcher does not
// follow; fetching a row kRowsAhead rows early cut a cold 53k-row SGD apply by ~35 % and Adam's
// by ~45 % on the 2-core development machine.
#ifndef HERALD_KERNELS_CORE_SCATTERED_ROWS_H_
#define HERALD_KERNELS_CORE_SCATTERED_ROWS_H_

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels/core/optimizer.h"
#include "kernels/core/platform.h"

namespace herald {

constexpr int64_t kRowsAhead = 8;

// Hints every cache line of row[0, width) into the cache (for writing when `write`).
HERALD_PREFETCH_HELPER void PrefetchRow(const float* row, int64_t width, bool write) {
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  for (int64_t j = 0; j < width; j += kLineFloats) {
    if (write) {
      __builtin_prefetch(row + j, 1);
    } else {
      __builtin_prefetch(row + j, 0);
    }
  }
}

// Outputs at least this large are written with StreamRow where they can be: they outgrow the
// caches before anyone reads them.
constexpr int64_t kStreamMinBytes = int64_t{4} << 20;

// Whether rows of `row_bytes` going into an output of `out_bytes` at `out` are written with
// StreamRow: the output is large, and every row starts and ends on a cache-line boundary (a
// partly written line would leave the write-combining buffer half full, which is slower than a
// plain store).
inline bool StreamsRows(const void* out, int64_t out_bytes, int64_t row_bytes) {
#if defined(__SSE2__)
  return out_bytes >= kStreamMinBytes && reinterpret_cast<uintptr_t>(out) % 64 == 0 &&
         row_bytes % 64 == 0;
#else
  (void)out;
  (void)out_bytes;
  (void)row_bytes;
  return false;
#endif
}

// Copies a row to memory that will not be read again soon (a pull's rows scattered over a large
// output, a PS's reply gathered for the socket) with non-temporal stores: whole lines go to
// memory without first being read into the cache, about half the memory traffic of memcpy there
// (a 53k-row scatter over 27 MB took 1.6 ms instead of 3.0 on the development machine, a gather
// 2.4 instead of 2.8). StreamsRows must hold; call StreamFence after the last row, before the
// rows are handed on.
inline void StreamRow(char* dst, const char* src, int64_t bytes) {
#if defined(__SSE2__)
  for (int64_t i = 0; i < bytes; i += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
  }
#else
  memcpy(dst, src, static_cast<size_t>(bytes));
#endif
}

// A row copy: StreamRow when `stream` (StreamsRows of the output), else memcpy.
inline void CopyRow(char* dst, const char* src, int64_t bytes, bool stream) {
  if (stream) {
    StreamRow(dst, src, bytes);
  } else {
    memcpy(dst, src, static_cast<size_t>(bytes));
  }
}

// Orders the StreamRow stores before any later store (another thread may read the rows next).
inline void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// Applies grads[k] (dim floats) to row rows[k] of values/state for k in [begin, end), each row's
// version + 1. Arguments are checked by the caller (CheckApplyArgs, rows in range and distinct,
// finite gradients); state has `width` floats per row (may be NULL when width == 0).
// `p` is taken by value: a local copy cannot alias the rows, so its fields stay in registers.
inline void ApplyRows(const HeraldOptimizerParams p, float* values, float* state,
                      int64_t* versions, int64_t dim, int64_t width, const int64_t* rows,
                      const float* grads, int64_t begin, int64_t end) {
  for (int64_t k = begin; k < end; ++k) {
    if (k + kRowsAhead < end) {
      const int64_t next = rows[k + kRowsAhead];
      PrefetchRow(values + next * dim, dim, true);
      if (width > 0) PrefetchRow(state + next * width, width, true);
      __builtin_prefetch(versions + next, 1);
    }
    const int64_t r = rows[k];
    ApplyRow(p, values + r * dim, width > 0 ? state + r * width : nullptr, versions[r],
             grads + k * dim, dim);
    versions[r] += 1;
  }
}

}  // namespace herald

#endif  // HERALD_KERNELS_CORE_SCATTERED_ROWS_H_
