// Deterministic row initializer: element j of the row for `key` is a pure function of
// (seed, key, j), so a row created on any PS shard, any worker or the single-process reference is
// the same, and stock TensorFlow (uint64 xor/shift/multiply, int->float casts) recomputes it for
// serving (herald_tf/keras/export.py mirrors these exact steps).
//
//   Mix(x)         = splitmix64 finaliser of x
//   Bits(s, k, c)  = Mix(Mix(k ^ Mix(s)) ^ ((c + 1) * 0x9E3779B97F4A7C15))
//   Unit(h)        = (h >> 40) * 2^-24                       in [0, 1), exact in float32
//   uniform(a, b): a + Unit(Bits(s, k, j)) * (b - a)
//   normal(m, sd): Box-Muller on u1 = Unit(Bits(s,k,2j)) + 2^-24 (in (0, 1]) and
//                  u2 = Unit(Bits(s,k,2j+1)):  m + sd * sqrt(-2 ln u1) * cos(2 pi u2)
//   zeros:         0
// Uniform values are bit-identical everywhere; normal values depend on the platform's logf/cosf
// (within a few ulp).
#ifndef HERALD_KERNELS_CORE_INITIALIZER_H_
#define HERALD_KERNELS_CORE_INITIALIZER_H_

#include <math.h>
#include <stdint.h>

#include "kernels/core/platform.h"

#ifdef __cplusplus
extern "C" {
#endif

// Fixed integer values, mirrored by herald_tf._core.InitializerKind.
typedef enum {
  HERALD_INIT_UNIFORM = 0,
  HERALD_INIT_NORMAL = 1,
  HERALD_INIT_ZEROS = 2,
} HeraldInitializerKind;

typedef struct {
  int32_t kind;   // a HeraldInitializerKind
  uint64_t seed;  // the table seed
  float a;        // uniform: low bound;  normal: mean
  float b;        // uniform: high bound; normal: standard deviation
} HeraldInitializerParams;

#ifdef __cplusplus
}  // extern "C"

namespace herald {

constexpr uint64_t kGoldenGamma = 0x9E3779B97F4A7C15ULL;

HERALD_INLINE uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

HERALD_INLINE uint64_t InitBits(uint64_t seed, int64_t key, uint64_t counter) {
  return Mix64(Mix64(static_cast<uint64_t>(key) ^ Mix64(seed)) ^ ((counter + 1) * kGoldenGamma));
}

HERALD_INLINE float UnitFloat(uint64_t bits) {
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

// Value of element j of the initial row for `key`.
HERALD_INLINE float InitialValue(const HeraldInitializerParams& p, int64_t key, int64_t j) {
  switch (p.kind) {
    case HERALD_INIT_UNIFORM: {
      const float u = UnitFloat(InitBits(p.seed, key, static_cast<uint64_t>(j)));
      return p.a + u * (p.b - p.a);
    }
    case HERALD_INIT_NORMAL: {
      const uint64_t c = 2 * static_cast<uint64_t>(j);
      const float u1 = UnitFloat(InitBits(p.seed, key, c)) + (1.0f / 16777216.0f);
      const float u2 = UnitFloat(InitBits(p.seed, key, c + 1));
      const float r = sqrtf(-2.0f * logf(u1));
      return p.a + p.b * (r * cosf(6.28318530717958647692f * u2));
    }
    default:
      return 0.0f;
  }
}

HERALD_INLINE bool IsValidInitializerKind(int32_t kind) {
  return kind == HERALD_INIT_UNIFORM || kind == HERALD_INIT_NORMAL || kind == HERALD_INIT_ZEROS;
}

}  // namespace herald
#endif  // __cplusplus

#endif  // HERALD_KERNELS_CORE_INITIALIZER_H_
