// Portability macros shared by the CPU and CUDA builds of the framework-free core.
#ifndef HERALD_KERNELS_CORE_PLATFORM_H_
#define HERALD_KERNELS_CORE_PLATFORM_H_

#if defined(__CUDACC__)
#define HERALD_HOST_DEVICE __host__ __device__
#else
#define HERALD_HOST_DEVICE
#endif

#define HERALD_INLINE HERALD_HOST_DEVICE inline

// For a helper whose only effect is a cache hint (__builtin_prefetch): GCC's pure-const analysis
// finds such a function free of side effects and deletes every call to it, so the prefetch
// must be inlined into the caller before that analysis runs (GCC 12 at -O1 and above dropped
// every prefetch of the PS key index this way; tests/unit/kernels/test_prefetch_build.py checks).
#if defined(__GNUC__)
#define HERALD_PREFETCH_HELPER __attribute__((always_inline)) inline
#else
#define HERALD_PREFETCH_HELPER inline
#endif

#endif  // HERALD_KERNELS_CORE_PLATFORM_H_
