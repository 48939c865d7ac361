// C ABI of the scheduler: validation, status conversion, no exceptions across the boundary.
#include "kernels/scheduler/scheduler_api.h"

#include <new>

#include "kernels/scheduler/engine.h"
#include "kernels/scheduler/plan_wire.h"

struct HeraldScheduler {
  explicit HeraldScheduler(const HeraldSchedConfig& c)
      : engine(c),
        encoder(c.cache_capacity +
                static_cast<int64_t>(c.staging_regions) * c.batch_size * c.num_fields) {}
  herald::sched::Engine engine;
  herald::sched::PlanEncoder encoder;
};

namespace {

int Validate(const HeraldSchedConfig* c, HeraldStatus* st) {
  using herald::SetStatus;
  if (c == nullptr) return SetStatus(st, HERALD_INVALID_ARGUMENT, "Expected a config. Received: NULL");
  if (c->num_workers < 1 || c->num_workers > HERALD_SCHED_MAX_WORKERS) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected num_workers in [1, 64]. Received: num_workers=%d", c->num_workers);
  }
  if (c->batch_size < 1 || c->num_fields < 1 ||
      static_cast<int64_t>(c->batch_size) * c->num_fields >= (1LL << 30)) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected batch_size >= 1, num_fields >= 1, their product < 2**30. "
                     "Received: batch_size=%d, num_fields=%d", c->batch_size, c->num_fields);
  }
  if (c->cache_capacity < 0 || c->cache_capacity >= (1LL << 30) || c->staging_regions < 1) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected 0 <= cache_capacity < 2**30 and staging_regions >= 1. Received: "
                     "cache_capacity=%lld, staging_regions=%d",
                     static_cast<long long>(c->cache_capacity), c->staging_regions);
  }
  if (c->cache_capacity + static_cast<int64_t>(c->staging_regions) * c->batch_size * c->num_fields >=
      (1LL << 31)) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT, "Expected fewer than 2**31 slots per worker.");
  }
  if (c->policy < 0 || c->policy > 2 || c->allocation < 0 || c->allocation > 2 ||
      c->eviction < 0 || c->eviction > 1) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected policy in [0, 2], allocation in [0, 2], eviction in [0, 1]. "
                     "Received: policy=%d, allocation=%d, eviction=%d",
                     c->policy, c->allocation, c->eviction);
  }
  if (c->bound < 0 || (c->bound > 0 && c->policy != HERALD_SCHED_POLICY_HET)) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected bound >= 0, and 0 unless policy is het. Received: bound=%d",
                     c->bound);
  }
  if (c->emit_worker < -1 || c->emit_worker >= c->num_workers) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected emit_worker -1 (every worker) or in [0, num_workers). Received: "
                     "emit_worker=%d, num_workers=%d", c->emit_worker, c->num_workers);
  }
  if (c->policy == HERALD_SCHED_POLICY_PS && c->allocation != HERALD_SCHED_ALLOC_NONE) {
    return SetStatus(st, HERALD_INVALID_ARGUMENT,
                     "Expected allocation none with policy ps. Received: allocation=%d",
                     c->allocation);
  }
  return herald::SetOk(st);
}

}  // namespace

extern "C" {

int herald_sched_api_version(void) { return HERALD_SCHED_API_VERSION; }

int herald_sched_create(const HeraldSchedConfig* config, HeraldScheduler** out,
                        HeraldStatus* status) {
  if (out == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected an output handle.");
  }
  int code = Validate(config, status);
  if (code != HERALD_OK) return code;
  try {
    *out = new HeraldScheduler(*config);
  } catch (const std::bad_alloc&) {
    return herald::SetStatus(status, HERALD_INTERNAL, "Out of memory creating the scheduler.");
  }
  return herald::SetOk(status);
}

void herald_sched_destroy(HeraldScheduler* scheduler) { delete scheduler; }

static int CheckStep(const HeraldScheduler* scheduler, const int64_t* keys,
                     int64_t num_samples, int64_t num_fields, const int64_t* samples_out,
                     HeraldStatus* status) {
  if (scheduler == nullptr || keys == nullptr || samples_out == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected a scheduler, keys and samples_out. Received: NULL");
  }
  const HeraldSchedConfig& c = scheduler->engine.config();
  const int64_t g = static_cast<int64_t>(c.num_workers) * c.batch_size;
  if (num_samples != g || num_fields != c.num_fields) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected keys of shape (%lld, %d). Received: (%lld, %lld)",
                             static_cast<long long>(g), c.num_fields,
                             static_cast<long long>(num_samples),
                             static_cast<long long>(num_fields));
  }
  return herald::SetOk(status);
}

