// CPU sparse optimizer apply over slot storage. The loop is herald::ApplyRows from
// kernels/core/scattered_rows.h, the same code the parameter server runs.
#include "kernels/core/apply_checks.h"
#include "kernels/core/c_api.h"
#include "kernels/core/scattered_rows.h"
#include "kernels/cpu/int64_map.h"
#include "kernels/cpu/runner.h"
#include "kernels/cpu/validate.h"

using herald::SetOk;
using herald::SetStatus;

extern "C" {

int herald_cpu_sparse_apply(const HeraldOptimizerParams* params, float* storage, float* state,
                            int64_t* versions, int64_t slots, int64_t dim,
                            const int64_t* unique_slots, int64_t u, const float* grads,
                            const HeraldRunner* runner, HeraldStatus* status) {
  if (herald::CheckApplyArgs(params, slots, dim, u, state, status)) return status->code;
  const int64_t width = herald::StateWidth(params->kind, dim);
  if (herald::CheckIdsInRange(unique_slots, u, slots, "unique slot", status)) return status->code;
  {
    herald::Int64IndexMap seen(u);
    for (int64_t k = 0; k < u; ++k) {
      bool inserted = false;
      const int64_t first = seen.FindOrInsert(unique_slots[k], k, &inserted);
      if (!inserted) {
        return SetStatus(status, HERALD_INVALID_ARGUMENT,
                         "Expected distinct unique slots (sum gradients first). Received: slot "
                         "%lld at positions %lld and %lld",
                         static_cast<long long>(unique_slots[k]), static_cast<long long>(first),
                         static_cast<long long>(k));
      }
    }
  }
  if (herald::CheckFinite(grads, u * dim, "gradients", status)) return status->code;

  auto apply = [&](int64_t begin, int64_t end) {
    herald::ApplyRows(*params, storage, state, versions, dim, width, unique_slots, grads, begin,
                      end);
  };
  herald::ParallelFor(runner, u, 8 * dim, apply);
  return SetOk(status);
}

}  // extern "C"
