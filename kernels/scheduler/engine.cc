#include "kernels/scheduler/engine.h"

namespace herald {
namespace sched {

Engine::Engine(const HeraldSchedConfig& config)
    : cfg_(config),
      n_(config.num_workers),
      b_(config.batch_size),
      f_(config.num_fields),
      staging_size_(static_cast<int64_t>(config.num_fields) * config.batch_size),
      key_map_(1 << 16) {
  dirs_.reserve(n_);
  for (int32_t w = 0; w < n_; ++w) {
    dirs_.emplace_back(cfg_.cache_capacity, cfg_.eviction == HERALD_SCHED_EVICT_LFU);
  }
  wkeys_.resize(n_);
  lists_.resize(static_cast<size_t>(n_) * HERALD_SCHED_NUM_LISTS);
  keys_.reserve(1 << 16);
}

int32_t Engine::InternNew(int64_t key) {
  const int32_t idx = static_cast<int32_t>(keys_.size());
  keys_.emplace_back();
  keys_.back().key = key;
  key_map_.Insert(key, idx);
  return idx;
}

void Engine::Step(const int64_t* keys, int64_t* samples_out) {
  const int64_t g = static_cast<int64_t>(n_) * b_;
  const int64_t total = g * f_;
  constexpr int64_t kAhead = 16;
  occ_.resize(total);
  std::vector<int32_t>& kidx = scratch_kidx_;
  kidx.resize(total);
  std::vector<uint64_t>& hashes = scratch_hash_;
  hashes.resize(total);
  for (int64_t i = 0; i < total; ++i) hashes[i] = KeyIndexMap::HashOf(keys[i]);
  for (int64_t i = 0; i < total; ++i) {
    if (i + kAhead < total) key_map_.PrefetchHashed(hashes[i + kAhead]);
    const int32_t found = key_map_.FindHashed(keys[i], hashes[i]);
    kidx[i] = found >= 0 ? found : InternNew(keys[i]);
  }
  const int32_t stamp = static_cast<int32_t>(step_ & 0x7fffffff);
  local_.clear();
  for (int64_t i = 0; i < total; ++i) {
    if (i + kAhead < total) __builtin_prefetch(&keys_[kidx[i + kAhead]]);
    KeyState& ks = keys_[kidx[i]];
    if (ks.stamp != stamp) {
      ks.stamp = stamp;
      ks.local = static_cast<int32_t>(local_.size());
      local_.push_back(LocalKey{ks.key, ks.holders, 0, 0, kidx[i], 0, ks.version, 0, ks.entry,
                                ks.owner, ks.touched});
    }
    occ_[i] = ks.local;
    ++local_[ks.local].count;
  }
  for (auto& l : lists_) l.clear();
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
  if (cfg_.emit_plans) EmitOccurrenceSlots();
  for (int64_t i = 0; i < g; ++i) samples_out[i] = samples_[i];
  traffic_.samples += g;
  traffic_.steps += 1;
  ++step_;
}

void Engine::BuildWorkerKeys(const int64_t* samples) {
  order_.clear();
  const int64_t base = cfg_.cache_capacity + (step_ % cfg_.staging_regions) * staging_size_;
  occ_pos_.resize(static_cast<size_t>(n_) * b_ * f_);
  for (int32_t w = 0; w < n_; ++w) {
    std::vector<WorkerKey>& wk = wkeys_[w];
    wk.clear();
    const uint64_t bit = 1ULL << w;
    Directory& dir = dirs_[w];
    int32_t staged = 0;
    const bool herald = cfg_.policy == HERALD_SCHED_POLICY_HERALD;
    int32_t* pos_out = occ_pos_.data() + static_cast<size_t>(w) * b_ * f_;
    for (int32_t j = 0; j < b_; ++j) {
      if (herald && j + 2 < b_) {  // the directory entries of held rows, for their slots
        const int32_t* ahead = occ_.data() + samples[static_cast<int64_t>(w) * b_ + j + 2] * f_;
        for (int32_t f = 0; f < f_; ++f) {
          const LocalKey& la = local_[ahead[f]];
          if ((la.holders >> w) & 1) dir.PrefetchEntry(la.entry);
        }
      }
      const int32_t* row = occ_.data() + samples[static_cast<int64_t>(w) * b_ + j] * f_;
      for (int32_t f = 0; f < f_; ++f) {
        LocalKey& lk = local_[row[f]];
        if (!(lk.users & bit)) {
          if (lk.users == 0) order_.push_back(row[f]);
          lk.users |= bit;
          lk.pos = static_cast<int32_t>(wk.size());
          int32_t e = -1;
          if ((lk.holders >> w) & 1) e = herald ? lk.entry : dir.Find(lk.key);
          int32_t slot = e >= 0 ? dir.at(e).slot : static_cast<int32_t>(base + staged++);
          wk.push_back(WorkerKey{row[f], slot, e});
        }
        pos_out[j * f_ + f] = lk.pos;
      }
    }
    if (cfg_.emit_plans) {
      std::vector<int64_t>& k = L(w, HERALD_SCHED_KEYS);
      std::vector<int64_t>& s = L(w, HERALD_SCHED_KEY_SLOTS);
      k.reserve(wk.size());
      s.reserve(wk.size());
      for (const WorkerKey& x : wk) {
        k.push_back(local_[x.local].key);
        s.push_back(x.slot);
      }
    }
  }
}

void Engine::EmitOccurrenceSlots() {
  for (int32_t w = 0; w < n_; ++w) {
    std::vector<int64_t>& out = L(w, HERALD_SCHED_OCCURRENCE_SLOTS);
    const int32_t* pos = occ_pos_.data() + static_cast<size_t>(w) * b_ * f_;
    const std::vector<WorkerKey>& wk = wkeys_[w];
    out.resize(static_cast<size_t>(b_) * f_);
    for (size_t i = 0; i < out.size(); ++i) out[i] = wk[pos[i]].slot;
  }
}

}  // namespace sched
}  // namespace herald
