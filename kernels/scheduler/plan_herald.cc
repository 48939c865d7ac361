// Policy `herald` (reference: herald_tf/scheduler/policies/herald.py): the exact plan of
// DESIGN §3. Dirty rows are flushed before a step where another worker reads them or when
// evicted; private keys are applied locally by their user (who then owns them); shared keys are
// pushed by all users and applied once by the PS; stale copies are dropped.
#include <vector>

#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

namespace {
constexpr size_t kAhead = 8;  // prefetch distance of the loops below
}  // namespace

void Engine::PlanHerald() {
  const size_t unique = order_.size();
  // 1. Flush dirty rows that another worker reads at this step.
  for (size_t i = 0; i < unique; ++i) {
    if (i + kAhead < unique) __builtin_prefetch(&keys_[order_[i + kAhead]]);
    KeyState& ks = keys_[order_[i]];
    if (ks.owner >= 0 && ks.users != (1ULL << ks.owner)) {
      Directory& dir = dirs_[ks.owner];
      DirEntry& d = dir.at(dir.Find(ks.key));
      Add(ks.owner, HERALD_SCHED_FLUSH_KEYS, ks.key);
      Add(ks.owner, HERALD_SCHED_FLUSH_SLOTS, d.slot);
      ++traffic_.flush_rows;
      d.dirty = false;
      ks.owner = -1;
    }
  }
  // 2. Pull what is not held (held copies are always usable), initialise what is untouched.
  // 3a. After the backward pass: local update of private keys, push of shared ones.
  for (int32_t w = 0; w < n_; ++w) {
    const uint64_t bit = 1ULL << w;
    const std::vector<WorkerKey>& wk = wkeys_[w];
    for (size_t i = 0; i < wk.size(); ++i) {
      if (i + kAhead < wk.size()) __builtin_prefetch(&keys_[wk[i + kAhead].kidx]);
      const WorkerKey& x = wk[i];
      const KeyState& ks = keys_[x.kidx];
      if (x.entry < 0) {
        if (ks.touched) {
          Add(w, HERALD_SCHED_PULL_KEYS, ks.key);
          Add(w, HERALD_SCHED_PULL_SLOTS, x.slot);
          Add(w, HERALD_SCHED_PULL_VERSIONS, ks.version);
          ++traffic_.pull_rows;
        } else {
          Add(w, HERALD_SCHED_INIT_KEYS, ks.key);
          Add(w, HERALD_SCHED_INIT_SLOTS, x.slot);
        }
      }
      if (ks.users == bit) {
        Add(w, HERALD_SCHED_LOCAL_KEYS, ks.key);
        Add(w, HERALD_SCHED_LOCAL_SLOTS, x.slot);
      } else {
        Add(w, HERALD_SCHED_PUSH_KEYS, ks.key);
        ++traffic_.push_rows;
      }
    }
  }
  // 3b. Per key: new owner, stale copies dropped, version.
  for (size_t i = 0; i < unique; ++i) {
    if (i + kAhead < unique) __builtin_prefetch(&keys_[order_[i + kAhead]]);
    KeyState& ks = keys_[order_[i]];
    const bool is_private = (ks.users & (ks.users - 1)) == 0;
    const uint64_t keep = is_private ? ks.users : 0;
    ks.owner = is_private ? __builtin_ctzll(ks.users) : -1;
    uint64_t stale = ks.holders & ~keep;
    while (stale) {
      const int32_t w = __builtin_ctzll(stale);
      stale &= stale - 1;
      Directory& dir = dirs_[w];
      dir.Remove(dir.Find(ks.key));
      ks.holders &= ~(1ULL << w);
      Add(w, HERALD_SCHED_DROP_KEYS, ks.key);
    }
    ks.version += 1;
    ks.touched = true;
  }
  // 4. Private keys enter their user's directory (dirty); evict to capacity; write back.
  for (int32_t w = 0; w < n_; ++w) {
    Directory& dir = dirs_[w];
    const uint64_t bit = 1ULL << w;
    const std::vector<WorkerKey>& wk = wkeys_[w];
    for (size_t i = 0; i < wk.size(); ++i) {
      if (i + kAhead < wk.size()) {
        const WorkerKey& y = wk[i + kAhead];
        if (y.entry >= 0) {
          dir.PrefetchEntry(y.entry);
        } else {
          dir.PrefetchKey(keys_[y.kidx].key);
        }
      }
      const WorkerKey& x = wk[i];
      KeyState& ks = keys_[x.kidx];
      if (ks.users != bit) continue;
      // A private key's entry survived step 3 (only other workers' copies are dropped).
      dir.at(dir.TouchKnown(x.entry, ks.key, x.kidx, step_, x.slot)).dirty = true;
      ks.holders |= bit;
    }
    dir.EvictToCapacity([&](const DirEntry& d) {
      KeyState& ks = keys_[d.kidx];
      ks.holders &= ~bit;
      if (d.slot >= 0) Add(w, HERALD_SCHED_DROP_KEYS, d.key);
      if (d.dirty) {
        Add(w, HERALD_SCHED_WRITEBACK_KEYS, d.key);
        Add(w, HERALD_SCHED_WRITEBACK_SLOTS, d.slot >= 0 ? d.slot : d.staging);
        ++traffic_.flush_rows;
        ks.owner = -1;
      }
    });
    dir.AssignPending([&](const DirEntry& d) {
      Add(w, HERALD_SCHED_INSTALL_KEYS, d.key);
      Add(w, HERALD_SCHED_INSTALL_SRC, d.staging);
      Add(w, HERALD_SCHED_INSTALL_DST, d.slot);
    });
  }
}

}  // namespace sched
}  // namespace herald
