// 2-D hard histogram on CUDA with numpy.histogram2d's binning. One thread per item fills that item's histogram
// (deterministic, no atomics; the output is zeroed by the launcher); the weight gradient is one thread per point.
#include "common.cuh"

namespace kdekit_cuda {
namespace {

template <typename T>
__global__ void hard_hist2d_fwd(const T* x, const T* y, const T* w, const double* rx, const double* ry, T* out,
                                int64_t B, int64_t N, int64_t bins) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t i = hard_bin(static_cast<double>(x[b * N + n]), rx[2 * b], rx[2 * b + 1], bins);
    const int64_t j = hard_bin(static_cast<double>(y[b * N + n]), ry[2 * b], ry[2 * b + 1], bins);
    if (i >= 0 && j >= 0) out[(b * bins + i) * bins + j] += w[b * N + n];
  }
}

template <typename T>
__global__ void hard_hist2d_bwd(const T* grad, const T* x, const T* y, const double* rx, const double* ry, T* gw,
                                int64_t B, int64_t N, int64_t bins) {
  const int64_t bn = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bn >= B * N) return;
  const int64_t b = bn / N;
  const int64_t i = hard_bin(static_cast<double>(x[bn]), rx[2 * b], rx[2 * b + 1], bins);
  const int64_t j = hard_bin(static_cast<double>(y[bn]), ry[2 * b], ry[2 * b + 1], bins);
  gw[bn] = (i >= 0 && j >= 0) ? grad[(b * bins + i) * bins + j] : T(0);
}

template <typename T>
int launch_fwd(const T* x, const T* y, const T* w, const double* rx, const double* ry, T* out, int64_t B, int64_t N,
               int64_t bins, intptr_t stream) {
  cudaError_t err = cudaMemsetAsync(out, 0, sizeof(T) * B * bins * bins, as_stream(stream));
  if (err != cudaSuccess) return static_cast<int>(err);
  const int64_t blocks = (B + kThreads - 1) / kThreads;
  hard_hist2d_fwd<T><<<static_cast<unsigned>(blocks), kThreads, 0, as_stream(stream)>>>(x, y, w, rx, ry, out, B, N,
                                                                                        bins);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_bwd(const T* grad, const T* x, const T* y, const double* rx, const double* ry, T* gw, int64_t B, int64_t N,
               int64_t bins, intptr_t stream) {
  const int64_t blocks = (B * N + kThreads - 1) / kThreads;
  hard_hist2d_bwd<T><<<static_cast<unsigned>(blocks), kThreads, 0, as_stream(stream)>>>(grad, x, y, rx, ry, gw, B,
                                                                                        N, bins);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace
}  // namespace kdekit_cuda

extern "C" {
int kdekit_hard_histogram2d_f32(const float* x, const float* y, const float* w, const double* rx, const double* ry,
                                float* out, int64_t B, int64_t N, int64_t bins, intptr_t stream) {
  return kdekit_cuda::launch_fwd(x, y, w, rx, ry, out, B, N, bins, stream);
}
int kdekit_hard_histogram2d_f64(const double* x, const double* y, const double* w, const double* rx,
                                const double* ry, double* out, int64_t B, int64_t N, int64_t bins, intptr_t stream) {
  return kdekit_cuda::launch_fwd(x, y, w, rx, ry, out, B, N, bins, stream);
}
int kdekit_hard_histogram2d_backward_f32(const float* g, const float* x, const float* y, const double* rx,
                                         const double* ry, float* gw, int64_t B, int64_t N, int64_t bins,
                                         intptr_t stream) {
  return kdekit_cuda::launch_bwd(g, x, y, rx, ry, gw, B, N, bins, stream);
}
int kdekit_hard_histogram2d_backward_f64(const double* g, const double* x, const double* y, const double* rx,
                                         const double* ry, double* gw, int64_t B, int64_t N, int64_t bins,
                                         intptr_t stream) {
  return kdekit_cuda::launch_bwd(g, x, y, rx, ry, gw, B, N, bins, stream);
}
}
