// The bytes of one worker's plan as worker 0 ships it (herald_tf/scheduler/plan_codec.py
// documents the layout and why it is compact). The encoder reads a worker's lists of the last
// step straight from the engine; the decoder writes the lists of a StepPlan.
#ifndef HERALD_KERNELS_SCHEDULER_PLAN_WIRE_H_
#define HERALD_KERNELS_SCHEDULER_PLAN_WIRE_H_

#include <stdint.h>

#include <vector>

#include "kernels/core/status.h"
#include "kernels/scheduler/plan_list.h"
#include "kernels/scheduler/scheduler_api.h"

namespace herald {
namespace sched {

// Encodes plans of one scheduler; keeps a slot → position map across plans (entries a plan
// does not write are stale and every read of one is checked, so it is never cleared).
class PlanEncoder {
 public:
  explicit PlanEncoder(int64_t total_slots) : position_of_slot_(total_slots) {}

  // lists: the worker's HERALD_SCHED_NUM_LISTS lists; samples: its num_samples indices.
  // Writes at most capacity bytes; *size_out is the encoded size (also when it did not fit:
  // then HERALD_OUT_OF_RANGE and nothing useful was written).
  int Encode(const PlanList* lists, int64_t num_fields, const int64_t* samples,
             int64_t num_samples, const HeraldPlanStamp& stamp, uint8_t* out, int64_t capacity,
             int64_t* size_out, HeraldStatus* status);

 private:
  std::vector<int32_t> position_of_slot_;
  std::vector<uint8_t> is_local_;
  std::vector<int64_t> positions_;
};

// Checks blob against `expect` and returns the entries of every decoded list
// (sizes_out[HERALD_SCHED_NUM_LISTS]), then the samples and the number of fields.
int DecodedSizes(const uint8_t* blob, int64_t length, const HeraldPlanStamp& expect,
                 int64_t* sizes_out /* (HERALD_SCHED_NUM_LISTS + 2) */, HeraldStatus* status);

// Decodes blob into out: the lists in HeraldSchedList order, then the samples, each as long as
// DecodedSizes says; capacity is out's length in entries.
int Decode(const uint8_t* blob, int64_t length, const HeraldPlanStamp& expect, int64_t* out,
           int64_t capacity, HeraldStatus* status);

// herald_plan_batch_checksum (scheduler_api.h).
int64_t BatchChecksum(const int64_t* keys, int64_t rows, int64_t cols);

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_PLAN_WIRE_H_
