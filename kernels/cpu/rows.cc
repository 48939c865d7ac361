// CPU row movement (gather for push/flush, scatter for pull) and deterministic row creation.
#include <string.h>

#include "kernels/core/apply_checks.h"
#include "kernels/core/c_api.h"
#include "kernels/core/scattered_rows.h"
#include "kernels/cpu/int64_map.h"
#include "kernels/cpu/validate.h"

using herald::SetOk;
using herald::SetStatus;

namespace {

int CheckCounts(int64_t n, int64_t width, HeraldStatus* status) {
  if (n < 0 || width <= 0) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected n >= 0 and a row width > 0. Received: n=%lld, width=%lld",
                     static_cast<long long>(n), static_cast<long long>(width));
  }
  return SetOk(status);
}

}  // namespace

extern "C" {

int herald_cuda_built(void) {
#ifdef HERALD_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

int herald_cpu_init_rows(const HeraldInitializerParams* params, const int64_t* keys, int64_t n,
                         int64_t dim, float* out, HeraldStatus* status) {
  if (params == nullptr || !herald::IsValidInitializerKind(params->kind)) {
    return SetStatus(status, HERALD_INVALID_ARGUMENT,
                     "Expected initializer kind in {0: uniform, 1: normal, 2: zeros}. Received: %d",
                     params ? params->kind : -1);
  }
  if (CheckCounts(n, dim, status)) return status->code;
  const HeraldInitializerParams p = *params;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < dim; ++j) out[i * dim + j] = herald::InitialValue(p, keys[i], j);
  }
  return SetOk(status);
}

int herald_cpu_init_state(const HeraldOptimizerParams* params, int64_t n, int64_t dim,
                          float* state, HeraldStatus* status) {
  if (herald::CheckOptimizerKind(params, status)) return status->code;
  if (CheckCounts(n, dim, status)) return status->code;
  const int64_t count = n * herald::StateWidth(params->kind, dim);
  const float v = herald::InitialStateValue(*params);
  for (int64_t i = 0; i < count; ++i) state[i] = v;
  return SetOk(status);
}

int herald_cpu_gather_rows(const float* storage, int64_t slots, int64_t width,
                           const int64_t* slot_ids, int64_t n, float* out, HeraldStatus* status) {
  if (CheckCounts(n, width, status)) return status->code;
  if (herald::CheckIdsInRange(slot_ids, n, slots, "slot id", status)) return status->code;
  const int64_t row_bytes = width * static_cast<int64_t>(sizeof(float));
  const bool stream = herald::StreamsRows(out, n * row_bytes, row_bytes);
  for (int64_t i = 0; i < n; ++i) {
    if (i + herald::kRowsAhead < n) {
      herald::PrefetchRow(storage + slot_ids[i + herald::kRowsAhead] * width, width, false);
    }
    herald::CopyRow(reinterpret_cast<char*>(out + i * width),
                    reinterpret_cast<const char*>(storage + slot_ids[i] * width), row_bytes,
                    stream);
  }
  if (stream) herald::StreamFence();
  return SetOk(status);
}

int herald_cpu_scatter_rows(float* storage, int64_t slots, int64_t width, const int64_t* slot_ids,
                            int64_t n, const float* rows, HeraldStatus* status) {
  if (CheckCounts(n, width, status)) return status->code;
  if (herald::CheckIdsInRange(slot_ids, n, slots, "slot id", status)) return status->code;
  herald::Int64IndexMap seen(n);
  for (int64_t i = 0; i < n; ++i) {
    bool inserted = false;
    const int64_t first = seen.FindOrInsert(slot_ids[i], i, &inserted);
    if (!inserted) {
      return SetStatus(status, HERALD_INVALID_ARGUMENT,
                       "Expected distinct slot ids to scatter into. Received: slot %lld at "
                       "positions %lld and %lld",
                       static_cast<long long>(slot_ids[i]), static_cast<long long>(first),
                       static_cast<long long>(i));
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    memcpy(storage + slot_ids[i] * width, rows + i * width, sizeof(float) * width);
  }
  return SetOk(status);
}

}  // extern "C"
