// The per-worker cache directory: key -> cache slot, LRU/LFU eviction with total orders, dirty
// state, pending rows (in staging slots until the step's evictions are done). The reference is
// herald_tf/scheduler/cache_directory.py; both must make the same decisions.
#ifndef HERALD_KERNELS_SCHEDULER_DIRECTORY_H_
#define HERALD_KERNELS_SCHEDULER_DIRECTORY_H_

#include <stdint.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <utility>
#include <queue>
#include <tuple>
#include <vector>

#include "kernels/core/table_vector.h"
#include "kernels/scheduler/hash_map.h"

namespace herald {
namespace sched {

constexpr int32_t kPending = -1;

struct alignas(64) DirEntry {  // one cache line each
  int64_t key = 0;
  int64_t last_step = 0;
  int64_t version = 0;       // het: PS clock at pull + local updates
  int32_t kidx = -1;         // index of the key in the scheduler's key table
  int32_t slot = kPending;   // cache slot, or kPending until assigned
  int32_t staging = -1;      // staging slot of the step that inserted the row
  int32_t freq = 0;          // steps used since insertion
  int32_t pending_updates = 0;  // het: local updates not pushed yet
  int32_t gpos = -1;         // LRU: position of its item in its step group
  bool dirty = false;
  bool live = false;
};

class Directory {
 public:
  // keyed: whether the directory keeps its own key -> entry map (Find, Touch). The herald policy
  // holds at most one copy of a row and finds it through the engine's key table, so it does not
  // need one: then Find and Touch must not be called, and TouchKnown(-1, ...) inserts a key the
  // caller knows to be absent.
  Directory(int64_t capacity, bool lfu, bool keyed);

  int64_t size() const { return size_; }
  int64_t capacity() const { return capacity_; }

  // Entry index of `key`, or -1 (keyed directories only).
  int32_t Find(int64_t key) const { return map_.Find(key); }
  DirEntry& at(int32_t e) { return entries_[e]; }
  const DirEntry& at(int32_t e) const { return entries_[e]; }

  // Cache hint for loops over many entries: entry `e` (any e, negative ones ignored).
  HERALD_PREFETCH_HELPER void PrefetchEntry(int32_t e) const {
    __builtin_prefetch(entries_.data() + (e < 0 ? 0 : e));
  }
  // Cache hint for the entry that the j-th insertion from now takes (a recycled entry is
  // anywhere in the table; appended ones are in sequence and need none). Exact while nothing
  // is removed in between.
  HERALD_PREFETCH_HELPER void PrefetchInsertion(size_t j) const {
    if (j < free_entries_.size()) PrefetchEntry(free_entries_[free_entries_.size() - 1 - j]);
  }

  // Marks `key` used at `step`, inserting it pending at `staging` if absent; returns its entry.
  int32_t Touch(int64_t key, int32_t kidx, int64_t step, int32_t staging);

  // Touch for a key known to be absent (no lookup) or known to be entry `e` (e >= 0).
  int32_t TouchKnown(int32_t e, int64_t key, int32_t kidx, int64_t step, int32_t staging);

  // Removes entry `e` and frees its slot.
  void Remove(int32_t e);

  // Evicts in eviction order until at most capacity rows remain; calls on_victim(entry) for
  // each victim before freeing it (the entry stays readable during the call).
  template <typename F>
  void EvictToCapacity(F on_victim) {
    while (size() > capacity_) {
      int32_t e = lfu_ ? NextLfuVictim() : NextLruVictim();
      on_victim(entries_[e]);
      Remove(e);
    }
  }

  // Gives each surviving pending row a cache slot, in insertion order:
  // on_install(entry) after entry.slot is set.
  template <typename F>
  void AssignPending(F on_install) {
    for (const auto& p : pending_) {
      DirEntry& d = entries_[p.first];
      if (!d.live || d.key != p.second || d.slot != kPending) continue;
      d.slot = free_slots_.back();
      free_slots_.pop_back();
      on_install(d);
    }
    pending_.clear();
  }

 private:
  // The entries last used at one step. An entry that is used again or removed leaves a stale
  // item behind (see Linked) rather than writing a mark at a random place of the group; stale
  // items are dropped when the group is compacted or evicted from.
  struct Group {
    std::vector<int32_t> items;  // entry indices
    int64_t step = 0;            // the step its entries were last used at
    size_t cursor = 0;           // eviction cursor once sorted
    int64_t live = 0;            // items that are not stale
    bool sorted = false;
  };
  using LfuItem = std::tuple<int32_t, int64_t, int64_t, int32_t>;  // freq, step, key, entry

