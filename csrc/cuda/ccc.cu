// Concordance correlation coefficient over the last dim of (B, N) on CUDA: one block per row, corrected two-pass
// moments with fixed-order block reductions in float64 for every input dtype; forward and backward (same formulas
// as csrc/cpu/ccc.cpp: NaN value and zero gradient for undefined items).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>

#include "common.cuh"

namespace kdekit::cuda {
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
  // one refinement step of the means (exact centring up to rounding); the moments change by n * shift^2
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
  if (threadIdx.x == 0) out[b] = static_cast<T>((N > ddof && den > 0) ? 2.0 * m.cxy / den : NAN);
}

template <typename T>
__global__ void ccc_bwd(const double* grad, const T* x, const T* y, T* gx, T* gy, int64_t N, double ddof) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  const T *xb = x + b * N, *yb = y + b * N;
  const Moments m = row_moments(xb, yb, N, shared);
  const double d = m.mx - m.my, den = m.m2x + m.m2y + (N - ddof) * d * d;
  const bool ok = N > ddof && den > 0;
  const double g = grad[b];
  const double a = ok ? 2.0 * g / den : 0.0, c = ok ? 2.0 * g * m.cxy / (den * den) : 0.0;  // 0: undefined
  const double shift = 2.0 * (N - ddof) * d / N;
  for (int64_t i = threadIdx.x; i < N; i += kThreads) {
    const double dx = static_cast<double>(xb[i]) - m.mx, dy = static_cast<double>(yb[i]) - m.my;
    gx[b * N + i] = static_cast<T>(a * dy - c * (2.0 * dx + shift));
    gy[b * N + i] = static_cast<T>(a * dx - c * (2.0 * dy - shift));
  }
}

void check_pair(const at::Tensor& x, const at::Tensor& y) {
  check_float_cuda(x, "x");
  TORCH_CHECK(x.dim() == 2 && x.size(1) >= 1, "x must be (B, N) with N >= 1, got ", x.sizes());
  check_points(y, "y", x);
}

at::Tensor ccc_cuda(const at::Tensor& x_, const at::Tensor& y_, bool unbiased) {
  check_pair(x_, y_);
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), y = y_.contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  auto out = at::empty({B}, x.options());
  if (B == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ccc_cuda", [&] {
    ccc_fwd<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, current_stream()>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, unbiased ? 1.0 : 0.0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> ccc_backward_cuda(const at::Tensor& grad_, const at::Tensor& x_,
                                                     const at::Tensor& y_, bool unbiased) {
  check_pair(x_, y_);
  check_grad(grad_, {x_.size(0)}, x_);
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), y = y_.contiguous(), grad = grad_.to(at::kDouble).contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  auto gx = at::empty_like(x), gy = at::empty_like(y);
  if (B == 0) return {gx, gy};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ccc_backward_cuda", [&] {
    ccc_bwd<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, current_stream()>>>(
        grad.const_data_ptr<double>(), x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        gx.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), N, unbiased ? 1.0 : 0.0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gx, gy};
}

}  // namespace
}  // namespace kdekit::cuda

TORCH_LIBRARY_IMPL(kdekit, CUDA, m) {
  m.impl("ccc", &kdekit::cuda::ccc_cuda);
  m.impl("ccc_backward", &kdekit::cuda::ccc_backward_cuda);
}
