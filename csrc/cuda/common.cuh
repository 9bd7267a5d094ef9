// Shared helpers of the CUDA kernels (registered with TORCH_LIBRARY_IMPL(kdekit, CUDA, m) in each .cu file): argument
// checks and a fixed-order block reduction (binning: csrc/common/binning.h). No kernel uses atomics; every output
// element is owned by one thread, so results are deterministic. Kernels run on the current stream of the inputs' device.
#pragma once
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "../common/binning.h"

namespace kdekit::cuda {

using common::bin_edge;
using common::hard_bin;

constexpr int kThreads = 256;

// float16/bfloat16/float32 accumulate in float32, float64 in float64.
template <typename T>
using acc_t = at::opmath_type<T>;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

inline void check_float_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, name,
              " must be float16, bfloat16, float32 or float64, got ", s);
}

// t: (B, N) with `like`'s dtype, on `like`'s device.
inline void check_points(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == like.size(0) && t.size(1) == like.size(1), name, " must have shape (",
              like.size(0), ", ", like.size(1), "), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t.scalar_type());
}

inline void check_range(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.size(0) == like.size(0) && t.size(1) == 2, name, " must have shape (", like.size(0),
              ", 2), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kDouble, name, " must be float64, got ", t.scalar_type());
}

inline void check_grad(const at::Tensor& grad, at::IntArrayRef shape, const at::Tensor& like) {
  TORCH_CHECK(grad.device() == like.device(), "grad must be on ", like.device(), ", got ", grad.device());
  TORCH_CHECK(grad.sizes() == shape, "grad must have shape ", shape, ", got ", grad.sizes());
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

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

}  // namespace kdekit::cuda
