// The allocators of allocate.cc for N <= 8 workers: the per-worker scores of a sample are byte
// lanes of one uint64 (no per-worker loop per key). Same rules and tie-breaks; every lane stays
// below 256 because a key adds at most 4 (grouped) or 2 (greedy) to a lane and F <= 63.
#include <algorithm>
#include <vector>

#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

// The worker with room and the highest lane, then fewer samples, then lower index: the largest
// (lane, ~count, ~index) among workers with room, without branches.
int32_t Engine::BestLane(uint64_t lanes, const int32_t* count) const {
  uint64_t best = 0;
  for (int32_t w = 0; w < n_; ++w) {
    const uint64_t lane = (lanes >> (8 * w)) & 0xff;
    const uint64_t fewer = 0xffffffffu - static_cast<uint32_t>(count[w]);
    const uint64_t key = (lane << 40) | (fewer << 8) | static_cast<uint64_t>(255 - w);
    const uint64_t room = count[w] < b_ ? ~0ULL : 0;
    best = std::max(best, key & room);
  }
  return 255 - static_cast<int32_t>(best & 0xff);
}

// AllocateGreedy: a key adds 1 to each holder's lane and 2 to its owner's (1 if it also holds it).
void Engine::AllocateGreedyLanes(int64_t* out) {
  const size_t unique = local_.size();
  lane_score_.resize(unique);
  for (size_t l = 0; l < unique; ++l) {
    const LocalKey& lk = local_[l];
    uint64_t s = spread_[lk.holders & 0xff];
    if (lk.owner >= 0) s += spread_[1u << lk.owner] * (((lk.holders >> lk.owner) & 1) ? 1 : 2);
    lane_score_[l] = s;
  }
  int32_t count[8] = {0};
  const int64_t g = static_cast<int64_t>(n_) * b_;
  for (int64_t i = 0; i < g; ++i) {
    const int32_t* row = occ_.data() + i * f_;
    uint64_t score = 0;
    for (int32_t f = 0; f < f_; ++f) score += lane_score_[row[f]];
    const int32_t best = BestLane(score, count);
    out[static_cast<int64_t>(best) * b_ + count[best]++] = i;
  }
}

// AllocateGrouped with savings (minus the costs) in the lanes: a worker already given the key
// saves extra + pull, a holder or the owner outside them saves pull.
void Engine::AllocateGroupedLanes(int64_t* out) {
  constexpr int32_t kGroupLimit = 16;
  constexpr uint8_t kOwnedElsewhere = 3;
  const size_t unique = local_.size();
  lane_keys_.resize(unique);
  for (size_t l = 0; l < unique; ++l) {
    const LocalKey& lk = local_[l];
    LaneKey& a = lane_keys_[l];
    a.users = 0;
    a.held = static_cast<uint8_t>(lk.holders | (lk.owner >= 0 ? 1u << lk.owner : 0u));
    a.pull = !lk.touched ? 0 : (lk.owner >= 0 ? kOwnedElsewhere : 1);
    a.group_mask = (lk.count > 1 && lk.count <= kGroupLimit) ? 0xff : 0;
  }
  int32_t count[8] = {0};
  const size_t per_worker = static_cast<size_t>(b_) * f_;
  first_.resize(per_worker * n_);
  for (int32_t w = 0; w < n_; ++w) found_[w] = 0;
  const int64_t g = static_cast<int64_t>(n_) * b_;
  for (int64_t i = 0; i < g; ++i) {
    const int32_t* row = occ_.data() + i * f_;
    uint64_t saving = 0;
    for (int32_t f = 0; f < f_; ++f) {
      const LaneKey& a = lane_keys_[row[f]];
      const uint32_t mask = a.users & a.group_mask;
      const uint64_t extra_pull = (mask != 0 ? 1 : 0) + a.pull;
      saving += spread_[mask] * extra_pull + spread_[a.held & ~mask & 0xff] * a.pull;
    }
    const int32_t best = BestLane(saving, count);
    out[static_cast<int64_t>(best) * b_ + count[best]++] = i;
    // The worker's first occurrences, for BuildWorkerKeys (FindFirsts' work, done here).
    const uint8_t bit = static_cast<uint8_t>(1u << best);
    int32_t* first = first_.data() + per_worker * best;
    int32_t found = found_[best];
    for (int32_t f = 0; f < f_; ++f) {
      LaneKey& a = lane_keys_[row[f]];
      first[found] = row[f];
      found += ((a.users >> best) & 1) ^ 1;
      a.users |= bit;
    }
    found_[best] = found;
  }
  lusers_.resize(unique);
  for (size_t l = 0; l < unique; ++l) lusers_[l] = lane_keys_[l].users;
  firsts_ready_ = true;
}

}  // namespace sched
}  // namespace herald
