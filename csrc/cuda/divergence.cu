// KL / Jensen-Shannon divergence over the last dim of (B, K) on CUDA: one block per row, fixed-order float64 block
// reduction; forward and backward with the conventions of csrc/cpu/divergence.cpp (kind 0 = kl, 1 = jsd).
#include <cmath>

#include "common.cuh"

namespace kdekit_cuda {
namespace {

__device__ __forceinline__ double rel_entr(double p, double q) { return p != 0 ? p * log(p / q) : 0.0; }

template <typename T>
__device__ double row_divergence(const T* p, const T* q, int64_t K, int kind, double* shared) {
  double sum = 0;
  for (int64_t i = threadIdx.x; i < K; i += kThreads) {
    const double pi = static_cast<double>(p[i]), qi = static_cast<double>(q[i]);
    if (kind == 0) {
      sum += rel_entr(pi, qi);
    } else {
      const double m = 0.5 * (pi + qi);
      sum += 0.5 * (rel_entr(pi, m) + rel_entr(qi, m));
    }
  }
  return block_sum(sum, shared);
}

template <typename T>
__global__ void divergence_fwd(const T* p, const T* q, T* out, int64_t K, int kind) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  double v = row_divergence(p + b * K, q + b * K, K, kind, shared);
  if (kind == 1 && v < 0) v = 0;
  if (threadIdx.x == 0) out[b] = static_cast<T>(v);
}

template <typename T>
__global__ void divergence_bwd(const T* grad, const T* p, const T* q, T* gp, T* gq, int64_t K, int kind) {
  __shared__ double shared[kThreads];
  const int64_t b = blockIdx.x;
  const T *pb = p + b * K, *qb = q + b * K;
  double g = static_cast<double>(grad[b]);
  if (kind == 1 && row_divergence(pb, qb, K, kind, shared) < 0) g = 0;  // clamped at 0
  for (int64_t i = threadIdx.x; i < K; i += kThreads) {
    const double pi = static_cast<double>(pb[i]), qi = static_cast<double>(qb[i]);
    double dp, dq;
    if (kind == 0) {
      dp = pi > 0 ? log(pi / qi) + 1.0 : 0.0;
      dq = pi > 0 ? -pi / qi : 0.0;
    } else {
      const double m = 0.5 * (pi + qi);
      const double own_p = pi > 0 ? log(pi / m) + 1.0 - pi / (2 * m) : 0.0;
      const double own_q = qi > 0 ? log(qi / m) + 1.0 - qi / (2 * m) : 0.0;
      dp = 0.5 * (own_p - (qi > 0 ? qi / (2 * m) : 0.0));
      dq = 0.5 * (own_q - (pi > 0 ? pi / (2 * m) : 0.0));
    }
    gp[b * K + i] = static_cast<T>(g * dp);
    gq[b * K + i] = static_cast<T>(g * dq);
  }
}

}  // namespace
}  // namespace kdekit_cuda

extern "C" {
int kdekit_divergence_f32(const float* p, const float* q, float* out, int64_t B, int64_t K, int kind, intptr_t stream) {
  kdekit_cuda::divergence_fwd<float><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0,
                                       kdekit_cuda::as_stream(stream)>>>(p, q, out, K, kind);
  return static_cast<int>(cudaGetLastError());
}
int kdekit_divergence_f64(const double* p, const double* q, double* out, int64_t B, int64_t K, int kind,
                          intptr_t stream) {
  kdekit_cuda::divergence_fwd<double><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0,
                                        kdekit_cuda::as_stream(stream)>>>(p, q, out, K, kind);
  return static_cast<int>(cudaGetLastError());
}
int kdekit_divergence_backward_f32(const float* g, const float* p, const float* q, float* gp, float* gq, int64_t B,
                                   int64_t K, int kind, intptr_t stream) {
  kdekit_cuda::divergence_bwd<float><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0,
                                       kdekit_cuda::as_stream(stream)>>>(g, p, q, gp, gq, K, kind);
  return static_cast<int>(cudaGetLastError());
}
int kdekit_divergence_backward_f64(const double* g, const double* p, const double* q, double* gp, double* gq,
                                   int64_t B, int64_t K, int kind, intptr_t stream) {
  kdekit_cuda::divergence_bwd<double><<<static_cast<unsigned>(B), kdekit_cuda::kThreads, 0,
                                        kdekit_cuda::as_stream(stream)>>>(g, p, q, gp, gq, K, kind);
  return static_cast<int>(cudaGetLastError());
}
}
