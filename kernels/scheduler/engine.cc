#include "kernels/scheduler/engine.h"

#include <algorithm>

namespace herald {
namespace sched {

namespace {
// Prefetch distance of the loops below, in keys: a key's work is short next to a miss in the
// key map or key table (with its page walk), so the hint must go out many keys early.
constexpr int64_t kAhead = 48;

// Keys the key table is sized for at the start. It holds every key seen, so once the caches
// are full it holds at least the N * C keys they can hold: growing to that size step by step
// would stall the scheduler for a rehash of the key map every doubling (tens of milliseconds
// at a million keys). Bounded, so a huge cache does not reserve gigabytes up front.
int64_t InitialKeys(const HeraldSchedConfig& c) {
  return std::clamp<int64_t>(c.num_workers * c.cache_capacity, 1 << 16, 1 << 21);
}
}  // namespace

Engine::Engine(const HeraldSchedConfig& config)
    : cfg_(config),
      n_(config.num_workers),
      b_(config.batch_size),
      f_(config.num_fields),
      staging_size_(static_cast<int64_t>(config.num_fields) * config.batch_size),
      key_map_(InitialKeys(config)) {
  dirs_.reserve(n_);
  for (int32_t w = 0; w < n_; ++w) {
    dirs_.emplace_back(cfg_.cache_capacity, cfg_.eviction == HERALD_SCHED_EVICT_LFU,
                       /*keyed=*/cfg_.policy != HERALD_SCHED_POLICY_HERALD);
  }
  wkeys_.resize(n_);
  private_.resize(n_);
  found_.resize(n_);
  lists_.resize(static_cast<size_t>(n_) * HERALD_SCHED_NUM_LISTS);
  keys_.reserve(InitialKeys(config));
  for (uint32_t m = 0; m < 256; ++m) {
    spread_[m] = 0;
    for (int32_t w = 0; w < 8; ++w) spread_[m] |= static_cast<uint64_t>((m >> w) & 1) << (8 * w);
  }
}

void Engine::Step(const int64_t* keys, int64_t* samples_out, int64_t* region,
                  const int64_t* capacity) {
  const int64_t g = static_cast<int64_t>(n_) * b_;
  Dedup(keys);
  Snapshot();
  if (region != nullptr && cfg_.emit_plans) {
    int64_t* at = region;
    for (size_t i = 0; i < lists_.size(); ++i) {
      lists_[i].Attach(at, static_cast<size_t>(capacity[i]));
      at += capacity[i];
    }
  } else {
    for (auto& l : lists_) l.Detach();
  }
  samples_.resize(g);
  Allocate(samples_.data());
  BuildWorkerKeys(samples_.data());
  switch (cfg_.policy) {
    case HERALD_SCHED_POLICY_PS:
      PlanPs();
      break;
    case HERALD_SCHED_POLICY_HET:
      PlanHet();
      break;
    default:
      PlanHerald();
      break;
  }
  if (region != nullptr && cfg_.emit_plans) {
    for (size_t i = 0; i < lists_.size(); ++i) lists_[i].Settle(static_cast<size_t>(capacity[i]));
  }
  for (int64_t i = 0; i < g; ++i) samples_out[i] = samples_[i];
  traffic_.samples += g;
  traffic_.steps += 1;
  ++step_;
}

// Numbers the step's distinct keys in order of first occurrence with a small table (the batch's
// keys repeat a lot), so only distinct keys visit the large key table. The table is sized for
// the distinct keys of earlier steps, not for the worst case (every key distinct), so it stays
// in L2; a step with more distinct keys than it takes starts over with a larger one.
void Engine::Dedup(const int64_t* keys) {
  const int64_t total = static_cast<int64_t>(n_) * b_ * f_;
  // At most `total` distinct keys: write by index, shrink at the end.
  occ_.resize(total);
  lkeys_.resize(total);
  lcount_.resize(total);
  lplace_.resize(total);
  if (ltable_.empty()) ltable_.assign(4096, -1);
  int32_t unique;
  while ((unique = DedupInto(keys, total)) < 0) ltable_.assign(2 * ltable_.size(), -1);
  lkeys_.resize(unique);
  lhash_.resize(unique);
  for (int32_t l = 0; l < unique; ++l) lhash_[l] = KeyIndexMap::HashOf(lkeys_[l]);
  lcount_.resize(unique);
  lplace_.resize(unique);
}

// One attempt of Dedup with the current table (all -1, and so again on return): the number of
// distinct keys, or -1 when they would fill more than a quarter of it (fewer collisions).
int32_t Engine::DedupInto(const int64_t* keys, int64_t total) {
  const uint64_t cap = ltable_.size();
  const uint64_t mask = cap - 1;
  const int32_t limit = static_cast<int32_t>(std::min<uint64_t>(cap / 4, total));
  // The small table takes a multiplicative hash (top bits); the key table's stronger hash is
  // computed for distinct keys only.
  const int shift = 64 - __builtin_ctzll(cap);
  const auto home = [shift](int64_t key) {
    return (static_cast<uint64_t>(key) * 0x9e3779b97f4a7c15ULL) >> shift;
  };
  int32_t* table = ltable_.data();
  int32_t* occ = occ_.data();
  int64_t* lkeys = lkeys_.data();
  int32_t* lcount = lcount_.data();
  int32_t* lplace = lplace_.data();
  int32_t unique = 0;
  const auto clear = [&]() {
    for (int32_t j = 0; j < unique; ++j) table[lplace[j]] = -1;
  };
  for (int64_t i = 0; i < total; ++i) {
    __builtin_prefetch(&table[home(keys[std::min(i + kAhead, total - 1)])]);
    const int64_t key = keys[i];
    uint64_t p = home(key);
    int32_t l;
    while (true) {
      l = table[p];
      if (l < 0) {
        if (unique == limit) {
          clear();
          return -1;
        }
        l = unique++;
        table[p] = l;
        lkeys[l] = key;
        lcount[l] = 0;
        lplace[l] = static_cast<int32_t>(p);
        break;
      }
      if (lkeys[l] == key) break;
      p = (p + 1) & mask;
    }
    occ[i] = l;
    ++lcount[l];
  }
  clear();
  return unique;
}

// Finds (or adds) each distinct key in the key table and snapshots its state into local_.
void Engine::Snapshot() {
  const int64_t unique = static_cast<int64_t>(lkeys_.size());
  lkidx_.resize(unique);
  for (int64_t l = 0; l < unique; ++l) {
    if (l + kAhead < unique) key_map_.PrefetchHashed(lhash_[l + kAhead]);
    const int32_t found = key_map_.FindHashed(lkeys_[l], lhash_[l]);
    lkidx_[l] = found >= 0 ? found : InternNew(lkeys_[l]);
  }
  local_.resize(unique);
  for (int64_t l = 0; l < unique; ++l) {
    if (l + kAhead < unique) __builtin_prefetch(&keys_[lkidx_[l + kAhead]]);
    const KeyState& ks = keys_[lkidx_[l]];
    local_[l] = LocalKey{lkeys_[l],  ks.holders, 0,       0,        lkidx_[l], lcount_[l],
                         ks.version, ks.entry,   ks.slot, ks.owner, ks.touched};
  }
}

// For each worker, its local keys in order of first occurrence (first_, found_) and every local
// key's users (lusers_), without data-dependent branches. The grouped allocator for N <= 8 fills
// them while it allocates (then firsts_ready_ is set).
void Engine::FindFirsts(const int64_t* samples) {
  const size_t per_worker = static_cast<size_t>(b_) * f_;
  lusers_.assign(local_.size(), 0);
  first_.resize(per_worker * n_);
  uint64_t* users = lusers_.data();
  for (int32_t w = 0; w < n_; ++w) {
    const uint64_t bit = 1ULL << w;
    int32_t* first = first_.data() + per_worker * w;
    int32_t found = 0;
    for (int32_t j = 0; j < b_; ++j) {
      const int32_t* row = occ_.data() + samples[static_cast<int64_t>(w) * b_ + j] * f_;
      for (int32_t f = 0; f < f_; ++f) {
        const int32_t l = row[f];
        const uint64_t u = users[l];
        users[l] = u | bit;
        first[found] = l;
        found += static_cast<int32_t>(((u >> w) & 1) ^ 1);  // arithmetic: compilers branch on ?:
      }
    }
    found_[w] = found;
  }
}

// Per worker: its distinct keys in order of first occurrence and the slot it reads each at; the
// step's distinct keys in worker-major order of first occurrence (order_).
void Engine::BuildWorkerKeys(const int64_t* samples) {
  if (!firsts_ready_) FindFirsts(samples);
  firsts_ready_ = false;
  const int64_t base = cfg_.cache_capacity + (step_ % cfg_.staging_regions) * staging_size_;
  const bool herald = cfg_.policy == HERALD_SCHED_POLICY_HERALD;
  const size_t unique = local_.size();
  const size_t per_worker = static_cast<size_t>(b_) * f_;
  lread_.resize(unique);
  order_.resize(unique + 1);  // the branch-free writes below may write one past the last key
  const uint64_t* users = lusers_.data();
  int32_t ordered = 0;
  for (int32_t w = 0; w < n_; ++w) {
    const int32_t* first = first_.data() + per_worker * w;
    const int32_t found = found_[w];
    // A key is new to the step at the first worker using it.
    const uint64_t lower = (1ULL << w) - 1;
    for (int32_t i = 0; i < found; ++i) {
      order_[ordered] = first[i];
      ordered += static_cast<int32_t>((users[first[i]] & lower) == 0);
    }
    std::vector<WorkerKey>& wk = wkeys_[w];
    wk.resize(found);
    Directory& dir = dirs_[w];
    int32_t staged = 0;
    for (int32_t i = 0; i < found; ++i) {
      const int32_t l = first[i];
      const LocalKey& lk = local_[l];
      int32_t e = -1;
      if ((lk.holders >> w) & 1) e = herald ? lk.entry : dir.Find(lk.key);
      // Herald's key table knows the slot of the only copy; het asks the directory.
      const int32_t slot = e < 0 ? static_cast<int32_t>(base + staged++)
                                 : (herald ? lk.slot : dir.at(e).slot);
      lread_[l] = slot;
      wk[i] = WorkerKey{lk.key, l, slot, e, lk.kidx, lk.version, lk.touched};
    }
    if (Emits(w)) {
      PlanList& o = L(w, HERALD_SCHED_OCCURRENCE_SLOTS);  // (B, F)
      o.resize(per_worker);
      for (int32_t j = 0; j < b_; ++j) {
        const int32_t* row = occ_.data() + samples[static_cast<int64_t>(w) * b_ + j] * f_;
        int64_t* out = o.data() + static_cast<size_t>(j) * f_;
        for (int32_t f = 0; f < f_; ++f) out[f] = lread_[row[f]];
      }
      PlanList& k = L(w, HERALD_SCHED_KEYS);
      PlanList& s = L(w, HERALD_SCHED_KEY_SLOTS);
      k.resize(wk.size());
      s.resize(wk.size());
      for (size_t i = 0; i < wk.size(); ++i) {
        k[i] = wk[i].key;
        s[i] = wk[i].slot;
      }
    }
  }
  order_.resize(ordered);
  for (size_t l = 0; l < unique; ++l) local_[l].users = users[l];
}

}  // namespace sched
}  // namespace herald
