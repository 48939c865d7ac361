// C ABI of herald's embedding scheduler (framework-free; no TensorFlow headers).
//
// A scheduler turns global batches of int64 keys, shape (N * B, F), into a per-worker input
// allocation and per-worker row-movement plans (DESIGN.md §3, §5). The semantics are defined by
// the Python reference engine (herald_tf/scheduler/reference.py), which this code matches bit for
// bit; herald_tf/scheduler/types.py documents the plan lists and the slot model.
//
// Conventions: functions never throw; they return a HeraldStatusCode and fill `status` (which may
// be NULL). On failure nothing observable has changed. A handle may be used by one thread at a
// time; distinct handles are independent (there is no global state).
#ifndef HERALD_KERNELS_SCHEDULER_SCHEDULER_API_H_
#define HERALD_KERNELS_SCHEDULER_SCHEDULER_API_H_

#include <stdint.h>

#include "kernels/core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HERALD_SCHED_API_VERSION 6
#define HERALD_SCHED_MAX_WORKERS 64

// Fixed integer values, mirrored by herald_tf.scheduler.types.Policy.
typedef enum {
  HERALD_SCHED_POLICY_PS = 0,
  HERALD_SCHED_POLICY_HET = 1,
  HERALD_SCHED_POLICY_HERALD = 2,
} HeraldSchedPolicy;

// Mirrored by herald_tf.scheduler.types.Allocation.
typedef enum {
  HERALD_SCHED_ALLOC_NONE = 0,
  HERALD_SCHED_ALLOC_GREEDY = 1,
  HERALD_SCHED_ALLOC_GROUPED = 2,
} HeraldSchedAllocation;

// Mirrored by herald_tf.scheduler.types.Eviction.
typedef enum {
  HERALD_SCHED_EVICT_LRU = 0,  // smallest (last step used, key) first
  HERALD_SCHED_EVICT_LFU = 1,  // smallest (steps used while cached, last step used, key) first
} HeraldSchedEviction;

// Plan lists of one worker after a step; mirrored by StepPlan.LISTS (same order) + OCCURRENCE.
typedef enum {
  HERALD_SCHED_KEYS = 0,
  HERALD_SCHED_KEY_SLOTS = 1,
  HERALD_SCHED_FLUSH_KEYS = 2,
  HERALD_SCHED_FLUSH_SLOTS = 3,
  HERALD_SCHED_PULL_KEYS = 4,
  HERALD_SCHED_PULL_SLOTS = 5,
  HERALD_SCHED_PULL_VERSIONS = 6,
  HERALD_SCHED_INIT_KEYS = 7,
  HERALD_SCHED_INIT_SLOTS = 8,
  HERALD_SCHED_LOCAL_KEYS = 9,
  HERALD_SCHED_LOCAL_SLOTS = 10,
  HERALD_SCHED_PUSH_KEYS = 11,
  HERALD_SCHED_DROP_KEYS = 12,
  HERALD_SCHED_WRITEBACK_KEYS = 13,
  HERALD_SCHED_WRITEBACK_SLOTS = 14,
  HERALD_SCHED_INSTALL_KEYS = 15,
  HERALD_SCHED_INSTALL_SRC = 16,
  HERALD_SCHED_INSTALL_DST = 17,
  HERALD_SCHED_OCCURRENCE_SLOTS = 18,  // (B, F): slot of each key occurrence of the worker
  HERALD_SCHED_NUM_LISTS = 19,
} HeraldSchedList;

// Scheduler parameters; validated by herald_sched_create.
typedef struct {
  int32_t num_workers;      // N in [1, 64]
  int32_t batch_size;       // B >= 1, samples per worker per step
  int32_t num_fields;       // F >= 1, keys per sample
  int32_t policy;           // a HeraldSchedPolicy
  int32_t allocation;       // a HeraldSchedAllocation (NONE with PS)
  int32_t eviction;         // a HeraldSchedEviction
  int32_t bound;            // HET staleness bound (0 unless policy is HET)
  int32_t staging_regions;  // >= 1; staging slots: region (step % regions) of F * B slots
  int64_t cache_capacity;   // rows held per worker between steps, >= 0
  int32_t emit_plans;       // 0: only allocation and traffic counters (faster)
  int32_t emit_worker;      // -1: every worker's plan; w in [0, N): only worker w's (the other
                            // workers' lists stay empty; a worker running its own copy reads
                            // only its plan)
} HeraldSchedConfig;

// Rows moved so far.
typedef struct {
  int64_t samples;
  int64_t steps;
  int64_t pull_rows;
  int64_t pull_state_rows;  // pulls carrying optimizer state (herald private rows, het pulls)
  int64_t push_rows;   // het write-backs of pending gradients included
  int64_t flush_rows;  // flushes before reads by other workers and dirty write-backs
} HeraldSchedTraffic;

typedef struct HeraldScheduler HeraldScheduler;  // opaque

int herald_sched_api_version(void);

