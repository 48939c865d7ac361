// Host checks of a sparse optimizer apply, shared by the CPU kernels, the CUDA core and the
// parameter server, so every apply refuses the same arguments with the same message.
#ifndef HERALD_KERNELS_CORE_APPLY_CHECKS_H_
#define HERALD_KERNELS_CORE_APPLY_CHECKS_H_

#include <math.h>
#include <stdint.h>

#include "kernels/core/optimizer.h"
#include "kernels/core/status.h"

namespace herald {

// A known optimizer kind (params may be NULL: refused).
inline int CheckOptimizerKind(const HeraldOptimizerParams* params, HeraldStatus* status) {
  if (params == nullptr || !IsValidOptimizerKind(params->kind)) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected optimizer kind in {0: sgd, 1: adagrad, 2: adam}. Received: %d",
                     params ? params->kind : -1);
  }
  return SetOk(status);
}

// A known optimizer with a finite learning rate >= 0 (a schedule's value may be anything),
// `slots` rows of storage (>= 0), dim > 0, u >= 0 rows to apply, and optimizer state present
// when the optimizer keeps some.
inline int CheckApplyArgs(const HeraldOptimizerParams* params, int64_t slots, int64_t dim,
                          int64_t u, const float* state, HeraldStatus* status) {
  if (CheckOptimizerKind(params, status) != HERALD_OK) return status->code;
  if (!isfinite(params->learning_rate) || params->learning_rate < 0.0f) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected a finite learning rate >= 0. Received: %g",
                     static_cast<double>(params->learning_rate));
  }
  if (slots < 0 || dim <= 0 || u < 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected slots >= 0, dim > 0 and u >= 0. Received: slots=%lld, dim=%lld, "
                     "u=%lld",
                     static_cast<long long>(slots), static_cast<long long>(dim),
                     static_cast<long long>(u));
  }
  const int64_t width = StateWidth(params->kind, dim);
  if (width > 0 && state == nullptr) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected optimizer state of shape (slots, %lld) for this optimizer. "
                     "Received: none",
                     static_cast<long long>(width));
  }
  return SetOk(status);
}

}  // namespace herald

#endif  // HERALD_KERNELS_CORE_APPLY_CHECKS_H_
