// TableVector<T>: a std::vector for large tables that are read at random (the scheduler's key
// table, key map and directories; the parameter server's key index). Buffers of 2 MiB or more
// are aligned to 2 MiB and advised as transparent huge pages: with 4 KiB pages nearly every
// access to these tables also misses the TLB, and a page walk costs about as much as the access
// (more in a virtual machine); growing a table also takes 512 times fewer page faults. Without
// huge pages it works all the same.
#ifndef HERALD_KERNELS_CORE_TABLE_VECTOR_H_
#define HERALD_KERNELS_CORE_TABLE_VECTOR_H_

#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <memory>
#include <new>
#include <vector>

namespace herald {

template <typename T>
struct TableAllocator {
  using value_type = T;
  static constexpr size_t kHugePage = size_t{2} << 20;

  TableAllocator() = default;
  template <typename U>
  TableAllocator(const TableAllocator<U>&) noexcept {}  // NOLINT: converting, as allocators are

  T* allocate(size_t n) {
    if (n * sizeof(T) < kHugePage) return std::allocator<T>().allocate(n);
    const size_t bytes = (n * sizeof(T) + kHugePage - 1) & ~(kHugePage - 1);
    void* p = aligned_alloc(kHugePage, bytes);
    if (p == nullptr) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);  // a hint: its failure changes nothing
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) < kHugePage) {
      std::allocator<T>().deallocate(p, n);
    } else {
      free(p);
    }
  }
};

template <typename T, typename U>
bool operator==(const TableAllocator<T>&, const TableAllocator<U>&) {
  return true;
}
template <typename T, typename U>
bool operator!=(const TableAllocator<T>&, const TableAllocator<U>&) {
  return false;
}

template <typename T>
using TableVector = std::vector<T, TableAllocator<T>>;

}  // namespace herald

#endif  // HERALD_KERNELS_CORE_TABLE_VECTOR_H_
