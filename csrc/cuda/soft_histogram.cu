// Fused 2-D soft histogram on CUDA (forward and backward), float32 / float64, accumulation in the input type.
// Forward: a 16 x 16 thread block owns a 16 x 16 tile of H[b]; points are staged through shared memory in tiles of
// kTile, with the sigmoid differences of the tile's 16 x bins and 16 y bins only. Backward: one thread per point
// with the whole bins x bins gradient read from global memory (bins <= kMaxBins). Same maths as the CPU kernel.
#include "common.cuh"

namespace kdekit_cuda {
namespace {

constexpr int kTileBins = 16;
constexpr int kTile = 64;
constexpr int kMaxBins = 256;

template <typename T>
__device__ __forceinline__ T sigmoid(T z) {
  return T(1) / (T(1) + exp(-z));
}

template <typename T>
__global__ void soft_hist2d_fwd(const T* x, const T* y, const T* w, const double* rx, const double* ry, T* out,
                                int64_t N, int64_t bins, T s) {
  __shared__ T ax[kTile][kTileBins];
  __shared__ T ay[kTile][kTileBins];
  const int64_t b = blockIdx.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTileBins, j0 = static_cast<int64_t>(blockIdx.z) * kTileBins;
  const int ti = threadIdx.y, tj = threadIdx.x, tid = ti * kTileBins + tj;
  const T lox = static_cast<T>(rx[2 * b]), hix = static_cast<T>(rx[2 * b + 1]);
  const T loy = static_cast<T>(ry[2 * b]), hiy = static_cast<T>(ry[2 * b + 1]);
  const T stepx = (hix - lox) / static_cast<T>(bins), stepy = (hiy - loy) / static_cast<T>(bins);
  T acc = 0;
  for (int64_t n0 = 0; n0 < N; n0 += kTile) {
    // 256 threads fill kTile x 16 entries of each of ax, ay
    for (int e = tid; e < kTile * kTileBins; e += kTileBins * kTileBins) {
      const int p = e / kTileBins, k = e % kTileBins;
      const int64_t n = n0 + p;
      T vx = 0, vy = 0;
      if (n < N && i0 + k < bins) {
        const T xv = x[b * N + n];
        vx = sigmoid(s * (xv - bin_edge(lox, hix, stepx, i0 + k, bins))) -
             sigmoid(s * (xv - bin_edge(lox, hix, stepx, i0 + k + 1, bins)));
      }
      if (n < N && j0 + k < bins) {
        const T yv = y[b * N + n];
        vy = w[b * N + n] * (sigmoid(s * (yv - bin_edge(loy, hiy, stepy, j0 + k, bins))) -
                             sigmoid(s * (yv - bin_edge(loy, hiy, stepy, j0 + k + 1, bins))));
      }
      ax[p][k] = vx;
      ay[p][k] = vy;
    }
    __syncthreads();
    for (int p = 0; p < kTile; ++p) acc += ax[p][ti] * ay[p][tj];
    __syncthreads();
  }
  if (i0 + ti < bins && j0 + tj < bins) out[(b * bins + i0 + ti) * bins + j0 + tj] = acc;
}

template <typename T>
__global__ void soft_hist2d_bwd(const T* grad, const T* x, const T* y, const T* w, const double* rx,
                                const double* ry, T* gx, T* gy, T* gw, int64_t B, int64_t N, int64_t bins, T s) {
  const int64_t bn = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (bn >= B * N) return;
  const int64_t b = bn / N;
  const T lox = static_cast<T>(rx[2 * b]), hix = static_cast<T>(rx[2 * b + 1]);
  const T loy = static_cast<T>(ry[2 * b]), hiy = static_cast<T>(ry[2 * b + 1]);
  const T stepx = (hix - lox) / static_cast<T>(bins), stepy = (hiy - loy) / static_cast<T>(bins);
  const T xv = x[bn], yv = y[bn];
  T my[kMaxBins], dmy[kMaxBins], u[kMaxBins];
  T c_lo = sigmoid(s * (yv - bin_edge(loy, hiy, stepy, 0, bins)));
  for (int64_t j = 0; j < bins; ++j) {
    const T c_hi = sigmoid(s * (yv - bin_edge(loy, hiy, stepy, j + 1, bins)));
    my[j] = c_lo - c_hi;
    dmy[j] = s * (c_lo * (T(1) - c_lo) - c_hi * (T(1) - c_hi));
    u[j] = 0;
    c_lo = c_hi;
  }
  const T* G = grad + b * bins * bins;
  T sw = 0, sx = 0;
  c_lo = sigmoid(s * (xv - bin_edge(lox, hix, stepx, 0, bins)));
  for (int64_t i = 0; i < bins; ++i) {
    const T c_hi = sigmoid(s * (xv - bin_edge(lox, hix, stepx, i + 1, bins)));
    const T mx = c_lo - c_hi, dmx = s * (c_lo * (T(1) - c_lo) - c_hi * (T(1) - c_hi));
    c_lo = c_hi;
    T v = 0;  // v_i = sum_j G[i, j] my[j]
    for (int64_t j = 0; j < bins; ++j) {
      const T g = G[i * bins + j];
      v += g * my[j];
      u[j] += mx * g;
    }
    sw += mx * v;
    sx += dmx * v;
  }
  T sy = 0;
  for (int64_t j = 0; j < bins; ++j) sy += u[j] * dmy[j];
  gw[bn] = sw;
  gx[bn] = w[bn] * sx;
  gy[bn] = w[bn] * sy;
}

template <typename T>
int launch_fwd(const T* x, const T* y, const T* w, const double* rx, const double* ry, T* out, int64_t B, int64_t N,
               int64_t bins, double sharpness, intptr_t stream) {
  const int64_t tiles = (bins + kTileBins - 1) / kTileBins;
  const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(tiles), static_cast<unsigned>(tiles));
  soft_hist2d_fwd<T><<<grid, dim3(kTileBins, kTileBins), 0, as_stream(stream)>>>(x, y, w, rx, ry, out, N, bins,
                                                                                static_cast<T>(sharpness));
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_bwd(const T* grad, const T* x, const T* y, const T* w, const double* rx, const double* ry, T* gx, T* gy,
               T* gw, int64_t B, int64_t N, int64_t bins, double sharpness, intptr_t stream) {
  if (bins > kMaxBins) return static_cast<int>(cudaErrorInvalidValue);
  const int64_t blocks = (B * N + kThreads - 1) / kThreads;
  soft_hist2d_bwd<T><<<static_cast<unsigned>(blocks), kThreads, 0, as_stream(stream)>>>(
      grad, x, y, w, rx, ry, gx, gy, gw, B, N, bins, static_cast<T>(sharpness));
  return static_cast<int>(cudaGetLastError());
}

}  // namespace
}  // namespace kdekit_cuda

