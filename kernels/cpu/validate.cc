#include "kernels/cpu/validate.h"

#include <math.h>

namespace herald {

int CheckIdsInRange(const int64_t* ids, int64_t n, int64_t slots, const char* what,
                    HeraldStatus* status) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= slots) {
      return SetStatus(status, HERALD_OUT_OF_RANGE,
                       "Expected every %s in [0, %lld). Received: %s[%lld]=%lld", what,
                       static_cast<long long>(slots), what, static_cast<long long>(i),
                       static_cast<long long>(ids[i]));
    }
  }
  return SetOk(status);
}

int CheckRowSplits(const int64_t* row_splits, int64_t batch, int64_t n, HeraldStatus* status) {
  if (batch < 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected batch >= 0. Received: batch=%lld",
                     static_cast<long long>(batch));
  }
  if (row_splits == nullptr || row_splits[0] != 0 || row_splits[batch] != n) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected row_splits to start at 0 and end at the number of ids (%lld). "
                     "Received: row_splits[0]=%lld, row_splits[%lld]=%lld",
                     static_cast<long long>(n),
                     static_cast<long long>(row_splits ? row_splits[0] : -1),
                     static_cast<long long>(batch),
                     static_cast<long long>(row_splits ? row_splits[batch] : -1));
  }
  for (int64_t b = 0; b < batch; ++b) {
    if (row_splits[b + 1] < row_splits[b]) {
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected non-decreasing row_splits. Received: row_splits[%lld]=%lld > "
                       "row_splits[%lld]=%lld",
                       static_cast<long long>(b), static_cast<long long>(row_splits[b]),
                       static_cast<long long>(b + 1), static_cast<long long>(row_splits[b + 1]));
    }
  }
  return SetOk(status);
}

namespace {

constexpr int64_t kFiniteBlock = 1024;  // floats per early-exit test

// Whether any of the kFiniteBlock floats at `values` is NaN or ±Inf. Masking the exponent and
// adding one to it carries into bit 31 exactly for an all-ones exponent, so a block is an AND,
// an ADD and an OR per value with no compare; 32 independent accumulators keep several vector
// registers busy. GCC builds an AVX2 copy beside the baseline one and picks at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
bool BlockHasNonFinite(const float* values) {
  constexpr int kLanes = 32;
  uint32_t acc[kLanes] = {0};
  for (int64_t i = 0; i < kFiniteBlock; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      uint32_t bits;
      memcpy(&bits, values + i + j, sizeof(bits));
      acc[j] |= (bits & 0x7f800000u) + 0x00800000u;
    }
  }
  uint32_t any = 0;
  for (int j = 0; j < kLanes; ++j) any |= acc[j];
  return (any >> 31) != 0;
}

}  // namespace

int64_t FindNonFinite(const float* values, int64_t n) {
  int64_t begin = 0;
  for (; begin + kFiniteBlock <= n; begin += kFiniteBlock) {
    if (BlockHasNonFinite(values + begin)) break;
  }
  for (int64_t i = begin; i < n; ++i) {  // the block that has one, or the tail
    if (IsNonFinite(values[i])) return i;
  }
  return -1;
}

int CheckFinite(const float* values, int64_t count, const char* what, HeraldStatus* status) {
  const int64_t i = FindNonFinite(values, count);
  if (i >= 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected finite %s. Received: a non-finite value (%f) at flat index %lld",
                     what, static_cast<double>(values[i]), static_cast<long long>(i));
  }
  return SetOk(status);
}

int CheckCombiner(int32_t combiner, HeraldStatus* status) {
  if (combiner < HERALD_COMBINER_NONE || combiner > HERALD_COMBINER_SQRTN) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected combiner in {0: none, 1: sum, 2: mean, 3: sqrtn}. Received: %d",
                     combiner);
  }
  return SetOk(status);
}

float BagScale(int32_t combiner, int64_t length) {
  if (length == 0) return 0.0f;
  if (combiner == HERALD_COMBINER_MEAN) return 1.0f / static_cast<float>(length);
  if (combiner == HERALD_COMBINER_SQRTN) return 1.0f / sqrtf(static_cast<float>(length));
  return 1.0f;
}

}  // namespace herald
