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

int CheckFinite(const float* values, int64_t count, const char* what, HeraldStatus* status) {
  for (int64_t i = 0; i < count; ++i) {
    if (!isfinite(values[i])) {
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected finite %s. Received: a non-finite value (%f) at flat index %lld",
                       what, static_cast<double>(values[i]), static_cast<long long>(i));
    }
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
