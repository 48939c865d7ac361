// Runs a range function through an optional HeraldRunner (serially when none is given).
#ifndef HERALD_KERNELS_CPU_RUNNER_H_
#define HERALD_KERNELS_CPU_RUNNER_H_

#include <stdint.h>

#include "kernels/core/c_api.h"

namespace herald {

template <typename Fn>
void ParallelFor(const HeraldRunner* runner, int64_t n, int64_t cost_per_unit, Fn& fn) {
  if (n <= 0) return;
  auto trampoline = [](void* arg, int64_t begin, int64_t end) {
    (*static_cast<Fn*>(arg))(begin, end);
  };
  if (runner == nullptr || runner->parallel_for == nullptr) {
    fn(0, n);
  } else {
    runner->parallel_for(runner->context, n, cost_per_unit, trampoline, &fn);
  }
}

}  // namespace herald

#endif  // HERALD_KERNELS_CPU_RUNNER_H_
