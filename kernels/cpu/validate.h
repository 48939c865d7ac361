// Input checks shared by the CPU kernels; each returns HERALD_OK or fills `status`.
#ifndef HERALD_KERNELS_CPU_VALIDATE_H_
#define HERALD_KERNELS_CPU_VALIDATE_H_

#include <stdint.h>
#include <string.h>

#include "kernels/core/c_api.h"

namespace herald {

// Every id in [0, slots); names the first offending position.
int CheckIdsInRange(const int64_t* ids, int64_t n, int64_t slots, const char* what,
                    HeraldStatus* status);

// row_splits has batch + 1 entries, starts at 0, never decreases and ends at n.
int CheckRowSplits(const int64_t* row_splits, int64_t batch, int64_t n, HeraldStatus* status);

// True for NaN and ±Inf: an all-ones exponent.
inline bool IsNonFinite(float v) {
  uint32_t bits;
  memcpy(&bits, &v, sizeof(bits));
  return (bits & 0x7f800000u) == 0x7f800000u;
}

// Position of the first NaN/Inf in values[0, n), or -1. Scans at memory speed (about 3x a
// per-value test; AVX2 where the CPU has it), so a receiver can check data while it is cached.
int64_t FindNonFinite(const float* values, int64_t n);

// Every value finite; names the first offending position.
int CheckFinite(const float* values, int64_t count, const char* what, HeraldStatus* status);

int CheckCombiner(int32_t combiner, HeraldStatus* status);

// Scale of every id of a bag of `length` ids under `combiner` (1, 1/len or 1/sqrt(len)).
float BagScale(int32_t combiner, int64_t length);

}  // namespace herald

#endif  // HERALD_KERNELS_CPU_VALIDATE_H_
