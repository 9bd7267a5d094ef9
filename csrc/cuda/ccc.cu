// Concordance correlation coefficient over the last dim of (B, N) on CUDA: one block per row, corrected two-pass
// moments with fixed-order block reductions in float64; forward and backward (same formulas as csrc/cpu/ccc.cpp).
#include <cmath>

#include "common.cuh"

namespace kdekit_cuda {
namespace {

struct Moments {
  double mx, my, m2x, m2y, cxy;
};

template <typename T>
__device__ Moments row_moments(const T* x, const T* y, int64_t N, double* shared) {
  double sx = 0, sy = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    sx += static_cast<double>(x[i]);
    sy += static_cast<double>(y[i]);
  }
  const double mx0 = block_sum(sx, shared) / N, my0 = block_sum(sy, shared) / N;
  double rx = 0, ry = 0, m2x = 0, m2y = 0, cxy = 0;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const double dx = static_cast<double>(x[i]) - mx0, dy = static_cast<double>(y[i]) - my0;
    rx += dx;
    ry += dy;
    m2x += dx * dx;
    m2y += dy * dy;
    cxy += dx * dy;
  }
  const double ex = block_sum(rx, shared) / N, ey = block_sum(ry, shared) / N;
  return {mx0 + ex, my0 + ey, block_sum(m2x, shared) - N * ex * ex, block_sum(m2y, shared) - N * ey * ey,
          block_sum(cxy, shared) - N * ex * ey};
}

template <typename T>
__global__ void ccc_fwd(const T* x, const T* y, T* out, int64_t N, double ddof) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  const Moments m = row_moments(x + b * N, y + b * N, N, shared);
  const double d = m.mx - m.my, den = m.m2x + m.m2y + (N - ddof) * d * d;
  if (threadIdx.x == 0) out[b] = (N > ddof && den > 0) ? static_cast<T>(2.0 * m.cxy / den) : static_cast<T>(NAN);
}

template <typename T>
__global__ void ccc_bwd(const T* grad, const T* x, const T* y, T* gx, T* gy, int64_t N, double ddof) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  const T *xb = x + b * N, *yb = y + b * N;
  const Moments m = row_moments(xb, yb, N, shared);
  const double d = m.mx - m.my, den = m.m2x + m.m2y + (N - ddof) * d * d;
  const bool ok = N > ddof && den > 0;
  const double g = static_cast<double>(grad[b]);
  const double a = ok ? 2.0 * g / den : NAN, c = ok ? 2.0 * g * m.cxy / (den * den) : NAN;
  const double shift = 2.0 * (N - ddof) * d / N;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const double dx = static_cast<double>(xb[i]) - m.mx, dy = static_cast<double>(yb[i]) - m.my;
    gx[b * N + i] = static_cast<T>(a * dy - c * (2.0 * dx + shift));
    gy[b * N + i] = static_cast<T>(a * dx - c * (2.0 * dy - shift));
  }
}

}  // namespace
}  // namespace kdekit_cuda

extern "C" {
int kdekit_ccc_f32(const float* x, const float* y, float* out, int64_t B, int64_t N, int unbiased, intptr_t stream) {
  kdekit_cuda::ccc_fwd<float><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0, kdekit_cuda::as_stream(stream)>>>(
      x, y, out, N, unbiased ? 1.0 : 0.0);
  return static_cast<int>(cudaGetLastError());
}
int kdekit_ccc_f64(const double* x, const double* y, double* out, int64_t B, int64_t N, int unbiased,
                   intptr_t stream) {
  kdekit_cuda::ccc_fwd<double><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0,
                                 kdekit_cuda::as_stream(stream)>>>(x, y, out, N, unbiased ? 1.0 : 0.0);
  return static_cast<int>(cudaGetLastError());
}
int kdekit_ccc_backward_f32(const float* g, const float* x, const float* y, float* gx, float* gy, int64_t B, int64_t N,
                            int unbiased, intptr_t stream) {
  kdekit_cuda::ccc_bwd<float><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0, kdekit_cuda::as_stream(stream)>>>(
      g, x, y, gx, gy, N, unbiased ? 1.0 : 0.0);
  return static_cast<int>(cudaGetLastError());
}
int kdekit_ccc_backward_f64(const double* g, const double* x, const double* y, double* gx, double* gy, int64_t B,
                            int64_t N, int unbiased, intptr_t stream) {
  kdekit_cuda::ccc_bwd<double><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0,
                                 kdekit_cuda::as_stream(stream)>>>(g, x, y, gx, gy, N, unbiased ? 1.0 : 0.0);
  return static_cast<int>(cudaGetLastError());
}
}
