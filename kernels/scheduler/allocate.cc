// Input allocators (reference: herald_tf/scheduler/allocators/*.py, same rules and tie-breaks).
#include <vector>

#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

void Engine::Allocate(int64_t* out) {
  switch (cfg_.allocation) {
    case HERALD_SCHED_ALLOC_GREEDY:
      if (LanesFit()) {
        AllocateGreedyLanes(out);
      } else {
        AllocateGreedy(out);
      }
      return;
    case HERALD_SCHED_ALLOC_GROUPED:
      if (LanesFit()) {
        AllocateGroupedLanes(out);
      } else {
        AllocateGrouped(out);
      }
      return;
    default:
      for (int64_t i = 0; i < static_cast<int64_t>(n_) * b_; ++i) out[i] = i;
  }
}

// Herald's greedy allocation over the cache snapshot: score = 2 per owned key, 1 per held key;
// highest score among workers with room, then fewer samples, then lower index.
void Engine::AllocateGreedy(int64_t* out) {
  std::vector<int64_t> score(n_);
  std::vector<int32_t> count(n_, 0);
  const int64_t g = static_cast<int64_t>(n_) * b_;
  for (int64_t i = 0; i < g; ++i) {
    for (int32_t w = 0; w < n_; ++w) score[w] = 0;
    const int32_t* row = occ_.data() + i * f_;
    for (int32_t f = 0; f < f_; ++f) {
      const LocalKey& ks = local_[row[f]];
      uint64_t h = ks.holders;
      while (h) {
        score[__builtin_ctzll(h)] += 1;
        h &= h - 1;
      }
      if (ks.owner >= 0) score[ks.owner] += ((ks.holders >> ks.owner) & 1) ? 1 : 2;
    }
    int32_t best = -1;
    for (int32_t w = 0; w < n_; ++w) {
      if (count[w] >= b_) continue;
      if (best < 0 || score[w] > score[best] ||
          (score[w] == score[best] && count[w] < count[best])) {
        best = w;
      }
    }
    out[static_cast<int64_t>(best) * b_ + count[best]++] = i;
  }
}

// Marginal-transfer greedy (grouped.py). For a key occurring 2..kGroupLimit times in the batch,
// with U = workers already given it: 0 if w in U, else (U non-empty) + pull. Any other key: pull.
// pull = 0 if owned/held by w or untouched, 3 if owned dirty elsewhere, else 1. Lowest cost among
// workers with room, then fewer samples, then lower index.
void Engine::AllocateGrouped(int64_t* out) {
  constexpr int32_t kGroupLimit = 16;
  constexpr int64_t kOwnedElsewhere = 3;
  std::vector<int64_t> cost(n_);
  std::vector<int32_t> count(n_, 0);
  const int64_t g = static_cast<int64_t>(n_) * b_;
  for (int64_t i = 0; i < g; ++i) {
    for (int32_t w = 0; w < n_; ++w) cost[w] = 0;
    const int32_t* row = occ_.data() + i * f_;
    for (int32_t f = 0; f < f_; ++f) {
      const LocalKey& ks = local_[row[f]];
      const bool grouping = ks.count > 1 && ks.count <= kGroupLimit;
      const uint64_t mask = grouping ? ks.alloc_users : 0;
      const int64_t extra = mask != 0 ? 1 : 0;
      const int64_t pull = !ks.touched ? 0 : (ks.owner >= 0 ? kOwnedElsewhere : 1);
      // Every worker pays extra + pull except: workers in mask pay 0, holders and the owner
      // outside mask pay extra. A constant for all workers does not change the choice, so only
      // the differences are accumulated (negative costs).
      uint64_t m = mask;
      while (m) {
        cost[__builtin_ctzll(m)] -= extra + pull;
        m &= m - 1;
      }
      if (pull != 0) {
        uint64_t h = ks.holders;
        if (ks.owner >= 0) h |= 1ULL << ks.owner;
        h &= ~mask;
        while (h) {
          cost[__builtin_ctzll(h)] -= pull;
          h &= h - 1;
        }
      }
    }
    int32_t best = -1;
    for (int32_t w = 0; w < n_; ++w) {
      if (count[w] >= b_) continue;
      if (best < 0 || cost[w] < cost[best] || (cost[w] == cost[best] && count[w] < count[best])) {
        best = w;
      }
    }
    out[static_cast<int64_t>(best) * b_ + count[best]++] = i;
    const uint64_t bit = 1ULL << best;
    for (int32_t f = 0; f < f_; ++f) local_[row[f]].alloc_users |= bit;
  }
}

}  // namespace sched
}  // namespace herald
