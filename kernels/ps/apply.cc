// Optimizer apply of validated push gradients on a PS table shard (see ps_api.h). The math is
// herald::ApplyRow, the code every party runs; unlike herald_cpu_sparse_apply it does not
// re-check distinctness and finiteness, which the PS checked on arrival (twice the time here).
#include <stdint.h>

#include "kernels/core/apply_checks.h"
#include "kernels/core/optimizer.h"
#include "kernels/core/scattered_rows.h"
#include "kernels/cpu/validate.h"
#include "kernels/ps/ps_api.h"

using herald::SetOk;
using herald::SetStatus;

extern "C" {

int herald_ps_apply_rows(const HeraldOptimizerParams* params, float* values, float* state,
                         int64_t* versions, int64_t num_rows, int64_t dim, const int64_t* rows,
                         int64_t n, const float* grads, HeraldStatus* status) {
  if (herald::CheckApplyArgs(params, num_rows, dim, n, state, status)) return status->code;
  const int64_t width = herald::StateWidth(params->kind, dim);
  if (n > 0 && (values == nullptr || versions == nullptr || rows == nullptr ||
                grads == nullptr || (width > 0 && state == nullptr))) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected values, versions, rows, gradients%s. Received: NULL",
                     width > 0 ? " and optimizer state" : "");
  }
  if (herald::CheckIdsInRange(rows, n, num_rows, "row", status)) return status->code;
  herald::ApplyRows(*params, values, state, versions, dim, width, rows, grads, 0, n);
  return SetOk(status);
}

}  // extern "C"
