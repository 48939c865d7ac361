// ScratchVector<T>: a std::vector whose resize() leaves new elements of trivially constructible
// types uninitialised, for per-step scratch and plan lists that are written before being read.
#ifndef HERALD_KERNELS_SCHEDULER_SCRATCH_VECTOR_H_
#define HERALD_KERNELS_SCHEDULER_SCRATCH_VECTOR_H_

#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace herald {
namespace sched {

template <typename T>
struct NoInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = NoInitAllocator<U>;
  };
  NoInitAllocator() = default;
  template <typename U>
  NoInitAllocator(const NoInitAllocator<U>&) noexcept {}  // NOLINT: converting, as allocators are

  // Default construction is default-initialisation (no zeroing); anything else as usual.
  template <typename U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

template <typename T>
using ScratchVector = std::vector<T, NoInitAllocator<T>>;

}  // namespace sched
}  // namespace herald

#endif  // HERALD_KERNELS_SCHEDULER_SCRATCH_VECTOR_H_
