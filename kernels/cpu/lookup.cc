// CPU lookup (gather + pooling) and its gradient (dedup + deterministic segment sum).
#include <string.h>

#include <vector>

#include "kernels/core/c_api.h"
#include "kernels/core/scattered_rows.h"
#include "kernels/cpu/int64_map.h"
#include "kernels/cpu/runner.h"
#include "kernels/cpu/validate.h"

namespace herald {
namespace {

// How many ids ahead to prefetch: random rows of a large table are latency bound.
constexpr int64_t kPrefetchDistance = 12;

inline void AddRow(float* __restrict acc, const float* __restrict row, int64_t dim) {
  for (int64_t j = 0; j < dim; ++j) acc[j] += row[j];
}

int CheckLookupShapes(int64_t slots, int64_t dim, int64_t n, int64_t batch, int32_t combiner,
                      HeraldStatus* status) {
  if (slots < 0 || dim <= 0 || n < 0 || batch < 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected slots >= 0, dim > 0, n >= 0 and batch >= 0. Received: slots=%lld, "
                     "dim=%lld, n=%lld, batch=%lld",
                     static_cast<long long>(slots), static_cast<long long>(dim),
                     static_cast<long long>(n), static_cast<long long>(batch));
  }
  return CheckCombiner(combiner, status);
}

}  // namespace
}  // namespace herald

using herald::SetOk;
using herald::SetStatus;

extern "C" {

int herald_c_api_version(void) { return HERALD_C_API_VERSION; }

int herald_cpu_lookup(const float* storage, int64_t slots, int64_t dim, const int64_t* slot_ids,
                      int64_t n, const int64_t* row_splits, int64_t batch, int32_t combiner,
                      float* out, const HeraldRunner* runner, HeraldStatus* status) {
  if (herald::CheckLookupShapes(slots, dim, n, batch, combiner, status)) return status->code;
  if (herald::CheckIdsInRange(slot_ids, n, slots, "slot id", status)) return status->code;
  if (combiner == HERALD_COMBINER_NONE) {
    auto gather = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (i + herald::kPrefetchDistance < end) {
          herald::PrefetchRow(storage + slot_ids[i + herald::kPrefetchDistance] * dim, dim, false);
        }
        memcpy(out + i * dim, storage + slot_ids[i] * dim, sizeof(float) * dim);
      }
    };
    herald::ParallelFor(runner, n, 2 * dim, gather);
    return SetOk(status);
  }
  if (herald::CheckRowSplits(row_splits, batch, n, status)) return status->code;
  auto pool = [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* acc = out + b * dim;
      memset(acc, 0, sizeof(float) * dim);
      const int64_t lo = row_splits[b], hi = row_splits[b + 1];
      const int64_t last = row_splits[end];
      for (int64_t i = lo; i < hi; ++i) {
        if (i + herald::kPrefetchDistance < last) {
          herald::PrefetchRow(storage + slot_ids[i + herald::kPrefetchDistance] * dim, dim, false);
        }
        herald::AddRow(acc, storage + slot_ids[i] * dim, dim);
      }
      const float scale = herald::BagScale(combiner, hi - lo);
      if (combiner != HERALD_COMBINER_SUM) {
        for (int64_t j = 0; j < dim; ++j) acc[j] *= scale;
      }
    }
  };
  const int64_t ids_per_bag = batch > 0 ? (n + batch - 1) / batch : 1;
  herald::ParallelFor(runner, batch, 2 * dim * (ids_per_bag + 1), pool);
  return SetOk(status);
}

int herald_cpu_unique_slots(const int64_t* slot_ids, int64_t n, int64_t slots, int64_t* unique,
                            int64_t* inverse, int64_t* num_unique, HeraldStatus* status) {
  if (n < 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected n >= 0. Received: n=%lld",
                     static_cast<long long>(n));
  }
  if (herald::CheckIdsInRange(slot_ids, n, slots, "slot id", status)) return status->code;
  herald::Int64IndexMap map(n);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    bool inserted = false;
    const int64_t index = map.FindOrInsert(slot_ids[i], count, &inserted);
    if (inserted) unique[count++] = slot_ids[i];
    inverse[i] = index;
  }
  *num_unique = count;
  return SetOk(status);
}

