// The 2-D soft histogram kernel (forward and backward) shared by kdekit::soft_histogram2d (soft_histogram.cpp) and
// the fused training-loss op (soft_kde2d.cpp).
//
//   A[n, i] = sigmoid(s (x_n - e_i)) - sigmoid(s (x_n - e_{i+1}))     (bins + 1 sigmoids per point and axis)
//   forward:  H = A_x^T diag(w) A_y
//   backward: with G = dL/dH, v = A_y G^T, u = A_x G (both N x bins):
//             dL/dw_n = <A_x[n], v[n]>,  dL/dx_n = w_n <dA_x[n], v[n]>,  dL/dy_n = w_n <dA_y[n], u[n]>,
//             dA[n, i] = s (c_i (1 - c_i) - c_{i+1} (1 - c_{i+1})),  c_e = sigmoid(s (x_n - e_e)).
//
// Each item is computed by one thread, in the same order whatever the thread count (bitwise reproducible). Points are
// processed in tiles of kTile: the tile's A (and dA) rows live in per-thread buffers, so the (B, N, bins) matrices
// never exist. The edges are equally spaced, so a point's exps form a geometric sequence: exp(s (e_k - x)) =
// exp(s (e_0 - x)) q_k with q_k = exp(s (e_k - e_0)) per item and axis, one exp a point instead of one an edge (where
// every factor stays a normal number; else one exp an edge). The exps are vectorised (Cody-Waite reduction + Taylor
// polynomial, ~1 ulp); the products of the factors agree with exp of the rounded argument to a few ulp. The products
// a register-blocked micro-kernel, both written with GCC vector extensions (the bins axis padded with zeros to whole
// register blocks). On x86-64 the kernels are compiled for AVX-512 (64-byte vectors), AVX2 + FMA (32) and the
// baseline (16), and run_widest_simd (simd.h) picks one per CPU; results differ between these in the last bits only.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "common.h"
#include "simd.h"

#pragma GCC push_options
#pragma GCC diagnostic push
#pragma GCC optimize("fp-contract=fast")  // fused multiply-adds (-std=c++20 turns contraction off)

namespace kdekit::cpu {

constexpr int64_t kTile = 32;  // points per tile

// The kernels for one vector width: per-thread tile buffers with the bins axis padded to `ld` (a multiple of the
// micro-kernel's kCols vectors; edges past e_bins repeat hi, so padded columns of A and dA are exactly 0).
template <typename T, int Bytes>
struct Kernel {
  using Scalar = T;
  using S = Simd<T, Bytes>;
  using V = typename S::V;
  static constexpr int L = S::kLanes;
  static constexpr int kRows = Bytes == 64 ? 8 : 4, kCols = 2;  // register block of the micro-kernel: 16 or 8 vectors

  // One axis of the current item: its edges e_k (k < ld + L), q_k = exp(s (e_k - e_0)), span = s (e_last - e_0), and
  // exp(s (e_0 - x_n)) of the current tile's points.
  struct Axis {
    std::vector<T> e, q;
    T span;
    T first[kTile];
  };

  const T *x, *y, *w;
  const double *rx, *ry;
  int64_t N, bins, ld;
  T s;
  Axis axx, axy;
  std::vector<T> cdf, dcdf, ax, ay, dax, day, u, v;

  KDEKIT_INLINE Kernel(const T* x_, const T* y_, const T* w_, const double* rx_, const double* ry_, int64_t N_,
                       int64_t bins_, T s_, bool backward)
      : x(x_), y(y_), w(w_), rx(rx_), ry(ry_), N(N_), bins(bins_),
        ld((bins_ + kCols * L - 1) / (kCols * L) * (kCols * L)), s(s_),
        axx{std::vector<T>(ld + L), std::vector<T>(ld + L), T(0), {}},
        axy{std::vector<T>(ld + L), std::vector<T>(ld + L), T(0), {}}, cdf(ld + L), dcdf(backward ? ld + L : 0),
        ax(kTile * ld, T(0)), ay(kTile * ld, T(0)), dax(backward ? kTile * ld : 0, T(0)),
        day(backward ? kTile * ld : 0, T(0)), u(backward ? kTile * ld : 0), v(backward ? kTile * ld : 0) {}

