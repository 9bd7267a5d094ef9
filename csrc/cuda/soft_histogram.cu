// Fused 2-D soft histogram on CUDA (forward and backward); float16/bfloat16/float32 compute in float32, float64 in
// float64, with the maths of csrc/cpu/soft_histogram.cpp (bin edges and sigmoids in the compute type).
// Forward: a 16 x 16 thread block owns a 16 x 16 tile of H[b]; points are staged through shared memory in tiles of
// kTile, with the sigmoid differences of the tile's 16 x bins and 16 y bins only. Backward: one thread per point
// with the whole bins x bins gradient read from global memory (bins <= kMaxBins, per-thread buffers).
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include "common.cuh"

namespace kdekit::cuda {
namespace {

constexpr int kTileBins = 16;
constexpr int kTile = 64;
constexpr int kMaxBins = 256;

template <typename A>
__device__ __forceinline__ A sigmoid(A z) {
  return A(1) / (A(1) + exp(-z));
}

template <typename T>
__global__ void soft_hist2d_fwd(const T* x, const T* y, const T* w, const double* rx, const double* ry, T* out,
                                int64_t N, int64_t bins, acc_t<T> s) {
  using A = acc_t<T>;
  __shared__ A ax[kTile][kTileBins];
  __shared__ A ay[kTile][kTileBins];
  const int64_t b = blockIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTileBins, j0 = static_cast<int64_t>(blockIdx.z) * kTileBins;
  const int ti = threadIdx.y, tj = threadIdx.x, tid = ti * kTileBins + tj;
  const A lox = static_cast<A>(rx[2 * b]), hix = static_cast<A>(rx[2 * b + 1]);
  const A loy = static_cast<A>(ry[2 * b]), hiy = static_cast<A>(ry[2 * b + 1]);
  const A stepx = (hix - lox) / static_cast<A>(bins), stepy = (hiy - loy) / static_cast<A>(bins);
  A acc = 0;
  for (int64_t n0 = 0; n0 < N; n0 += kTile) {
    // 256 threads fill kTile x 16 entries of each of ax, ay
    for (int e = tid; e < kTile * kTileBins; e += kTileBins * kTileBins) {
      const int p = e / kTileBins, k = e % kTileBins;
      const int64_t n = n0 + p;
      A vx = 0, vy = 0;
      if (n < N && i0 + k < bins) {
        const A xv = static_cast<A>(x[b * N + n]);
        vx = sigmoid(s * (xv - bin_edge(lox, hix, stepx, i0 + k, bins))) -
             sigmoid(s * (xv - bin_edge(lox, hix, stepx, i0 + k + 1, bins)));
      }
      if (n < N && j0 + k < bins) {
        const A yv = static_cast<A>(y[b * N + n]);
        vy = static_cast<A>(w[b * N + n]) * (sigmoid(s * (yv - bin_edge(loy, hiy, stepy, j0 + k, bins))) -
                                             sigmoid(s * (yv - bin_edge(loy, hiy, stepy, j0 + k + 1, bins))));
      }
      ax[p][k] = vx;
      ay[p][k] = vy;
    }
    __syncthreads();
    for (int p = 0; p < kTile; ++p) acc += ax[p][ti] * ay[p][tj];
    __syncthreads();
  }
  if (i0 + ti < bins && j0 + tj < bins) out[(b * bins + i0 + ti) * bins + j0 + tj] = static_cast<T>(acc);
}

// grad G in the compute type. With u = A_x[n] G, v = G A_y[n]^T: dL/dw = <A_x[n], v>, dL/dx = w <dA_x[n], v>,
// dL/dy = w <u, dA_y[n]>.
template <typename T>
__global__ void soft_hist2d_bwd(const acc_t<T>* grad, const T* x, const T* y, const T* w, const double* rx,
                                const double* ry, T* gx, T* gy, T* gw, int64_t BN, int64_t N, int64_t bins,
                                acc_t<T> s) {
  using A = acc_t<T>;
  const int64_t bn = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bn >= BN) return;
  const int64_t b = bn / N;
  const A lox = static_cast<A>(rx[2 * b]), hix = static_cast<A>(rx[2 * b + 1]);
  const A loy = static_cast<A>(ry[2 * b]), hiy = static_cast<A>(ry[2 * b + 1]);
  const A stepx = (hix - lox) / static_cast<A>(bins), stepy = (hiy - loy) / static_cast<A>(bins);
  const A xv = static_cast<A>(x[bn]), yv = static_cast<A>(y[bn]), wv = static_cast<A>(w[bn]);
  A my[kMaxBins], dmy[kMaxBins], u[kMaxBins];
  A c_lo = sigmoid(s * (yv - bin_edge(loy, hiy, stepy, 0, bins)));
  for (int64_t j = 0; j < bins; ++j) {
    const A c_hi = sigmoid(s * (yv - bin_edge(loy, hiy, stepy, j + 1, bins)));
    my[j] = c_lo - c_hi;
    dmy[j] = s * (c_lo * (A(1) - c_lo) - c_hi * (A(1) - c_hi));
    u[j] = 0;
    c_lo = c_hi;
  }
  const A* G = grad + b * bins * bins;
  A sw = 0, sx = 0;
  c_lo = sigmoid(s * (xv - bin_edge(lox, hix, stepx, 0, bins)));
  for (int64_t i = 0; i < bins; ++i) {
    const A c_hi = sigmoid(s * (xv - bin_edge(lox, hix, stepx, i + 1, bins)));
    const A mx = c_lo - c_hi, dmx = s * (c_lo * (A(1) - c_lo) - c_hi * (A(1) - c_hi));
    c_lo = c_hi;
    A v = 0;  // v_i = sum_j G[i, j] my[j]
    for (int64_t j = 0; j < bins; ++j) {
      const A g = G[i * bins + j];
      v += g * my[j];
      u[j] += mx * g;
    }
    sw += mx * v;
    sx += dmx * v;
  }
  A sy = 0;
  for (int64_t j = 0; j < bins; ++j) sy += u[j] * dmy[j];
  gw[bn] = static_cast<T>(sw);
  gx[bn] = static_cast<T>(wv * sx);
  gy[bn] = static_cast<T>(wv * sy);
}

void check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx,
                  const at::Tensor& ry, int64_t bins) {
  check_float_cuda(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (B, N), got ", x.sizes());
  check_points(y, "y", x);
  check_points(w, "weights", x);
  check_range(rx, "range_x", x);
  check_range(ry, "range_y", x);
  TORCH_CHECK(bins >= 2, "bins must be >= 2, got ", bins);
}

at::Tensor soft_histogram2d_cuda(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
                                 const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins, double sharpness) {
  check_inputs(x_, y_, w_, rx_, ry_, bins);
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  auto out = at::empty({B, bins, bins}, x.options());
  if (B == 0) return out;
  const int64_t tiles = (bins + kTileBins - 1) / kTileBins;
  TORCH_CHECK(tiles <= 65535, "bins must be <= ", 65535 * kTileBins, " on CUDA, got ", bins);
  const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(tiles), static_cast<unsigned>(tiles));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "soft_histogram2d_cuda", [&] {
    soft_hist2d_fwd<scalar_t><<<grid, dim3(kTileBins, kTileBins), 0, current_stream()>>>(
        x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        rx.const_data_ptr<double>(), ry.const_data_ptr<double>(), out.data_ptr<scalar_t>(), N, bins,
        static_cast<acc_t<scalar_t>>(sharpness));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_histogram2d_backward_cuda(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
    const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins, double sharpness) {
  check_inputs(x_, y_, w_, rx_, ry_, bins);
  check_grad(grad_, {x_.size(0), bins, bins}, x_);
  TORCH_CHECK(bins <= kMaxBins, "soft_histogram2d_backward on CUDA supports bins <= ", kMaxBins, ", got ", bins);
  const c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  auto grad = grad_.to(at::toOpMathType(x.scalar_type())).contiguous();
  auto gx = at::empty_like(x), gy = at::empty_like(x), gw = at::empty_like(x);
  if (x.numel() == 0) return {gx, gy, gw};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "soft_histogram2d_backward_cuda", [&] {
    soft_hist2d_bwd<scalar_t><<<blocks_for(x.numel()), kThreads, 0, current_stream()>>>(
        grad.const_data_ptr<acc_t<scalar_t>>(), x.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
        w.const_data_ptr<scalar_t>(), rx.const_data_ptr<double>(), ry.const_data_ptr<double>(),
        gx.data_ptr<scalar_t>(), gy.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), x.numel(), x.size(1), bins,
        static_cast<acc_t<scalar_t>>(sharpness));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gx, gy, gw};
}

}  // namespace
}  // namespace kdekit::cuda

TORCH_LIBRARY_IMPL(kdekit, CUDA, m) {
  m.impl("soft_histogram2d", &kdekit::cuda::soft_histogram2d_cuda);
  m.impl("soft_histogram2d_backward", &kdekit::cuda::soft_histogram2d_backward_cuda);
}
