// Finite check of gradient and row payloads (see ps_api.h): exponent-bit test, block-wise so the
// compiler vectorises the inner loop and the scan stops soon after a bad value.
#include <stdint.h>
#include <string.h>

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
  *first_bad = -1;
  constexpr uint32_t kExponent = 0x7f800000u;
  constexpr int64_t kBlock = 4096;
  for (int64_t begin = 0; begin < n; begin += kBlock) {
    const int64_t end = begin + kBlock < n ? begin + kBlock : n;
    uint32_t any = 0;
    for (int64_t i = begin; i < end; ++i) {
      uint32_t bits;
      memcpy(&bits, values + i, sizeof(bits));
      any |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    if (any) {
      for (int64_t i = begin; i < end; ++i) {
        uint32_t bits;
        memcpy(&bits, values + i, sizeof(bits));
        if ((bits & kExponent) == kExponent) {
          *first_bad = i;
          return SetOk(status);
        }
      }
    }
  }
  return SetOk(status);
}

}  // extern "C"
