// Shared device helpers for the torch-free CUDA kernels (raw pointers; launchers are extern "C" and take the stream
// as an integer). Every reduction runs in a fixed order (shared-memory tree), no atomics: results are deterministic.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace kdekit_cuda {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T bin_edge(T lo, T hi, T step, int64_t e, int64_t bins) {
  return e == bins ? hi : static_cast<T>(e) * step + lo;
}

// numpy.histogram2d bin of x (float64 edges), -1 if outside [lo, hi] or NaN.
__device__ __forceinline__ int64_t hard_bin(double x, double lo, double hi, int64_t bins) {
  if (!(x >= lo && x <= hi)) return -1;
  const double step = (hi - lo) / static_cast<double>(bins);
  int64_t g = static_cast<int64_t>((x - lo) / step);
  g = g < 0 ? 0 : (g > bins - 1 ? bins - 1 : g);
  while (g > 0 && x < bin_edge(lo, hi, step, g, bins)) --g;
  while (g < bins - 1 && x >= bin_edge(lo, hi, step, g + 1, bins)) ++g;
  return g;
}

// Sum of `value` over the block (blockDim.x == kThreads), same order every run; result valid in every thread.
__device__ __forceinline__ double block_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

inline cudaStream_t as_stream(intptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

}  // namespace kdekit_cuda
