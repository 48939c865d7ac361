// Open-addressing hash map from int64 keys to int32 values (linear probing, backward-shift
// deletion, power-of-two capacity). numpy has no hash table; the scheduler's key maps live here.
#ifndef HERALD_KERNELS_SCHEDULER_HASH_MAP_H_
#define HERALD_KERNELS_SCHEDULER_HASH_MAP_H_

#include <stdint.h>

#include <vector>

#include "kernels/core/platform.h"
#include "kernels/core/table_vector.h"

namespace herald {
namespace sched {

class KeyIndexMap {
 public:
  static constexpr int32_t kMissing = -1;

  explicit KeyIndexMap(int64_t expected = 16) { Rehash(Capacity(expected)); }

  int64_t size() const { return size_; }

  // The value of `key`, or kMissing.
  int32_t Find(int64_t key) const { return FindHashed(key, Hash(key)); }

  // Find with h == Hash(key) computed by the caller (batch loops hash once).
  int32_t FindHashed(int64_t key, uint64_t h) const {
    uint64_t i = h & mask_;
    while (true) {
      const Slot& s = slots_[i];
      if (s.value == kMissing) return kMissing;
      if (s.key == key) return s.value;
      i = (i + 1) & mask_;
    }
  }

  static uint64_t HashOf(int64_t key) { return Hash(key); }

  // Hints the cache line a key of hash `h` probes first (for loops that look up many keys).
  HERALD_PREFETCH_HELPER void PrefetchHashed(uint64_t h) const {
    __builtin_prefetch(&slots_[h & mask_]);
  }

  // Inserts key -> value; `key` must be absent.
  void Insert(int64_t key, int32_t value) {
    if ((size_ + 1) * 4 > static_cast<int64_t>(slots_.size()) * 3) Rehash(slots_.size() * 2);
    Place(Slot{key, value});
  }

  // Removes `key` if present.
  void Erase(int64_t key) {
    uint64_t i = Hash(key) & mask_;
    while (true) {
      if (slots_[i].value == kMissing) return;
      if (slots_[i].key == key) break;
      i = (i + 1) & mask_;
    }
    // Backward-shift: move later entries of the probe run into the hole when allowed.
    uint64_t hole = i;
    uint64_t j = i;
    while (true) {
      j = (j + 1) & mask_;
      if (slots_[j].value == kMissing) break;
      uint64_t home = Hash(slots_[j].key) & mask_;
      // Entry j may move to `hole` iff its home is not cyclically within (hole, j].
      bool in_range = (hole <= j) ? (hole < home && home <= j) : (hole < home || home <= j);
      if (!in_range) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole].value = kMissing;
    --size_;
  }

 private:
  struct Slot {
    int64_t key = 0;
    int32_t value = kMissing;
  };

  static uint64_t Capacity(int64_t expected) {
    uint64_t c = 16;
    while (c * 3 < static_cast<uint64_t>(expected) * 4 + 4) c *= 2;
    return c;
  }

  // The hash of a key (a 64-bit mix; the low bits pick the slot).
  static uint64_t Hash(int64_t key) {
    uint64_t x = static_cast<uint64_t>(key);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
  }

  // Puts an absent key's slot at the first free place of its probe run (the table has room).
  void Place(const Slot& s) {
    uint64_t i = Hash(s.key) & mask_;
    while (slots_[i].value != kMissing) i = (i + 1) & mask_;
    slots_[i] = s;
    ++size_;
  }

  // Moves every entry into a table of `capacity` slots. The old slots are read in order and
  // the new ones written at random, so each key's home slot is hinted kAhead entries early: a
  // rehash of a large map is otherwise one cache miss after another.
  void Rehash(uint64_t capacity) {
    constexpr size_t kAhead = 16;
    TableVector<Slot> old;
    old.swap(slots_);
    slots_.assign(capacity, Slot());
    mask_ = capacity - 1;
    size_ = 0;
    const size_t n = old.size();
    for (size_t i = 0; i < n; ++i) {
      if (i + kAhead < n && old[i + kAhead].value != kMissing) {
        PrefetchHashed(Hash(old[i + kAhead].key));
      }
      if (old[i].value != kMissing) Place(old[i]);
    }
  }

  TableVector<Slot> slots_;
  uint64_t mask_ = 0;
  int64_t size_ = 0;
};

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_HASH_MAP_H_
