// Policy `het` (reference: herald_tf/scheduler/policies/het.py): HET's cache with staleness
// bound b. A copy is usable while PS clock <= copy version + b; users update their copy and push
// once max(b, 1) updates are pending; evicting a copy with pending updates pushes them.
#include <algorithm>
#include <vector>

#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

void Engine::PlanHet() {
  const int64_t bound = cfg_.bound;
  const int32_t push_after = std::max<int32_t>(cfg_.bound, 1);
  std::vector<std::vector<int64_t>> new_version(n_);
  std::vector<std::vector<int32_t>> new_pending(n_);
  pushed_.clear();
  for (int32_t w = 0; w < n_; ++w) {
    Directory& dir = dirs_[w];
    std::vector<int64_t>& nv = new_version[w];
    nv.resize(wkeys_[w].size());
    for (size_t j = 0; j < wkeys_[w].size(); ++j) {
      const WorkerKey& x = wkeys_[w][j];
      const LocalKey& ks = local_[x.local];
      const int64_t clock = ks.version;
      if (x.entry >= 0 && clock <= dir.at(x.entry).version + bound) {
        nv[j] = dir.at(x.entry).version + 1;
      } else if (!ks.touched) {
        Add(w, HERALD_SCHED_INIT_KEYS, ks.key);
        Add(w, HERALD_SCHED_INIT_SLOTS, x.slot);
        nv[j] = clock + 1;
      } else {
        Add(w, HERALD_SCHED_PULL_KEYS, ks.key);
        Add(w, HERALD_SCHED_PULL_SLOTS, x.slot);
        Add(w, HERALD_SCHED_PULL_VERSIONS, keys_[ks.kidx].applied);
        ++traffic_.pull_rows;
        ++traffic_.pull_state_rows;
        nv[j] = clock + 1;
      }
    }
  }
  for (int32_t w = 0; w < n_; ++w) {
    Directory& dir = dirs_[w];
    std::vector<int32_t>& np = new_pending[w];
    np.resize(wkeys_[w].size());
    for (size_t j = 0; j < wkeys_[w].size(); ++j) {
      const WorkerKey& x = wkeys_[w][j];
      const LocalKey& lk = local_[x.local];
      KeyState& ks = keys_[lk.kidx];
      Add(w, HERALD_SCHED_LOCAL_KEYS, lk.key);
      Add(w, HERALD_SCHED_LOCAL_SLOTS, x.slot);
      int32_t pending = (x.entry >= 0 ? dir.at(x.entry).pending_updates : 0) + 1;
      if (pending >= push_after) {
        Add(w, HERALD_SCHED_PUSH_KEYS, lk.key);
        ++traffic_.push_rows;
        pushed_.push_back(lk.kidx);
        ks.version += pending;
        pending = 0;
      }
      np[j] = pending;
    }
  }
  for (int32_t l : order_) keys_[local_[l].kidx].touched = true;
  for (int32_t w = 0; w < n_; ++w) {
    Directory& dir = dirs_[w];
    const uint64_t bit = 1ULL << w;
    for (size_t j = 0; j < wkeys_[w].size(); ++j) {
      const WorkerKey& x = wkeys_[w][j];
      const LocalKey& lk = local_[x.local];
      KeyState& ks = keys_[lk.kidx];
      DirEntry& d = dir.at(dir.TouchKnown(x.entry, lk.key, lk.kidx, step_, x.slot));
      d.version = new_version[w][j];
      d.pending_updates = new_pending[w][j];
      d.dirty = d.pending_updates > 0;
      ks.holders |= bit;
    }
    dir.EvictToCapacity([&](const DirEntry& d) {
      KeyState& ks = keys_[d.kidx];
      ks.holders &= ~bit;
      if (d.slot >= 0) Add(w, HERALD_SCHED_DROP_KEYS, d.key);
      if (d.pending_updates > 0) {
        Add(w, HERALD_SCHED_WRITEBACK_KEYS, d.key);
        Add(w, HERALD_SCHED_WRITEBACK_SLOTS, d.slot >= 0 ? d.slot : d.staging);
        ++traffic_.push_rows;
        pushed_.push_back(d.kidx);
        ks.version += d.pending_updates;
      }
    });
    dir.AssignPending([&](const DirEntry& d) {
      Add(w, HERALD_SCHED_INSTALL_KEYS, d.key);
      Add(w, HERALD_SCHED_INSTALL_SRC, d.staging);
      Add(w, HERALD_SCHED_INSTALL_DST, d.slot);
    });
  }
  // The PS applies one update per key and step, whatever the number of pushes.
  std::sort(pushed_.begin(), pushed_.end());
  pushed_.erase(std::unique(pushed_.begin(), pushed_.end()), pushed_.end());
  for (int32_t kidx : pushed_) keys_[kidx].applied += 1;
}

}  // namespace sched
}  // namespace herald