extern "C" {
int kdekit_soft_histogram2d_f32(const float* x, const float* y, const float* w, const double* rx, const double* ry,
                                float* out, int64_t B, int64_t N, int64_t bins, double s, intptr_t stream) {
  return kdekit_cuda::launch_fwd(x, y, w, rx, ry, out, B, N, bins, s, stream);
}
int kdekit_soft_histogram2d_f64(const double* x, const double* y, const double* w, const double* rx,
                                const double* ry, double* out, int64_t B, int64_t N, int64_t bins, double s,
                                intptr_t stream) {
  return kdekit_cuda::launch_fwd(x, y, w, rx, ry, out, B, N, bins, s, stream);
}
int kdekit_soft_histogram2d_backward_f32(const float* g, const float* x, const float* y, const float* w,
                                         const double* rx, const double* ry, float* gx, float* gy, float* gw,
                                         int64_t B, int64_t N, int64_t bins, double s, intptr_t stream) {
  return kdekit_cuda::launch_bwd(g, x, y, w, rx, ry, gx, gy, gw, B, N, bins, s, stream);
}
int kdekit_soft_histogram2d_backward_f64(const double* g, const double* x, const double* y, const double* w,
                                         const double* rx, const double* ry, double* gx, double* gy, double* gw,
                                         int64_t B, int64_t N, int64_t bins, double s, intptr_t stream) {
  return kdekit_cuda::launch_bwd(g, x, y, w, rx, ry, gx, gy, gw, B, N, bins, s, stream);
}
}
