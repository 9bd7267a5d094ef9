// KL / Jensen-Shannon divergence and total variation distance over the last dim of (B, K) on CUDA: one block per row,
// fixed-order float64 block reduction for every input dtype; forward and backward with the conventions of
// csrc/cpu/divergence.cpp:
//   kl  = sum p log(p / q)                (0 log(0 / q) = 0);  d/dp = log(p / q) + 1, d/dq = -p / q (0 where p = 0)
//   jsd = (kl(p, m) + kl(q, m)) / 2       clamped at 0 (zero gradient where clamped), m = (p + q) / 2
//   tvd = sum |p - q| / 2                 d/dp = sign(p - q) / 2 = -d/dq (0 at p = q)
// A kl/jsd row holding a negative, NaN or infinite entry gives NaN (as the CPU kernel: the Python wrappers read this
// flag instead of scanning the inputs) and a zero gradient.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>
#include <string>

#include "common.cuh"

namespace kdekit::cuda {
namespace {

enum Kind : int { kKL = 0, kJSD = 1, kTVD = 2 };

Kind parse_kind(c10::string_view kind) {
  if (kind == "kl") return kKL;
  if (kind == "jsd") return kJSD;
  if (kind == "tvd") return kTVD;
  TORCH_CHECK(false, "kind must be 'kl', 'jsd' or 'tvd', got '", std::string(kind), "'");
}

// p != 0 (not p > 0): an unchecked negative entry gives NaN, as in the torch path
__device__ __forceinline__ double rel_entr(double p, double q) { return p != 0 ? p * log(p / q) : 0.0; }

// The row's value (jsd not yet clamped); NaN for a kl/jsd row with a negative or non-finite entry. Every thread of the
// block must call it (block-wide reductions).
template <typename T>
__device__ double row_divergence(const T* p, const T* q, int64_t K, Kind kind, double* shared) {
  double sum = 0;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < K; i += kThreads) {
    const double pi = static_cast<double>(p[i]), qi = static_cast<double>(q[i]);
    bad = bad || !(pi >= 0 && pi < INFINITY && qi >= 0 && qi < INFINITY);
    if (kind == kKL) {
      sum += rel_entr(pi, qi);
    } else if (kind == kJSD) {
      const double m = 0.5 * (pi + qi);
      sum += rel_entr(pi, m) + rel_entr(qi, m);
    } else {
      sum += fabs(pi - qi);
    }
  }
  const double total = block_sum(sum, shared);
  if (kind != kTVD && __syncthreads_or(bad)) return NAN;
  return kind == kKL ? total : 0.5 * total;
}

template <typename T>
__global__ void divergence_fwd(const T* p, const T* q, T* out, int64_t K, Kind kind) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  double v = row_divergence(p + b * K, q + b * K, K, kind, shared);
  if (kind == kJSD && v < 0) v = 0;
  if (threadIdx.x == 0) out[b] = static_cast<T>(v);
}

template <typename T>
__global__ void divergence_bwd(const double* grad, const T* p, const T* q, T* gp, T* gq, int64_t K, Kind kind) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  const T *pb = p + b * K, *qb = q + b * K;
  const double v = kind == kTVD ? 0.0 : row_divergence(pb, qb, K, kind, shared);
  const double g = isnan(v) || (kind == kJSD && v < 0) ? 0.0 : grad[b];  // NaN row, or jsd clamped at 0
  for (int64_t i = threadIdx.x; i < K; i += kThreads) {
    if (g == 0) {  // also where the derivative itself is NaN or infinite (as the CPU kernel)
      gp[b * K + i] = gq[b * K + i] = static_cast<T>(0);
      continue;
    }
    const double pi = static_cast<double>(pb[i]), qi = static_cast<double>(qb[i]);
    double dp, dq;
    if (kind == kKL) {
      dp = pi > 0 ? log(pi / qi) + 1.0 : 0.0;
      dq = pi > 0 ? -pi / qi : 0.0;
    } else if (kind == kJSD) {
      const double m = 0.5 * (pi + qi);
      const double own_p = pi > 0 ? log(pi / m) + 1.0 - pi / (2 * m) : 0.0;
      const double own_q = qi > 0 ? log(qi / m) + 1.0 - qi / (2 * m) : 0.0;
      const double cross_p = qi > 0 ? qi / (2 * m) : 0.0;  // d/dp of q log(q / m)
      const double cross_q = pi > 0 ? pi / (2 * m) : 0.0;
      dp = 0.5 * (own_p - cross_p);
      dq = 0.5 * (own_q - cross_q);
    } else {
      dp = pi > qi ? 0.5 : (pi < qi ? -0.5 : 0.0);
      dq = -dp;
    }
    gp[b * K + i] = static_cast<T>(g * dp);
    gq[b * K + i] = static_cast<T>(g * dq);
  }
}

void check_pair(const at::Tensor& p, const at::Tensor& q) {
  check_float_cuda(p, "p");
  TORCH_CHECK(p.dim() == 2, "p must be (B, K), got ", p.sizes());
  check_points(q, "q", p);
}

at::Tensor divergence_cuda(const at::Tensor& p_, const at::Tensor& q_, c10::string_view kind_) {
  check_pair(p_, q_);
  const Kind kind = parse_kind(kind_);
  const c10::cuda::CUDAGuard guard(p_.device());
  auto p = p_.contiguous(), q = q_.contiguous();
  const int64_t B = p.size(0), K = p.size(1);
  auto out = at::empty({B}, p.options());
  if (B == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "divergence_cuda", [&] {
    divergence_fwd<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, current_stream()>>>(
        p.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), K, kind);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> divergence_backward_cuda(const at::Tensor& grad_, const at::Tensor& p_,
                                                            const at::Tensor& q_, c10::string_view kind_) {
  check_pair(p_, q_);
  check_grad(grad_, {p_.size(0)}, p_);
  const Kind kind = parse_kind(kind_);
  const c10::cuda::CUDAGuard guard(p_.device());
  auto p = p_.contiguous(), q = q_.contiguous(), grad = grad_.to(at::kDouble).contiguous();
  const int64_t B = p.size(0), K = p.size(1);
  auto gp = at::empty_like(p), gq = at::empty_like(q);
  if (B == 0 || K == 0) return {gp, gq};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "divergence_backward_cuda", [&] {
    divergence_bwd<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, current_stream()>>>(
        grad.const_data_ptr<double>(), p.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(),
        gp.data_ptr<scalar_t>(), gq.data_ptr<scalar_t>(), K, kind);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gp, gq};
}

}  // namespace
}  // namespace kdekit::cuda

TORCH_LIBRARY_IMPL(kdekit, CUDA, m) {
  m.impl("divergence", &kdekit::cuda::divergence_cuda);
  m.impl("divergence_backward", &kdekit::cuda::divergence_backward_cuda);
}