  KDEKIT_INLINE void set_edges(Axis& a, const double* range) const {
    const T lo = static_cast<T>(range[0]), hi = static_cast<T>(range[1]), step = (hi - lo) / static_cast<T>(bins);
    for (int64_t k = 0; k < ld + L; ++k) a.e[k] = bin_edge(lo, hi, step, std::min(k, bins), bins);
    for (int64_t k = 0; k < ld + L; k += L) store(&a.q[k], vexp<S>(s * (load<V>(&a.e[k]) - a.e[0])));
    a.span = s * (a.e[ld + L - 1] - a.e[0]);
  }

  // a.first[n] = exp(s (e_0 - p[n])) for the tile's nt points p
  KDEKIT_INLINE void tile_exps(Axis& a, const T* p, int64_t nt) const {
    T args[kTile];
    for (int64_t n = 0; n < kTile; ++n) args[n] = n < nt ? s * (a.e[0] - p[n]) : T(0);
    for (int64_t n = 0; n < kTile; n += L) store(&a.first[n], vexp<S>(load<V>(&args[n])));
  }

  // One tile row (point n of the tile, at xn): mass[i] = scale * A[i] and, if dmass, dmass[i] = dA[i], for i < ld.
  KDEKIT_INLINE void point(T xn, int64_t n, T scale, const Axis& a, T* mass, T* dmass) {
    const T arg0 = s * (a.e[0] - xn), first = a.first[n];
    // the geometric form where every factor (q_k <= exp(span)) and product is a normal number
    const bool geometric = a.span <= S::kMaxArg && arg0 >= -S::kMaxArg && arg0 + a.span <= S::kMaxArg;
    for (int64_t e = 0; e < ld + L; e += L) {
      const V c = T(1) / (T(1) + (geometric ? first * load<V>(&a.q[e]) : vexp<S>(s * (load<V>(&a.e[e]) - xn))));
      store(&cdf[e], c);
      if (dmass) store(&dcdf[e], c * (T(1) - c));
    }
    for (int64_t i = 0; i < ld; i += L) {
      store(mass + i, scale * (load<V>(&cdf[i]) - load<V>(&cdf[i + 1])));
      if (dmass) store(dmass + i, s * (load<V>(&dcdf[i]) - load<V>(&dcdf[i + 1])));
    }
  }

  // C[r, :] (+)= sum_{k < K} A[r * a_row + k * a_k] B[k, :] for r < kRows; B and C have ld columns (row stride ld).
  static KDEKIT_INLINE void gemm_rows(const T* A, int64_t a_row, int64_t a_k, const T* B, int64_t K, int64_t ld,
                                      T* C, bool accumulate) {
    for (int64_t j = 0; j < ld; j += kCols * L) {
      V acc[kRows][kCols];
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < kCols; ++c) acc[r][c] = accumulate ? load<V>(C + r * ld + j + c * L) : V{};
      for (int64_t k = 0; k < K; ++k) {
        V b[kCols];
        for (int c = 0; c < kCols; ++c) b[c] = load<V>(B + k * ld + j + c * L);
#pragma GCC unroll 8
        for (int r = 0; r < kRows; ++r) {
          const T a = A[r * a_row + k * a_k];
          for (int c = 0; c < kCols; ++c) acc[r][c] += a * b[c];
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < kRows; ++r)
        for (int c = 0; c < kCols; ++c) store(C + r * ld + j + c * L, acc[r][c]);
    }
  }

  // Whether item b has a weighted point inside its limits (on both axes, bounds included).
  KDEKIT_INLINE bool mass_inside(int64_t b) const {
    for (int64_t bn = b * N; bn < (b + 1) * N; ++bn) {
      const double px = static_cast<double>(x[bn]), py = static_cast<double>(y[bn]);
      if (w[bn] != T(0) && px >= rx[2 * b] && px <= rx[2 * b + 1] && py >= ry[2 * b] && py <= ry[2 * b + 1])
        return true;
    }
    return false;
  }