static int RunStep(HeraldScheduler* scheduler, const int64_t* keys, int64_t* samples_out,
                   int64_t* plans_out, const int64_t* capacity, HeraldStatus* status) {
  try {
    scheduler->engine.Step(keys, samples_out, plans_out, capacity);
  } catch (const std::bad_alloc&) {
    return herald::SetStatus(status, HERALD_INTERNAL,
                             "Out of memory in a scheduler step; the scheduler is unusable.");
  }
  return herald::SetOk(status);
}

int herald_sched_step(HeraldScheduler* scheduler, const int64_t* keys, int64_t num_samples,
                      int64_t num_fields, int64_t* samples_out, HeraldStatus* status) {
  int code = CheckStep(scheduler, keys, num_samples, num_fields, samples_out, status);
  if (code != HERALD_OK) return code;
  return RunStep(scheduler, keys, samples_out, nullptr, nullptr, status);
}

int herald_sched_step_into(HeraldScheduler* scheduler, const int64_t* keys, int64_t num_samples,
                           int64_t num_fields, int64_t* samples_out, int64_t* plans_out,
                           const int64_t* capacity, int64_t* sizes_out, HeraldStatus* status) {
  int code = CheckStep(scheduler, keys, num_samples, num_fields, samples_out, status);
  if (code != HERALD_OK) return code;
  if (capacity == nullptr || sizes_out == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected capacity and sizes_out. Received: NULL");
  }
  const int64_t lists =
      static_cast<int64_t>(scheduler->engine.config().num_workers) * HERALD_SCHED_NUM_LISTS;
  int64_t total = 0;
  for (int64_t i = 0; i < lists; ++i) {
    if (capacity[i] < 0) {
      return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                               "Expected capacities >= 0. Received: capacity[%lld]=%lld",
                               static_cast<long long>(i), static_cast<long long>(capacity[i]));
    }
    total += capacity[i];
  }
  if (plans_out == nullptr && total > 0) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected plans_out of %lld entries. Received: NULL",
                             static_cast<long long>(total));
  }
  code = RunStep(scheduler, keys, samples_out, plans_out, capacity, status);
  if (code != HERALD_OK) return code;
  for (int64_t i = 0; i < lists; ++i) {
    sizes_out[i] = static_cast<int64_t>(
        scheduler->engine.list(static_cast<int32_t>(i / HERALD_SCHED_NUM_LISTS),
                               static_cast<int32_t>(i % HERALD_SCHED_NUM_LISTS)).size());
  }
  return herald::SetOk(status);
}

int herald_sched_set_emit_plans(HeraldScheduler* scheduler, int32_t emit_plans,
                                HeraldStatus* status) {
  if (scheduler == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected a scheduler.");
  }
  scheduler->engine.set_emit_plans(emit_plans != 0);
  return herald::SetOk(status);
}

int herald_sched_traffic(const HeraldScheduler* scheduler, HeraldSchedTraffic* out,
                         HeraldStatus* status) {
  if (scheduler == nullptr || out == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT, "Expected a scheduler and out.");
  }
  *out = scheduler->engine.traffic();
  return herald::SetOk(status);
}

