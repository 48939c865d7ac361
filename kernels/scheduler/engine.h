// The scheduler engine: key table, step skeleton, allocators (allocate.cc) and plan policies
// (plan_ps.cc, plan_het.cc, plan_herald.cc). Mirrors herald_tf/scheduler/reference.py.
#ifndef HERALD_KERNELS_SCHEDULER_ENGINE_H_
#define HERALD_KERNELS_SCHEDULER_ENGINE_H_

#include <stdint.h>

#include <vector>

#include "kernels/scheduler/directory.h"
#include "kernels/scheduler/hash_map.h"
#include "kernels/scheduler/scheduler_api.h"

namespace herald {
namespace sched {

// Per-key facts shared by all workers (32 bytes; versions stay below 2**31).
struct KeyState {
  int64_t key = 0;
  uint64_t holders = 0;  // workers whose directory holds the key
  int32_t version = 0;   // updates applied (ps, herald) or PS clock (het)
  int32_t stamp = -1;    // step (mod 2**31) for which `local` is valid
  int32_t local = -1;    // index of the key among the current step's unique keys
  int32_t entry = -1;    // herald: directory entry of the only holder (at most one), or -1
  int32_t applied = 0;   // het: PS updates applied (steps with at least one push)
  int8_t owner = -1;     // worker owning it dirty, or -1 (the PS)
  bool touched = false;
};

// One unique key of the current step (dense, in order of first occurrence in the batch), with a
// snapshot of its KeyState at step start, so the step's passes read a small contiguous array.
struct LocalKey {
  int64_t key;
  uint64_t holders;      // snapshot
  uint64_t users;        // workers reading it at this step
  uint64_t alloc_users;  // workers given a sample with it so far (grouped allocator)
  int32_t kidx;
  int32_t count;         // occurrences in the global batch
  int32_t version;       // snapshot
  int32_t pos;           // position in the list of the worker being built
  int32_t entry;         // snapshot (herald)
  int8_t owner;          // snapshot
  bool touched;          // snapshot
};

// One unique key of a worker's step.
struct WorkerKey {
  int32_t local;  // index into the step's LocalKey array
  int32_t slot;   // read slot
  int32_t entry;  // directory entry at step start, or -1
};

class Engine {
 public:
  explicit Engine(const HeraldSchedConfig& config);

  // keys: (N*B, F); samples_out: (N, B).
  void Step(const int64_t* keys, int64_t* samples_out);

  const HeraldSchedTraffic& traffic() const { return traffic_; }
  const std::vector<int64_t>& list(int32_t worker, int32_t list) const {
    return lists_[worker * HERALD_SCHED_NUM_LISTS + list];
  }

  // Plan emission for the following steps (decisions do not depend on it).
  void set_emit_plans(bool emit) {
    cfg_.emit_plans = emit ? 1 : 0;
    if (!emit) {
      for (auto& l : lists_) l.clear();
    }
  }

  // Used by the allocators and policies.
  const HeraldSchedConfig& config() const { return cfg_; }

 private:
  std::vector<int64_t>& L(int32_t worker, int32_t list) {
    return lists_[worker * HERALD_SCHED_NUM_LISTS + list];
  }
  int32_t InternNew(int64_t key);  // adds a key seen for the first time
  void Allocate(int64_t* samples_out);
  void AllocateGreedy(int64_t* samples_out);
  void AllocateGrouped(int64_t* samples_out);
  void BuildWorkerKeys(const int64_t* samples);
  void PlanPs();
  void PlanHet();
  void PlanHerald();
  void EmitOccurrenceSlots();
  void Add(int32_t w, int32_t list, int64_t v) {
    if (cfg_.emit_plans) L(w, list).push_back(v);
  }

  HeraldSchedConfig cfg_;
  int64_t step_ = 0;
  int32_t n_, b_, f_;
  int64_t staging_size_;
  KeyIndexMap key_map_;
  std::vector<KeyState> keys_;
  std::vector<Directory> dirs_;
  HeraldSchedTraffic traffic_{};
  // Scratch of the current step.
  std::vector<LocalKey> local_;     // the step's unique keys
  std::vector<int32_t> occ_;        // (G, F) local key index of every occurrence
  std::vector<int32_t> pushed_;        // het: key indices pushed at this step
  std::vector<int32_t> scratch_kidx_;
  std::vector<uint64_t> scratch_hash_;  // (G, F) key table index of every occurrence
  std::vector<int32_t> occ_pos_;    // (N, B*F) position of each occurrence in its worker's list
  std::vector<int32_t> order_;      // local indices, first occurrence, worker-major
  std::vector<std::vector<WorkerKey>> wkeys_;
  std::vector<int64_t> samples_;    // (N, B)
  std::vector<std::vector<int64_t>> lists_;
};

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_ENGINE_H_
