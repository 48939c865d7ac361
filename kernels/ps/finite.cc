// Finite check of gradient and row payloads (see ps_api.h): herald::FindNonFinite, the scan the
// CPU kernels' checks use.
#include <stdint.h>

#include "kernels/cpu/validate.h"
#include "kernels/ps/ps_api.h"

using herald::SetOk;
using herald::SetStatus;

extern "C" {

int herald_ps_find_non_finite(const float* values, int64_t n, int64_t* first_bad,
                              HeraldStatus* status) {
  if (n < 0 || first_bad == nullptr || (n > 0 && values == nullptr)) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected values, n >= 0 and an output pointer. Received: n=%lld",
                     static_cast<long long>(n));
  }
  *first_bad = herald::FindNonFinite(values, n);
  return SetOk(status);
}

}  // extern "C"