static int CheckList(const HeraldScheduler* s, int32_t worker, int32_t list, HeraldStatus* st) {
  if (s == nullptr) return herald::SetStatus(st, HERALD_INVALID_ARGUMENT, "Expected a scheduler.");
  if (worker < 0 || worker >= s->engine.config().num_workers || list < 0 ||
      list >= HERALD_SCHED_NUM_LISTS) {
    return herald::SetStatus(st, HERALD_OUT_OF_RANGE,
                             "Expected worker in [0, %d) and list in [0, %d). Received: "
                             "worker=%d, list=%d",
                             s->engine.config().num_workers, HERALD_SCHED_NUM_LISTS, worker, list);
  }
  return herald::SetOk(st);
}

int herald_sched_list_size(const HeraldScheduler* scheduler, int32_t worker, int32_t list,
                           int64_t* size, HeraldStatus* status) {
  int code = CheckList(scheduler, worker, list, status);
  if (code != HERALD_OK) return code;
  if (size == nullptr) return herald::SetStatus(status, HERALD_INVALID_ARGUMENT, "size is NULL");
  *size = static_cast<int64_t>(scheduler->engine.list(worker, list).size());
  return herald::SetOk(status);
}

int herald_sched_copy_list(const HeraldScheduler* scheduler, int32_t worker, int32_t list,
                           int64_t* out, int64_t capacity, HeraldStatus* status) {
  int code = CheckList(scheduler, worker, list, status);
  if (code != HERALD_OK) return code;
  const auto& v = scheduler->engine.list(worker, list);
  if (capacity < static_cast<int64_t>(v.size()) || (out == nullptr && !v.empty())) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected an output of at least %lld entries. Received: %lld",
                             static_cast<long long>(v.size()), static_cast<long long>(capacity));
  }
  for (size_t i = 0; i < v.size(); ++i) out[i] = v[i];
  return herald::SetOk(status);
}

int herald_sched_encode_plan(HeraldScheduler* scheduler, int32_t worker, const int64_t* samples,
                             const HeraldPlanStamp* stamp, uint8_t* out, int64_t capacity,
                             int64_t* size_out, HeraldStatus* status) {
  int code = CheckList(scheduler, worker, 0, status);
  if (code != HERALD_OK) return code;
  const HeraldSchedConfig& c = scheduler->engine.config();
  if (!c.emit_plans || (c.emit_worker != -1 && c.emit_worker != worker) || samples == nullptr ||
      stamp == nullptr || size_out == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected samples, a stamp, a size output and worker %d's plan "
                             "emitted (emit_plans=%d, emit_worker=%d)", worker, c.emit_plans,
                             c.emit_worker);
  }
  return scheduler->encoder.Encode(&scheduler->engine.list(worker, 0), c.num_fields, samples,
                                   c.batch_size, *stamp, out, capacity, size_out, status);
}

int herald_plan_decoded_sizes(const uint8_t* blob, int64_t length, const HeraldPlanStamp* expect,
                              int64_t* sizes_out, HeraldStatus* status) {
  if (expect == nullptr || sizes_out == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected a stamp and a sizes output. Received: NULL");
  }
  return herald::sched::DecodedSizes(blob, length, *expect, sizes_out, status);
}

int herald_plan_decode(const uint8_t* blob, int64_t length, const HeraldPlanStamp* expect,
                       int64_t* out, int64_t capacity, HeraldStatus* status) {
  if (expect == nullptr) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected a stamp. Received: NULL");
  }
  return herald::sched::Decode(blob, length, *expect, out, capacity, status);
}

int herald_plan_batch_checksum(const int64_t* keys, int64_t rows, int64_t cols,
                               int64_t* checksum_out, HeraldStatus* status) {
  if (rows < 0 || cols < 0 || checksum_out == nullptr ||
      (keys == nullptr && rows > 0 && cols > 0)) {
    return herald::SetStatus(status, HERALD_INVALID_ARGUMENT,
                             "Expected keys of a (rows, cols) batch, rows and cols >= 0, and a "
                             "checksum output. Received: rows=%lld, cols=%lld",
                             static_cast<long long>(rows), static_cast<long long>(cols));
  }
  *checksum_out = herald::sched::BatchChecksum(keys, rows, cols);
  return herald::SetOk(status);
}

}  // extern "C"
