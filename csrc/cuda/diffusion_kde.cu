// Diffusion KDE fixed point (kdekit::kde2d_solve) on CUDA: the algorithm, status codes and outputs of
// csrc/cpu/diffusion_kde.cpp (kde_diffusion.kde2d's psi recursion and f(t) = t - (t - gamma) / gamma, scipy's brentq
// on [0, t_max]), float64 throughout, one block per item (blocks loop over items).
//
// Each evaluation of f(t) computes the 18 quadratic forms psi(i, j) (2 <= i + j <= 5) level by level, i + j = 5 down
// to 2: every form of a level takes one pass over the spectrum (thread per column l: sum over k in increasing order,
// then a fixed-order block reduction), so a level costs one read of the (K x K) block, K = the largest number of
// frequencies whose diffusion weight is >= 1e-60 (the CPU kernel's cut; it may cut further where the rest is below
// float64 rounding, so results agree to rounding, not bitwise). Every thread runs the same scalar code (the root
// solve) on block-reduced values, so control flow is uniform and results are deterministic. No atomics.
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "../common/brentq.h"
#include "../common/fixed_point.h"
#include "common.cuh"

namespace kdekit::cuda {
namespace {

constexpr int kMaxForms = 6;  // forms psi(i, L - i) of the level L = 5
constexpr int kPowers = 6;    // (k^2)^p, p = 0..5

using namespace kdekit::common;  // Status, SolveOptions, brentq, the fixed-point pieces (csrc/common)

// Maximum of `value` over the block (blockDim.x == kThreads), result valid in every thread.
__device__ double block_max(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride)
      shared[threadIdx.x] = fmax(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

// The fixed point of one item, evaluated cooperatively by the whole block.
struct BlockSolver {
  const double* a;      // (n, n) halved spectrum, row = x frequency k
  int64_t n;
  double N;
  const double* k2pow;  // (kPowers, n): (k^2)^p
  double* e;            // (kMaxForms, n) scratch: diffusion weights of the forms of one level
  double* shared;       // kThreads doubles
  int64_t* nz;          // kMaxForms, shared
  double psi[kMaxForms][kMaxForms];  // psi[i][j], identical in every thread

  // psi(i, L - i) for i = 0..L: at t for L = 5, else each at kde_diffusion's t_ij from the level above.
  __device__ void level(int L, double t) {
    const int nf = L + 1;
    const bool shared_t = L == 5;  // one weight vector for the whole level
    if (static_cast<int>(threadIdx.x) < (shared_t ? 1 : nf)) {
      const int i = threadIdx.x, j = L - i;
      double ti = t;
      if (!shared_t) {
        ti = psi_time(i, j, N, fabs(psi[i + 1][j] + psi[i][j + 1]));
      }
      nz[i] = diffusion_weights(ti, n, e + i * n);
    }
    __syncthreads();
    int64_t K = 0;
    for (int f = 0; f < (shared_t ? 1 : nf); ++f) K = nz[f] > K ? nz[f] : K;
    // form(px = j, py = i) = sum_{k,l} k^{2j} e_k a[k, l]^2 l^{2i} e_l
    double part[kMaxForms] = {};
    for (int64_t l = threadIdx.x; l < K; l += kThreads) {
      double v[kMaxForms] = {};
      for (int64_t k = 0; k < K; ++k) {
        const double ak = a[k * n + l], a2 = ak * ak;
#pragma unroll
        for (int f = 0; f < kMaxForms; ++f)
          if (f < nf) v[f] += (e[(shared_t ? 0 : f) * n + k] * k2pow[(L - f) * n + k]) * a2;
      }
#pragma unroll
      for (int f = 0; f < kMaxForms; ++f)
        if (f < nf) part[f] += v[f] * (e[(shared_t ? 0 : f) * n + l] * k2pow[f * n + l]);
    }
    const double sign = (L % 2) ? -1.0 : 1.0;
    const double scale = sign * pow(kPi, 2.0 * L);
    for (int f = 0; f < nf; ++f) psi[f][L - f] = scale * block_sum(part[f], shared);
  }

  // Sigma = psi02 + psi20 + 2 psi11 at t (all 18 forms).
  __device__ double sigma(double t) {
    for (int L = 5; L >= 2; --L) level(L, t);
    return psi[0][2] + psi[2][0] + 2.0 * psi[1][1];
  }

  // f(t) = t - (t - gamma) / gamma, gamma = (2 pi N Sigma)^(-1/3)
  __device__ double f(double t) {
    const double gamma = pow(2.0 * kPi * N * sigma(t), -1.0 / 3.0);
    return t - (t - gamma) / gamma;
  }
};

__global__ void k2_powers(double* k2pow, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= kPowers * n) return;
  const double k = static_cast<double>(i % n);
  k2pow[i] = pow(k * k, static_cast<double>(i / n));
}

// Block per item (grid-stride over items); times (B, 3) = (t*, tx1, tx2), NaN unless status 0.
__global__ void kde2d_solve_kernel(const double* spectrum, const double* count, const double* k2pow, double* work,
                                   double* times, int32_t* status, int64_t B, int64_t n, SolveOptions o) {
  __shared__ double shared[kThreads];
  __shared__ int64_t nz[kMaxForms];
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const double* a = spectrum + b * n * n;
    // invalid unless every entry is finite and max a^2 is positive and finite (as the CPU kernel)
    double amax2 = 0;
    for (int64_t i = threadIdx.x; i < n * n; i += kThreads) {
      const double v = a[i];
      amax2 = isfinite(v) ? fmax(amax2, v * v) : INFINITY;
    }
    amax2 = block_max(amax2, shared);
    const double N = count[b];
    Status st = kInvalid;
    double out[3] = {nan, nan, nan};
    if (N > 0 && amax2 > 0 && isfinite(amax2)) {
      BlockSolver s{a, n, N, k2pow, work + static_cast<int64_t>(blockIdx.x) * kMaxForms * n, shared, nz, {}};
      double ts = nan;
      st = brentq([&](double t) { return s.f(t); }, 0.0, 1.0, o.t_max, o.xtol, o.rtol, o.maxiter, ts);
      if (st == kOk) {
        s.sigma(ts);
        const double p02 = s.psi[0][2], p20 = s.psi[2][0], p11 = s.psi[1][1];
        double tx1, tx2;
        axis_times(p02, p11, p20, N, &tx1, &tx2);
        if (isfinite(tx1) && isfinite(tx2)) {
          out[0] = ts;
          out[1] = tx1;
          out[2] = tx2;
        } else {
          st = kInvalid;
        }
      }
    }
    if (threadIdx.x == 0) {
      status[b] = st;
      for (int c = 0; c < 3; ++c) times[3 * b + c] = out[c];
    }
  }
}

std::tuple<at::Tensor, at::Tensor> kde2d_solve_cuda(const at::Tensor& spectrum_, const at::Tensor& count_,
                                                    double t_max, double xtol, double rtol, int64_t maxiter) {
  TORCH_CHECK(spectrum_.is_cuda(), "spectrum must be a CUDA tensor, got device ", spectrum_.device());
  TORCH_CHECK(spectrum_.dim() == 3 && spectrum_.size(1) == spectrum_.size(2) && spectrum_.size(1) >= 2,
              "spectrum must be (B, n, n) with n >= 2, got ", spectrum_.sizes());
  TORCH_CHECK(spectrum_.scalar_type() == at::kFloat || spectrum_.scalar_type() == at::kDouble,
              "spectrum must be float32 or float64 (half inputs are widened by the Python wrapper), got ",
              spectrum_.scalar_type());
  const int64_t B = spectrum_.size(0), n = spectrum_.size(1);
  TORCH_CHECK(count_.device() == spectrum_.device(), "count must be on ", spectrum_.device(), ", got ",
              count_.device());
  TORCH_CHECK(count_.dim() == 1 && count_.size(0) == B, "count must have shape (", B, ",), got ", count_.sizes());
  TORCH_CHECK(t_max > 0 && std::isfinite(t_max), "t_max must be positive and finite, got ", t_max);
  TORCH_CHECK(xtol >= 0 && rtol >= 0, "xtol and rtol must be >= 0, got ", xtol, ", ", rtol);
  TORCH_CHECK(maxiter >= 0, "maxiter must be >= 0, got ", maxiter);
  const c10::cuda::CUDAGuard guard(spectrum_.device());
  auto spectrum = spectrum_.to(at::kDouble).contiguous();
  auto count = count_.to(at::kDouble).contiguous();
  auto times = at::empty({B, 3}, spectrum.options());
  auto status = at::empty({B}, spectrum.options().dtype(at::kInt));
  if (B == 0) return {times, status};
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, spectrum.get_device()));
  const int64_t grid = std::min<int64_t>(B, 8 * static_cast<int64_t>(sms > 0 ? sms : 1));
  auto k2pow = at::empty({kPowers, n}, spectrum.options());
  auto work = at::empty({grid, kMaxForms, n}, spectrum.options());
  const cudaStream_t stream = current_stream();
  k2_powers<<<blocks_for(kPowers * n), kThreads, 0, stream>>>(k2pow.data_ptr<double>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  kde2d_solve_kernel<<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
      spectrum.const_data_ptr<double>(), count.const_data_ptr<double>(), k2pow.const_data_ptr<double>(),
      work.data_ptr<double>(), times.data_ptr<double>(), status.data_ptr<int32_t>(), B, n,
      SolveOptions{t_max, xtol, rtol, maxiter});
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {times, status};
}

}  // namespace
}  // namespace kdekit::cuda

TORCH_LIBRARY_IMPL(kdekit, CUDA, m) { m.impl("kde2d_solve", &kdekit::cuda::kde2d_solve_cuda); }
