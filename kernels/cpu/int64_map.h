// A small open-addressing map from int64 ids to dense indices, used to dedup slot ids in one pass.
// Sized for a known number of inserts (load factor <= 0.5), so it never rehashes.
#ifndef HERALD_KERNELS_CPU_INT64_MAP_H_
#define HERALD_KERNELS_CPU_INT64_MAP_H_

#include <stdint.h>

#include <vector>

#include "kernels/core/initializer.h"

namespace herald {

class Int64IndexMap {
 public:
  explicit Int64IndexMap(int64_t max_inserts) {
    uint64_t capacity = 16;
    while (capacity < static_cast<uint64_t>(max_inserts) * 2) capacity <<= 1;
    mask_ = capacity - 1;
    keys_.assign(capacity, 0);
    values_.assign(capacity, -1);
  }

  // Returns the index stored for `key`, inserting `next_index` if the key is new.
  int64_t FindOrInsert(int64_t key, int64_t next_index, bool* inserted) {
    uint64_t pos = Mix64(static_cast<uint64_t>(key)) & mask_;
    while (true) {
      if (values_[pos] < 0) {
        keys_[pos] = key;
        values_[pos] = next_index;
        *inserted = true;
        return next_index;
      }
      if (keys_[pos] == key) {
        *inserted = false;
        return values_[pos];
      }
      pos = (pos + 1) & mask_;
    }
  }

 private:
  uint64_t mask_;
  std::vector<int64_t> keys_;
  std::vector<int64_t> values_;  // -1 marks an empty bucket
};

}  // namespace herald

#endif  // HERALD_KERNELS_CPU_INT64_MAP_H_
