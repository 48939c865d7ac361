// PlanList: one plan list of one worker (int64 entries), written either into a caller-owned
// region (herald_sched_step_into: the plan goes straight to the caller, no copy afterwards) or
// into storage of its own. A list that outgrows its region moves to its own storage, keeping
// its entries, so a region too small costs a copy, never a wrong plan.
#ifndef HERALD_KERNELS_SCHEDULER_PLAN_LIST_H_
#define HERALD_KERNELS_SCHEDULER_PLAN_LIST_H_

#include <stddef.h>
#include <stdint.h>

#include <algorithm>

#include "kernels/scheduler/scratch_vector.h"

namespace herald {
namespace sched {

class PlanList {
 public:
  // Empties the list and writes it into region (capacity entries) from now on.
  void Attach(int64_t* region, size_t capacity) {
    region_ = region;
    data_ = region;
    capacity_ = capacity;
    size_ = 0;
  }
  // Empties the list and writes it into its own storage from now on.
  void Detach() {
    region_ = nullptr;
    data_ = own_.data();
    capacity_ = own_.size();
    size_ = 0;
  }
  void clear() { size_ = 0; }
  // New entries are uninitialised; shrinking keeps the first n.
  void resize(size_t n) {
    if (n > capacity_) Grow(n);
    size_ = n;
  }
  void push_back(int64_t v) {
    if (size_ == capacity_) Grow(size_ + 1);
    data_[size_++] = v;
  }
  // After a step: a list that left its region but fits it again goes back (rare).
  void Settle(size_t capacity) {
    if (region_ != nullptr && data_ != region_ && size_ <= capacity) {
      std::copy(data_, data_ + size_, region_);
      data_ = region_;
      capacity_ = capacity;
    }
  }
  // True when the entries are in the region given to Attach.
  bool in_region() const { return region_ != nullptr && data_ == region_; }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  int64_t* data() { return data_; }
  const int64_t* data() const { return data_; }
  const int64_t* begin() const { return data_; }
  const int64_t* end() const { return data_ + size_; }
  int64_t& operator[](size_t i) { return data_[i]; }
  int64_t operator[](size_t i) const { return data_[i]; }

 private:
  void Grow(size_t n) {
    const size_t want = std::max(n, 2 * capacity_);
    if (own_.size() < want) {  // always so when the entries are in own_ already
      ScratchVector<int64_t> bigger(want);
      std::copy(data_, data_ + size_, bigger.data());
      own_.swap(bigger);
    } else {
      std::copy(data_, data_ + size_, own_.data());
    }
    data_ = own_.data();
    capacity_ = own_.size();
  }

  ScratchVector<int64_t> own_;
  int64_t* region_ = nullptr;  // caller-owned, or null
  int64_t* data_ = nullptr;    // region_ or own_.data()
  size_t capacity_ = 0;
  size_t size_ = 0;
};

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_PLAN_LIST_H_
