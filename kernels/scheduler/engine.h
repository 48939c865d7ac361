// The scheduler engine: key table, step skeleton, allocators (allocate.cc) and plan policies
// (plan_ps.cc, plan_het.cc, plan_herald.cc). Mirrors herald_tf/scheduler/reference.py.
#ifndef HERALD_KERNELS_SCHEDULER_ENGINE_H_
#define HERALD_KERNELS_SCHEDULER_ENGINE_H_

#include <stdint.h>

#include <vector>

#include "kernels/scheduler/directory.h"
#include "kernels/scheduler/hash_map.h"
#include "kernels/scheduler/plan_list.h"
#include "kernels/scheduler/scheduler_api.h"
#include "kernels/scheduler/scratch_vector.h"
#include "kernels/core/table_vector.h"

namespace herald {
namespace sched {

// Per-key facts shared by all workers (32 bytes; versions stay below 2**31).
struct alignas(32) KeyState {  // never across two cache lines
  uint64_t holders = 0;  // workers whose directory holds the key
  int32_t version = 0;   // updates applied (ps, herald) or PS clock (het)
  int32_t entry = -1;    // herald: directory entry of the only holder (at most one), or -1
  int32_t slot = kPending;  // herald: cache slot of that entry (assigned at the end of a step)
  int32_t applied = 0;   // het: PS updates applied (steps with at least one push)
  int8_t owner = -1;     // worker owning it dirty, or -1 (the PS)
  bool touched = false;
};

// One unique key of the current step (dense, in order of first occurrence in the batch), with a
// snapshot of its KeyState at step start, so the step's passes read a small contiguous array
// (56 bytes).
struct LocalKey {
  int64_t key;
  uint64_t holders;      // snapshot
  uint64_t users;        // workers reading it at this step
  uint64_t alloc_users;  // workers given a sample with it so far (grouped allocator)
  int32_t kidx;
  int32_t count;         // occurrences in the global batch
  int32_t version;       // snapshot
  int32_t entry;         // snapshot (herald)
  int32_t slot;          // snapshot (herald): cache slot of `entry`
  int8_t owner;          // snapshot
  bool touched;          // snapshot
};

// One unique key of a worker's step, with what the plan passes read of its LocalKey (so they
// walk this array in order instead of the LocalKey array out of order).
struct WorkerKey {
  int64_t key;
  int32_t local;    // index into the step's LocalKey array
  int32_t slot;     // read slot
  int32_t entry;    // directory entry at step start, or -1
  int32_t kidx;     // key table index
  int32_t version;  // snapshot
  bool touched;     // snapshot
};

class Engine {
 public:
  explicit Engine(const HeraldSchedConfig& config);

  // keys: (N*B, F); samples_out: (N, B). With a region, plan list l of worker w is written at
  // region + (sum of capacity before entry w * LISTS + l) while it fits its capacity (see
  // herald_sched_step_into); without, into the lists' own storage.
  void Step(const int64_t* keys, int64_t* samples_out, int64_t* region = nullptr,
            const int64_t* capacity = nullptr /* (N, LISTS) */);

  const HeraldSchedTraffic& traffic() const { return traffic_; }
  const PlanList& list(int32_t worker, int32_t list) const {
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
  PlanList& L(int32_t worker, int32_t list) {
    return lists_[worker * HERALD_SCHED_NUM_LISTS + list];
  }
  int32_t InternNew(int64_t key) {  // adds a key seen for the first time
    const int32_t idx = static_cast<int32_t>(keys_.size());
    keys_.emplace_back();
    key_map_.Insert(key, idx);
    return idx;
  }
  void Dedup(const int64_t* keys);  // fills occ_, lkeys_, lcount_
  int32_t DedupInto(const int64_t* keys, int64_t total);  // one try; -1: ltable_ too small
  void Snapshot();                  // fills local_ from lkeys_, lcount_ and the key table
  void Allocate(int64_t* samples_out);
  void AllocateGreedy(int64_t* samples_out);
  void AllocateGrouped(int64_t* samples_out);
  // The same allocators with one byte per worker in a uint64 (allocate_lanes.cc): N <= 8 and
  // scores below 256 (F <= 63).
  bool LanesFit() const { return n_ <= 8 && f_ <= 63; }
  void AllocateGreedyLanes(int64_t* samples_out);
  void AllocateGroupedLanes(int64_t* samples_out);
  int32_t BestLane(uint64_t lanes, const int32_t* count) const;
  void FindFirsts(const int64_t* samples);
  void BuildWorkerKeys(const int64_t* samples);
  void PlanPs();
  void PlanHet();
  void PlanHerald();
  template <bool kEmit>
  void HeraldReads(int32_t worker);
  // Whether worker w's plan is written at this step.
  bool Emits(int32_t w) const {
    return cfg_.emit_plans && (cfg_.emit_worker < 0 || cfg_.emit_worker == w);
  }
  void Add(int32_t w, int32_t list, int64_t v) {
    if (Emits(w)) L(w, list).push_back(v);
  }

  HeraldSchedConfig cfg_;
  int64_t step_ = 0;
  int32_t n_, b_, f_;
  int64_t staging_size_;
  KeyIndexMap key_map_;
  TableVector<KeyState> keys_;
  std::vector<Directory> dirs_;
  HeraldSchedTraffic traffic_{};
  // Scratch of the current step.
  ScratchVector<LocalKey> local_;     // the step's unique keys
  ScratchVector<int32_t> occ_;        // (G, F) local key index of every occurrence
  std::vector<int32_t> pushed_;        // het: key indices pushed at this step
  std::vector<int32_t> ltable_;     // open addressing over the step's keys: local index or -1
                                    // (power of two, grown to 4x the most distinct keys)
  ScratchVector<int64_t> lkeys_;      // key of each local index
  ScratchVector<uint64_t> lhash_;     // key table hash of each local key
  ScratchVector<int32_t> lcount_;     // occurrences of each local key
  ScratchVector<int32_t> lplace_;     // ltable_ position of each local key (to clear it)
  ScratchVector<int32_t> lkidx_;      // key table index of each local key
  ScratchVector<int32_t> order_;    // local indices, first occurrence, worker-major
  ScratchVector<uint64_t> lusers_;  // users of each local key (FindFirsts or the lane allocator)
  ScratchVector<int32_t> lread_;    // slot the worker being built reads each local key at
  ScratchVector<int32_t> first_;    // (N, B*F): each worker's local keys, first occurrences
  std::vector<int32_t> found_;      // (N): length of each worker's list in first_
  bool firsts_ready_ = false;       // the allocator filled first_, found_ and lusers_
  ScratchVector<uint64_t> lane_score_;   // greedy lanes: score byte lanes of each local key
  struct LaneKey {                     // grouped lanes: worker masks of a local key (N <= 8)
    uint8_t users;       // workers given a sample with it so far
    uint8_t held;        // holders and owner
    uint8_t pull;        // pull cost (0, 1 or 3)
    uint8_t group_mask;  // 0xff when the key groups (2..16 occurrences), else 0
  };
  ScratchVector<LaneKey> lane_keys_;
  uint64_t spread_[256];  // spread_[m]: byte w is bit w of m
  std::vector<std::vector<WorkerKey>> wkeys_;
  std::vector<std::vector<int32_t>> private_;  // herald: positions in wkeys_[w] of private keys
  std::vector<int32_t> picked_;                // herald: rows picked by a pass
  std::vector<uint8_t> flags_;                 // herald: per local key, kFlush | kDrop
  ScratchVector<int64_t> samples_;    // (N, B)
  std::vector<PlanList> lists_;
};

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_ENGINE_H_
