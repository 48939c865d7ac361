// Portability macros shared by the CPU and CUDA builds of the framework-free core.
#ifndef HERALD_KERNELS_CORE_PLATFORM_H_
#define HERALD_KERNELS_CORE_PLATFORM_H_

#if defined(__CUDACC__)
#define HERALD_HOST_DEVICE __host__ __device__
#else
#define HERALD_HOST_DEVICE
#endif

#define HERALD_INLINE HERALD_HOST_DEVICE inline

#endif  // HERALD_KERNELS_CORE_PLATFORM_H_