  // H (ld x ld; rows and columns past bins are 0) = the soft histogram of item b.
  KDEKIT_INLINE void histogram(int64_t b, T* H) {
    set_edges(axx, rx + 2 * b);
    set_edges(axy, ry + 2 * b);
    std::fill(H, H + ld * ld, T(0));
    for (int64_t n0 = 0; n0 < N; n0 += kTile) {
      const int64_t nt = std::min(kTile, N - n0);
      tile_exps(axx, x + b * N + n0, nt);
      tile_exps(axy, y + b * N + n0, nt);
      for (int64_t n = 0; n < nt; ++n) {
        const int64_t bn = b * N + n0 + n;
        point(x[bn], n, T(1), axx, &ax[n * ld], nullptr);
        point(y[bn], n, w[bn], axy, &ay[n * ld], nullptr);
      }
      for (int64_t i0 = 0; i0 < bins; i0 += kRows)  // H[i, :] += sum_n A_x[n, i] (w A_y)[n, :]
        gemm_rows(&ax[i0], 1, ld, ay.data(), nt, ld, &H[i0 * ld], true);
    }
  }

  // out (B, bins, bins) for items b0 <= b < b1.
  KDEKIT_INLINE void forward(T* out, int64_t b0, int64_t b1) {
    std::vector<T> H(ld * ld);
    for (int64_t b = b0; b < b1; ++b) {
      histogram(b, H.data());
      for (int64_t i = 0; i < bins; ++i) std::copy_n(&H[i * ld], bins, out + (b * bins + i) * bins);
    }
  }

  // d/d(x, y, w) of item b's points (written to gx, gy, gw at the item's offset) from G = dL/dH and GT = G^T (both
  // ld x ld, zero past bins).
  KDEKIT_INLINE void gradient(int64_t b, const T* G, const T* GT, T* gx, T* gy, T* gw) {
    set_edges(axx, rx + 2 * b);
    set_edges(axy, ry + 2 * b);
    for (int64_t n0 = 0; n0 < N; n0 += kTile) {
      const int64_t nt = std::min(kTile, N - n0);
      tile_exps(axx, x + b * N + n0, nt);
      tile_exps(axy, y + b * N + n0, nt);
      for (int64_t n = 0; n < nt; ++n) {
        point(x[b * N + n0 + n], n, T(1), axx, &ax[n * ld], &dax[n * ld]);
        point(y[b * N + n0 + n], n, T(1), axy, &ay[n * ld], &day[n * ld]);
      }
      for (int64_t r0 = 0; r0 < nt; r0 += kRows) {  // rows past nt are stale and never written out
        gemm_rows(&ay[r0 * ld], ld, 1, GT, bins, ld, &v[r0 * ld], false);  // v[n, i] = sum_j G[i, j] A_y[n, j]
        gemm_rows(&ax[r0 * ld], ld, 1, G, bins, ld, &u[r0 * ld], false);   // u[n, j] = sum_i A_x[n, i] G[i, j]
      }
      for (int64_t n = 0; n < nt; ++n) {
        V sw{}, sx{}, sy{};
        for (int64_t i = n * ld; i < (n + 1) * ld; i += L) {
          const V vi = load<V>(&v[i]);
          sw += load<V>(&ax[i]) * vi;
          sx += load<V>(&dax[i]) * vi;
          sy += load<V>(&day[i]) * load<V>(&u[i]);
        }
        T tw = 0, tx = 0, ty = 0;
        for (int l = 0; l < L; ++l) tw += sw[l], tx += sx[l], ty += sy[l];
        const int64_t bn = b * N + n0 + n;
        gw[bn] = tw;
        gx[bn] = w[bn] * tx;
        gy[bn] = w[bn] * ty;
      }
    }
  }

  // gx, gy, gw of items b0 <= b < b1 from grad = dL/dH (B, bins, bins).
  KDEKIT_INLINE void backward(const T* grad, T* gx, T* gy, T* gw, int64_t b0, int64_t b1) {
    std::vector<T> G(ld * ld, T(0)), GT(ld * ld, T(0));
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t i = 0; i < bins; ++i)
        for (int64_t j = 0; j < bins; ++j) G[i * ld + j] = GT[j * ld + i] = grad[(b * bins + i) * bins + j];
      gradient(b, G.data(), GT.data(), gx, gy, gw);
    }
  }
};

}  // namespace kdekit::cpu

#pragma GCC diagnostic pop
#pragma GCC pop_options
