// Argument checks shared by the parameter server's native functions (kernels/ps/*.cc).
#ifndef HERALD_KERNELS_PS_CHECK_H_
#define HERALD_KERNELS_PS_CHECK_H_

#include <stdint.h>

#include "kernels/core/status.h"

namespace herald {

// HERALD_INVALID_ARGUMENT naming the first of ids[0:n] outside [0, limit), else OK.
inline int CheckInRange(const int64_t* ids, int64_t n, int64_t limit, const char* what,
                        HeraldStatus* status) {
  for (int64_t k = 0; k < n; ++k) {
    if (ids[k] < 0 || ids[k] >= limit) {
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected %s in [0, %lld). Received: %lld at position %lld", what,
                       static_cast<long long>(limit), static_cast<long long>(ids[k]),
                       static_cast<long long>(k));
    }
  }
  return SetOk(status);
}

}  // namespace herald

#endif  // HERALD_KERNELS_PS_CHECK_H_