  int32_t NewEntry();
  Group& GroupOf(int64_t step);
  // Whether items[i] of `g` is current: its entry is live, last used at g's step, at position i.
  bool Linked(const Group& g, size_t i) const {
    const DirEntry& d = entries_[g.items[i]];
    return d.live && d.last_step == g.step && d.gpos == static_cast<int32_t>(i);
  }
  void Unlink(int64_t step);  // after an entry last used at `step` moved on or was removed
  void Compact(Group& g);
  int32_t NextLruVictim();
  int32_t NextLfuVictim();
  void PushLfu(const DirEntry& d, int32_t e);

  int64_t capacity_;
  bool lfu_;
  bool keyed_;
  int64_t size_ = 0;                                    // live entries
  KeyIndexMap map_;                                     // key -> entry when keyed_
  TableVector<DirEntry> entries_;
  std::vector<int32_t> free_entries_;
  std::vector<int32_t> free_slots_;                     // stack: back() is reused first
  std::vector<std::pair<int32_t, int64_t>> pending_;   // (entry, key) in insertion order
  std::deque<Group> groups_;                            // LRU: groups_[i] holds step base_step_+i
  int64_t base_step_ = 0;
  int64_t cached_step_ = -1;         // GroupOf(cached_step_) is *cached_group_
  Group* cached_group_ = nullptr;
  std::priority_queue<LfuItem, std::vector<LfuItem>, std::greater<LfuItem>> lfu_heap_;
  std::vector<std::pair<int64_t, int32_t>> sort_scratch_;  // (key, entry) of a group to sort
};

// The per-key operations, here so that the plan loops can inline them.

inline int32_t Directory::NewEntry() {
  if (!free_entries_.empty()) {
    int32_t e = free_entries_.back();
    free_entries_.pop_back();
    return e;
  }
  entries_.emplace_back();
  return static_cast<int32_t>(entries_.size() - 1);
}

inline Directory::Group& Directory::GroupOf(int64_t step) {
  if (step == cached_step_) return *cached_group_;
  // Drop leading groups whose rows all moved on (keeps memory bounded when nothing is evicted).
  while (groups_.size() > 1 && groups_.front().live == 0) {
    groups_.pop_front();
    ++base_step_;
  }
  if (groups_.empty()) base_step_ = step;
  while (base_step_ + static_cast<int64_t>(groups_.size()) <= step) {
    groups_.emplace_back();
    groups_.back().step = base_step_ + static_cast<int64_t>(groups_.size()) - 1;
  }
  // References to deque elements survive push_back and pop_front of other elements.
  cached_step_ = step;
  cached_group_ = &groups_[step - base_step_];
  return *cached_group_;
}

inline void Directory::Unlink(int64_t step) {
  if (lfu_) return;  // stale heap items are skipped lazily
  Group& g = groups_[step - base_step_];
  --g.live;
  if (g.items.size() > 64 && g.live * 4 < static_cast<int64_t>(g.items.size())) Compact(g);
}

inline int32_t Directory::TouchKnown(int32_t e, int64_t key, int32_t kidx, int64_t step,
                                     int32_t staging) {
  if (e < 0) {
    e = NewEntry();
    DirEntry& d = entries_[e];
    d = DirEntry();
    d.key = key;
    d.kidx = kidx;
    d.last_step = step;
    d.freq = 1;
    d.staging = staging;
    d.live = true;
    if (keyed_) map_.Insert(key, e);
    ++size_;
    pending_.emplace_back(e, key);
  } else {
    DirEntry& d = entries_[e];
    if (d.last_step == step) return e;
    const int64_t was = d.last_step;
    d.last_step = step;
    d.freq += 1;
    Unlink(was);
  }
  DirEntry& d = entries_[e];
  if (lfu_) {
    PushLfu(d, e);
  } else {
    Group& g = GroupOf(step);
    d.gpos = static_cast<int32_t>(g.items.size());
    g.items.push_back(e);
    ++g.live;
  }
  return e;
}

inline void Directory::Remove(int32_t e) {
  DirEntry& d = entries_[e];
  d.live = false;
  Unlink(d.last_step);
  if (d.slot != kPending) free_slots_.push_back(d.slot);
  if (keyed_) map_.Erase(d.key);
  --size_;
  free_entries_.push_back(e);
}

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_DIRECTORY_H_
