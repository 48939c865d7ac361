// Policy `ps` (reference: herald_tf/scheduler/policies/ps.py): pull every unique key read (or
// initialise it on first touch), push every gradient, hold nothing between steps.
#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

void Engine::PlanPs() {
  for (int32_t w = 0; w < n_; ++w) {
    for (const WorkerKey& x : wkeys_[w]) {
      const LocalKey& ks = local_[x.local];
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
  }
  for (int32_t w = 0; w < n_; ++w) {
    for (const WorkerKey& x : wkeys_[w]) Add(w, HERALD_SCHED_PUSH_KEYS, local_[x.local].key);
    traffic_.push_rows += static_cast<int64_t>(wkeys_[w].size());
  }
  for (int32_t l : order_) {
    KeyState& ks = keys_[local_[l].kidx];
    ks.version += 1;
    ks.touched = true;
  }
}

}  // namespace sched
}  // namespace herald
