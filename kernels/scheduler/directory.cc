#include "kernels/scheduler/directory.h"

#include <algorithm>

namespace herald {
namespace sched {

namespace {
constexpr size_t kAhead = 16;  // prefetch distance of the loops over a group's entries
}  // namespace

Directory::Directory(int64_t capacity, bool lfu, bool keyed)
    : capacity_(capacity),
      lfu_(lfu),
      keyed_(keyed),
      map_(keyed ? std::min<int64_t>(capacity, 1 << 20) + 16 : 0) {
  // Room for a full cache and a step's insertions beyond it: growing the entry table while
  // the cache fills would copy it and fault its pages in again at each doubling.
  entries_.reserve(std::min<int64_t>(capacity + capacity / 4 + 1024, 1 << 21));
  free_slots_.reserve(capacity);
  for (int64_t s = capacity - 1; s >= 0; --s) free_slots_.push_back(static_cast<int32_t>(s));
}

void Directory::Compact(Group& g) {
  size_t out = 0;
  for (size_t i = g.cursor; i < g.items.size(); ++i) {
    if (i + kAhead < g.items.size()) PrefetchEntry(g.items[i + kAhead]);
    if (!Linked(g, i)) continue;
    const int32_t e = g.items[i];
    entries_[e].gpos = static_cast<int32_t>(out);
    g.items[out++] = e;
  }
  g.items.resize(out);
  g.cursor = 0;
}

void Directory::PushLfu(const DirEntry& d, int32_t e) {
  lfu_heap_.emplace(d.freq, d.last_step, d.key, e);
  if (static_cast<int64_t>(lfu_heap_.size()) > 4 * size() + 1024) {
    std::vector<LfuItem> live;
    live.reserve(size());
    for (size_t i = 0; i < entries_.size(); ++i) {
      const DirEntry& x = entries_[i];
      if (x.live) live.emplace_back(x.freq, x.last_step, x.key, static_cast<int32_t>(i));
    }
    lfu_heap_ = decltype(lfu_heap_)(std::greater<LfuItem>(), std::move(live));
  }
}

int32_t Directory::Touch(int64_t key, int32_t kidx, int64_t step, int32_t staging) {
  return TouchKnown(map_.Find(key), key, kidx, step, staging);
}

int32_t Directory::NextLruVictim() {
  while (true) {
    Group& g = groups_.front();
    if (g.live == 0) {
      if (&g == cached_group_) cached_step_ = -1;
      groups_.pop_front();
      ++base_step_;
      continue;
    }
    if (!g.sorted) {  // by key, sorting (key, entry) pairs: no lookups inside the sort
      std::vector<std::pair<int64_t, int32_t>>& pairs = sort_scratch_;
      pairs.clear();
      for (size_t i = g.cursor; i < g.items.size(); ++i) {
        if (i + kAhead < g.items.size()) PrefetchEntry(g.items[i + kAhead]);
        if (Linked(g, i)) pairs.emplace_back(entries_[g.items[i]].key, g.items[i]);
      }
      std::sort(pairs.begin(), pairs.end());
      g.items.resize(pairs.size());
      g.cursor = 0;
      for (size_t i = 0; i < pairs.size(); ++i) {
        g.items[i] = pairs[i].second;
        entries_[pairs[i].second].gpos = static_cast<int32_t>(i);
      }
      g.sorted = true;
    }
    // Victims come in item order: keep the entries a few items ahead on their way.
    while (true) {
      if (g.cursor + kAhead < g.items.size()) PrefetchEntry(g.items[g.cursor + kAhead]);
      if (Linked(g, g.cursor)) return g.items[g.cursor];
      ++g.cursor;
    }
  }
}

int32_t Directory::NextLfuVictim() {
  while (true) {
    const LfuItem top = lfu_heap_.top();
    lfu_heap_.pop();
    int32_t e = std::get<3>(top);
    const DirEntry& d = entries_[e];
    if (d.live && d.key == std::get<2>(top) && d.freq == std::get<0>(top) &&
        d.last_step == std::get<1>(top)) {
      return e;
    }
  }
}

}  // namespace sched
}  // namespace herald
