// Small device helpers: 1- and 4-float vectors for row loads, the bag scale of the combiners.
#ifndef HERALD_KERNELS_CUDA_VEC_CUH_
#define HERALD_KERNELS_CUDA_VEC_CUH_

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/core/c_api.h"

namespace herald {
namespace cuda {

template <int V>
struct Vec;

template <>
struct Vec<1> {
  using Type = float;
  static __device__ __forceinline__ float Zero() { return 0.0f; }
  static __device__ __forceinline__ float Load(const float* p) { return __ldg(p); }
  static __device__ __forceinline__ void AddTo(float& acc, float x) { acc = acc + x; }
  static __device__ __forceinline__ void AddScaled(float& acc, float s, float x) {
    acc = acc + s * x;
  }
  static __device__ __forceinline__ void Scale(float& acc, float s) { acc = acc * s; }
};

template <>
struct Vec<4> {
  using Type = float4;
  static __device__ __forceinline__ float4 Zero() { return make_float4(0.f, 0.f, 0.f, 0.f); }
  static __device__ __forceinline__ float4 Load(const float4* p) { return __ldg(p); }
  static __device__ __forceinline__ void AddTo(float4& acc, const float4& x) {
    acc.x = acc.x + x.x;
    acc.y = acc.y + x.y;
    acc.z = acc.z + x.z;
    acc.w = acc.w + x.w;
  }
  static __device__ __forceinline__ void AddScaled(float4& acc, float s, const float4& x) {
    acc.x = acc.x + s * x.x;
    acc.y = acc.y + s * x.y;
    acc.z = acc.z + s * x.z;
    acc.w = acc.w + s * x.w;
  }
  static __device__ __forceinline__ void Scale(float4& acc, float s) {
    acc.x = acc.x * s;
    acc.y = acc.y * s;
    acc.z = acc.z * s;
    acc.w = acc.w * s;
  }
};

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Scale of every id of a bag of `length` ids (the CPU kernel's herald::BagScale, same float ops).
__device__ __forceinline__ float BagScale(int combiner, int64_t length) {
  if (length == 0) return 0.0f;
  if (combiner == HERALD_COMBINER_MEAN) return 1.0f / static_cast<float>(length);
  if (combiner == HERALD_COMBINER_SQRTN) return 1.0f / sqrtf(static_cast<float>(length));
  return 1.0f;
}

}  // namespace cuda
}  // namespace herald

#endif  // HERALD_KERNELS_CUDA_VEC_CUH_