// Creates a scheduler; *out must be released with herald_sched_destroy.
int herald_sched_create(const HeraldSchedConfig* config, HeraldScheduler** out,
                        HeraldStatus* status);
void herald_sched_destroy(HeraldScheduler* scheduler);

// Schedules the next global batch. keys: (num_samples, num_fields) row-major with
// num_samples == N * B. samples_out: (N, B), worker w's sample indices in row w.
int herald_sched_step(HeraldScheduler* scheduler, const int64_t* keys /* (N*B, F) */,
                      int64_t num_samples, int64_t num_fields, int64_t* samples_out /* (N, B) */,
                      HeraldStatus* status);

// herald_sched_step that writes the plan lists straight into plans_out (one copy, no second
// pass): list l of worker w starts at entry capacity[0] + ... + capacity[w * NUM_LISTS + l - 1]
// and holds sizes_out[w * NUM_LISTS + l] entries when that size is at most its capacity; a
// longer list is not in plans_out (read it with herald_sched_copy_list). plans_out must hold
// the sum of capacity; the scheduler reads it (list functions below) until the next step or
// destroy, and never writes it after this call returns. Lists of keys, key slots, pulls,
// inits, locals and pushes may be written up to the worker's unique keys (<= B * F) before
// being trimmed: a smaller capacity for them works but costs a copy. Sizes are 0 when plans
// are not emitted.
int herald_sched_step_into(HeraldScheduler* scheduler, const int64_t* keys /* (N*B, F) */,
                           int64_t num_samples, int64_t num_fields,
                           int64_t* samples_out /* (N, B) */,
                           int64_t* plans_out /* (sum of capacity) */,
                           const int64_t* capacity /* (N, HERALD_SCHED_NUM_LISTS) */,
                           int64_t* sizes_out /* (N, HERALD_SCHED_NUM_LISTS) */,
                           HeraldStatus* status);

int herald_sched_traffic(const HeraldScheduler* scheduler, HeraldSchedTraffic* out,
                         HeraldStatus* status);

// Turns plan emission on (1) or off (0) for the following steps; the scheduling decisions are
// the same either way (used to fast-forward to a checkpointed step by replaying its batches).
int herald_sched_set_emit_plans(HeraldScheduler* scheduler, int32_t emit_plans,
                                HeraldStatus* status);

// Length of plan list `list` of `worker` for the last step (0 when plans are not emitted).
int herald_sched_list_size(const HeraldScheduler* scheduler, int32_t worker, int32_t list,
                           int64_t* size, HeraldStatus* status);

// Copies plan list `list` of `worker` into out (capacity entries, at least its size).
int herald_sched_copy_list(const HeraldScheduler* scheduler, int32_t worker, int32_t list,
                           int64_t* out /* (capacity) */, int64_t capacity, HeraldStatus* status);

// -- plans on the wire (kernels/scheduler/plan_wire.h; layout in plan_codec.py) ------------

// What a shipped plan is for; the receiving worker checks every field against its own.
typedef struct {
  int64_t step;
  int64_t rank;      // the worker the plan is for
  int64_t digest;    // of the scheduler configuration
  int64_t checksum;  // of the global batch's keys
} HeraldPlanStamp;

// Encodes `worker`'s plan of the last step and its samples (B entries) into out. *size_out is
// the encoded size; when it exceeds capacity, returns HERALD_OUT_OF_RANGE (call again with a
// larger out). The worker's plan must have been emitted.
int herald_sched_encode_plan(HeraldScheduler* scheduler, int32_t worker, const int64_t* samples,
                             const HeraldPlanStamp* stamp, uint8_t* out, int64_t capacity,
                             int64_t* size_out, HeraldStatus* status);

// Checks a shipped plan against `expect` and gives the entries of each decoded list in
// HeraldSchedList order, then of the samples, then the number of fields.
int herald_plan_decoded_sizes(const uint8_t* blob, int64_t length, const HeraldPlanStamp* expect,
                              int64_t* sizes_out /* (HERALD_SCHED_NUM_LISTS + 2) */,
                              HeraldStatus* status);

// Decodes a shipped plan into out (capacity entries): the lists in HeraldSchedList order, then
// the samples, each as long as herald_plan_decoded_sizes says.
int herald_plan_decode(const uint8_t* blob, int64_t length, const HeraldPlanStamp* expect,
                       int64_t* out, int64_t capacity, HeraldStatus* status);

// The stamp's checksum of a global batch: keys (rows, cols), row-major. Order-sensitive (a
// batch with the same keys in another order has another checksum, almost surely): each key is
// mixed by an xor-shift and multiplied by a distinct odd weight of its position, the products
// summed modulo 2^64, then the shape folded in. Every worker computes it on every step.
int herald_plan_batch_checksum(const int64_t* keys /* (rows, cols) */, int64_t rows,
                               int64_t cols, int64_t* checksum_out, HeraldStatus* status);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // HERALD_KERNELS_SCHEDULER_SCHEDULER_API_H_