int herald_cpu_lookup_grad(const float* grad_out, const int64_t* inverse, int64_t n,
                           const int64_t* row_splits, int64_t batch, int32_t combiner,
                           int64_t num_unique, int64_t dim, float* summed,
                           const HeraldRunner* runner, HeraldStatus* status) {
  if (herald::CheckLookupShapes(num_unique, dim, n, batch, combiner, status)) return status->code;
  if (herald::CheckIdsInRange(inverse, n, num_unique, "inverse index", status)) {
    return status->code;
  }
  const bool pooled = combiner != HERALD_COMBINER_NONE;
  if (pooled && herald::CheckRowSplits(row_splits, batch, n, status)) return status->code;

  // Source row of each id in grad_out and its scale.
  std::vector<int64_t> source(n);
  std::vector<float> scale(n, 1.0f);
  if (pooled) {
    for (int64_t b = 0; b < batch; ++b) {
      const float s = herald::BagScale(combiner, row_splits[b + 1] - row_splits[b]);
      for (int64_t i = row_splits[b]; i < row_splits[b + 1]; ++i) {
        source[i] = b;
        scale[i] = s;
      }
    }
  } else {
    for (int64_t i = 0; i < n; ++i) source[i] = i;
  }
  // Group ids by unique index, keeping id order inside a group (a stable counting sort), so
  // each output row is summed by one thread in a fixed order.
  std::vector<int64_t> group_start(num_unique + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++group_start[inverse[i] + 1];
  for (int64_t u = 0; u < num_unique; ++u) group_start[u + 1] += group_start[u];
  std::vector<int64_t> members(n);
  {
    std::vector<int64_t> fill(group_start.begin(), group_start.end() - 1);
    for (int64_t i = 0; i < n; ++i) members[fill[inverse[i]]++] = i;
  }
  auto sum_groups = [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      float* acc = summed + u * dim;
      memset(acc, 0, sizeof(float) * dim);
      for (int64_t k = group_start[u]; k < group_start[u + 1]; ++k) {
        const int64_t i = members[k];
        const float* g = grad_out + source[i] * dim;
        const float s = scale[i];
        if (s == 1.0f) {
          herald::AddRow(acc, g, dim);
        } else {
          for (int64_t j = 0; j < dim; ++j) acc[j] += s * g[j];
        }
      }
    }
  };
  const int64_t ids_per_unique = num_unique > 0 ? (n + num_unique - 1) / num_unique : 1;
  herald::ParallelFor(runner, num_unique, 2 * dim * (ids_per_unique + 1), sum_groups);
  return SetOk(status);
}

int herald_cpu_add_rows_by_index(const float* rows, const int64_t* inverse, int64_t n,
                                 int64_t num_unique, int64_t dim, float* summed,
                                 HeraldStatus* status) {
  if (n < 0 || dim <= 0 || num_unique < 0 || (n > 0 && (rows == nullptr || inverse == nullptr ||
                                                       summed == nullptr))) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected rows, indices and an output with n >= 0 and dim > 0. Received: "
                     "n=%lld, dim=%lld",
                     static_cast<long long>(n), static_cast<long long>(dim));
  }
  if (herald::CheckIdsInRange(inverse, n, num_unique, "index", status)) return status->code;
  // In row order, so each output row gets its additions in the order the rows come (reading
  // the rows once, in order; the output rows are fetched ahead).
  for (int64_t i = 0; i < n; ++i) {
    if (i + herald::kRowsAhead < n) {
      herald::PrefetchRow(summed + inverse[i + herald::kRowsAhead] * dim, dim, true);
    }
    herald::AddRow(summed + inverse[i] * dim, rows + i * dim, dim);
  }
  return SetOk(status);
}

}  // extern "C"
