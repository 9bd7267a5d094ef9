// The CPU diffusion-KDE machinery shared by kdekit::kde2d_solve / kde2d_points (diffusion_kde.cpp) and the fused
// training-loss op (soft_kde2d.cpp): per item on one thread, in float64.
//
// Spectral truncation. Every sum over frequencies (psi quadratic forms, smoothing) has non-negative weights that
// decay like exp(-pi^2 k^2 t); |a[k, l]| <= 4 m (m = histogram mass / N). A form is summed over the leading K x K
// block only when the bound on everything outside it, 16 m^2 (R_tail C_all + R_all C_tail), is below kTailEps times
// the block's own sum; so dropped terms are below the float64 rounding of the full sum and results agree with the
// full-grid computation to rounding. From points, the spectrum is computed lazily for the leading block only:
// a[k, l] = 4 / N sum_u c_u cos(pi k (2 i_u + 1) / 2n) cos(pi l (2 j_u + 1) / 2n) over the occupied bins u, grouped
// by the bins of one axis (see Spectrum). The full density C^T S C (S = smoothed spectrum, C = cosines) uses the
// symmetry C[k, n-1-m] = (-1)^k C[k, m] on both axes (half the products), or the factors when they are few.
//
// The root solve is scipy.optimize.brentq step for step (csrc/common/brentq.h), so iterates match kde_diffusion's.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "../common/brentq.h"
#include "../common/fixed_point.h"
#include "common.h"
#include "simd.h"

namespace kdekit::cpu {

using common::brentq;
using common::kInvalid;
using common::kNoSignChange;
using common::kNotConverged;
using common::kOk;
using common::kPi;
using common::SolveOptions;
using common::Status;
constexpr double kTailEps = 1e-18;
const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// cos(pi k (2m + 1) / (2n)) for k, m < n, from the exact integer phase k (2m + 1) mod 4n; by_m[m * n + k] and
// by_k[k * n + m]. Cached per n (read-only after construction).
struct CosineTable {
  int64_t n;
  std::vector<double> by_m, by_k;
  explicit CosineTable(int64_t n_) : n(n_), by_m(n_ * n_), by_k(n_ * n_) {
    for (int64_t k = 0; k < n; ++k)
      for (int64_t m = 0; m < n; ++m) {
        const int64_t phase = (k * (2 * m + 1)) % (4 * n);
        const double c = std::cos(static_cast<double>(phase) * (kPi / (2.0 * static_cast<double>(n))));
        by_m[m * n + k] = c;
        by_k[k * n + m] = c;
      }
  }
};

// The table for grid n (built once, shared by all threads).
std::shared_ptr<const CosineTable> cosine_table(int64_t n);

// (6, n) powers (k^2)^p, p = 0..5, k < n, for grid n (built once, shared by all threads).
std::shared_ptr<const std::vector<double>> k2_powers(int64_t n);

// The sign and scale (-1)^L pi^(2L) of the level-L psi forms, L = 0..5.
inline double psi_scale(int L) {
  static const auto table = [] {
    std::array<double, 6> t{};
    for (int l = 0; l < 6; ++l) t[l] = ((l % 2) ? -1.0 : 1.0) * std::pow(kPi, 2.0 * l);
    return t;
  }();
  return table[L];
}

// out[r * ldo + w] = sum over j = j0, j0 + js, ... < j1 of A[r * lda + j] * B[j * ldb + w] (r < rows, w < cols),
// each sum accumulated from 0 in increasing j whatever the tiling (register tiles of the CPU's widest vectors).
void gemm_strided(int64_t rows, int64_t cols, int64_t j0, int64_t j1, int64_t js, const double* A, int64_t lda,
                  const double* B, int64_t ldb, double* out, int64_t ldo);

// v[i * ldv + l] = sum_{k < K} r[i * ldr + k] a2[k * n + l] for i < rows, l < K (each sum in increasing k, as
// gemm_strided).
void weighted_row_sum(int64_t rows, int64_t K, int64_t n, const double* r, int64_t ldr, const double* a2, double* v,
                      int64_t ldv);

// Halved DCT spectrum a and a^2 (n x n, row = x frequency); entries valid for k, l < known.
// From points it is kept as R factor pairs, a[k, l] = sum_i px[k * R + i] py[i * n + l], one per occupied bin of the
// axis with fewer occupied bins (px: that bin's cosines, py: the mass-weighted cosine sum of its points on the other
// axis; the halving of row and column 0 folded into the factors). Items whose points share few bins on one axis
// (identical ratings on a dimension) have a small R, which makes their psi forms and density cheap.
struct Spectrum {
  int64_t n = 0, known = 0, R = 0;  // R = 0: dense input (kde2d_solve)
  double amax2 = 0;  // bound on every a[k, l]^2
  std::vector<double> a, a2, px, py;

  void reset(int64_t n_) {
    n = n_;
    known = 0;
    R = 0;
    if (static_cast<int64_t>(a.size()) != n * n) {
      a.assign(n * n, 0.0);
      a2.assign(n * n, 0.0);
    }
  }

  // A dense halved spectrum a (n x n, row-major): every entry known; amax2 NaN where an entry is not finite.
  void dense(int64_t n_, const double* a_) {
    reset(n_);
    double m2 = 0;
    bool finite = true;
    for (int64_t i = 0; i < n * n; ++i) {
      a[i] = a_[i];
      a2[i] = a_[i] * a_[i];
      finite = finite && std::isfinite(a_[i]);
      m2 = std::max(m2, a2[i]);
    }
    known = n;
    amax2 = finite ? m2 : std::numeric_limits<double>::quiet_NaN();
  }

  // Factors from occupied bins (bx, by) with mass m (mass / N), sorted by bx then by.
  void factor(const CosineTable& table, const std::vector<int64_t>& bx, const std::vector<int64_t>& by,
              const std::vector<double>& m) {
    const int64_t U = static_cast<int64_t>(m.size());
    std::vector<int64_t> xs(bx), ys(by);
    std::sort(ys.begin(), ys.end());
    const int64_t ux = std::unique(xs.begin(), xs.end()) - xs.begin();
    const int64_t uy = std::unique(ys.begin(), ys.end()) - ys.begin();
    const bool by_x = ux <= uy;
    R = by_x ? ux : uy;
    const std::vector<int64_t>& key = by_x ? bx : by;
    const std::vector<int64_t>& other = by_x ? by : bx;
    std::vector<int64_t> order(U);
    for (int64_t u = 0; u < U; ++u) order[u] = u;
    if (!by_x) std::stable_sort(order.begin(), order.end(), [&](int64_t l, int64_t r) { return by[l] < by[r]; });
    // f[i]: cosines of group i's bin on the grouping axis; g[i]: sum of 4 m_u cosines on the other axis
    std::vector<double> f(R * n), g(R * n, 0.0);
    const double* T = table.by_m.data();
    int64_t i = -1;
    for (int64_t j = 0; j < U; ++j) {
      const int64_t u = order[j];
      if (j == 0 || key[u] != key[order[j - 1]]) {
        ++i;
        std::copy(T + key[u] * n, T + key[u] * n + n, &f[i * n]);
      }
      const double c = 4.0 * m[u];
      const double* co = T + other[u] * n;
      double* gi = &g[i * n];
      for (int64_t l = 0; l < n; ++l) gi[l] += c * co[l];
    }
    const std::vector<double>& fx = by_x ? f : g;
    const std::vector<double>& fy = by_x ? g : f;
    px.resize(n * R);
    py.resize(R * n);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t k = 0; k < n; ++k) px[k * R + r] = fx[r * n + k];
      std::copy(&fy[r * n], &fy[r * n] + n, &py[r * n]);
      px[r] *= 0.5;  // k = 0
      py[r * n] *= 0.5;  // l = 0
    }
  }

  // Make a[k, l] available for k, l < K (from the factors: the new L-shaped band).
  void ensure(int64_t K) {
    if (K <= known) return;
    // grow geometrically in multiples of 8 (extra frequencies are harmless: sums use their own leading block)
    K = std::min(n, (std::max(K, known + known / 2) + 7) & ~int64_t(7));
    const int64_t K1 = known;
    gemm_strided(K1, K - K1, 0, R, 1, px.data(), R, py.data() + K1, n, &a[K1], n);
    gemm_strided(K - K1, K, 0, R, 1, px.data() + K1 * R, R, py.data(), n, &a[K1 * n], n);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t l = k < K1 ? K1 : 0; l < K; ++l) a2[k * n + l] = a[k * n + l] * a[k * n + l];
    known = K;
  }
};

// Smoothing weights exp(-pi^2 k^2 t / 2) (no 1/2 factor) for k < n, by vectorised exps; returns the number K of
// leading frequencies outside of which the (|a| <= 4m) tail of the smoothed spectrum is below 1e-18 m (suffix sums, no
// cancellation).
int64_t smoothing_weights(double t, int64_t n, std::vector<double>& f);

// sum_{i < n} term(i) in four interleaved partial sums (no serial chain of additions); dot and sum_of below.
template <typename Term>
inline double partial_sums(int64_t n, const Term& term) {
  double p[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; ++j) p[j] += term(i + j);
  for (; i < n; ++i) p[0] += term(i);
  return (p[0] + p[1]) + (p[2] + p[3]);
}

inline double dot(const double* a, const double* b, int64_t n) {
  return partial_sums(n, [&](int64_t i) { return a[i] * b[i]; });
}

inline double sum_of(const double* v, int64_t n) {
  return partial_sums(n, [&](int64_t i) { return v[i]; });
}

class Solver {
 public:
  Solver(Spectrum& s, double count) : s_(s), N_(count), k2pow_(k2_powers(s.n)) {}

  // psi(i, j, t) of kde_diffusion (x frequency weighted by k^{2j}, y by l^{2i}); kde_diffusion's recursion with
  // memoisation: 18 quadratic forms per call of sigma(), none at a time it was called with before (brentq's root is
  // one of the times it evaluated).
  double sigma(double t) {
    const auto seen = std::find_if(evaluated_.begin(), evaluated_.end(), [&](const Memo& m) { return m.t == t; });
    if (seen != evaluated_.end()) {
      memo_ = *seen;
    } else {
      memo_.t = t;
      for (auto& v : memo_.psi) v = kNaN;
      psi(0, 2);
      psi(2, 0);
      psi(1, 1);
      evaluated_.push_back(memo_);
    }
    return psi(0, 2) + psi(2, 0) + 2.0 * psi(1, 1);
  }

  double psi(int i, int j) {
    double& slot = memo_.psi[i * 6 + j];
    if (!std::isnan(slot)) return slot;
    double t = memo_.t;
    if (i + j <= 4) {
      t = common::psi_time(i, j, N_, std::fabs(psi(i + 1, j) + psi(i, j + 1)));
    }
    slot = psi_scale(i + j) * form(j, i, t);
    return slot;
  }

  // f(t) = t - (t - gamma) / gamma, gamma = (2 pi N Sigma)^(-1/3)
  double f(double t) {
    const double gamma = std::pow(2.0 * kPi * N_ * sigma(t), -1.0 / 3.0);
    return t - (t - gamma) / gamma;
  }

  // sum_{k,l} k^{2 px} e_k a2[k, l] l^{2 py} e_l over the leading block that makes the rest negligible.
  double form(int px, int py, double t) {
    if (t != weights_t_) {  // the forms of one level share their time
      e_.resize(s_.n);
      nz_ = common::diffusion_weights(t, s_.n, e_.data());  // weights beyond nz_ are exactly 0
      weights_t_ = t;
    }
    const int64_t n = nz_;
    r_.resize(n);
    c_.resize(n);
    const double *kx = &(*k2pow_)[px * s_.n], *ky = &(*k2pow_)[py * s_.n];
    for (int64_t k = 0; k < n; ++k) {
      r_[k] = e_[k] * kx[k];
      c_[k] = e_[k] * ky[k];
    }
    const double R = sum_of(r_.data(), n), Cs = sum_of(c_.data(), n);
    // smallest K with tail(K) = amax2 (sum_{k >= K} r_k Cs + R sum_{l >= K} c_l) <= bound: the tail only grows as K
    // falls, so walk down from the last non-zero weight (the tail sums accumulate from the end), 8 weights at a time
    // until the tail with them would pass the bound, then one at a time
    auto first_k = [&](double bound) {
      double rt = 0.0, ct = 0.0;
      int64_t K = n;  // rt, ct: the sums from K on
      for (; K - 8 >= 1; K -= 8) {
        const double rb = sum_of(&r_[K - 8], 8), cb = sum_of(&c_[K - 8], 8);
        if (s_.amax2 * ((rt + rb) * Cs + R * (ct + cb)) > bound) break;
        rt += rb;
        ct += cb;
      }
      for (; K - 1 >= 1; --K) {
        rt += r_[K - 1];
        ct += c_[K - 1];
        if (s_.amax2 * (rt * Cs + R * ct) > bound) return K;
      }
      return int64_t(1);
    };
    int64_t K = first_k(1e-20 * s_.amax2 * R * Cs);
    if (s_.R > 0 && s_.R * (s_.R + 1) * n < K * K) return factored_sum(n);
    double sum = block_sum(K);
    if (K < n) {
      const int64_t K2 = first_k(kTailEps * sum);
      if (K2 > K) sum = block_sum(K2);
    }
    return sum;
  }

 private:
  double block_sum(int64_t K) {
    s_.ensure(K);
    v_.resize(K);
    weighted_row_sum(1, K, s_.n, r_.data(), K, s_.a2.data(), v_.data(), K);
    return dot(v_.data(), c_.data(), K);
  }

  // The same form from the factors, over all nz non-zero weights: a^2 = sum_{i,j} (px_i px_j) (py_i py_j)^T.
  double factored_sum(int64_t nz) {
    const int64_t R = s_.R, n = s_.n;
    g_.assign(R * R, 0.0);
    for (int64_t k = 0; k < nz; ++k) {
      const double* p = &s_.px[k * R];
      for (int64_t i = 0; i < R; ++i) {
        const double v = r_[k] * p[i];
        for (int64_t j = 0; j <= i; ++j) g_[i * R + j] += v * p[j];
      }
    }
    double sum = 0.0;
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        const double *qi = &s_.py[i * n], *qj = &s_.py[j * n];
        double gy = 0.0;
        for (int64_t l = 0; l < nz; ++l) gy += c_[l] * qi[l] * qj[l];
        sum += (i == j ? 1.0 : 2.0) * g_[i * R + j] * gy;
      }
    return sum;
  }

  struct Memo {
    double t;
    std::array<double, 36> psi;
  };
  Spectrum& s_;
  double N_;
  Memo memo_{};
  std::vector<Memo> evaluated_;
  std::shared_ptr<const std::vector<double>> k2pow_;  // (k^2)^p, p = 0..5
  double weights_t_ = kNaN;  // the time of e_
  int64_t nz_ = 0;
  std::vector<double> e_, r_, c_, v_, g_;
};


// TORCH_CHECKs the solver options of an op.
void check_solve_options(const SolveOptions& o);

// Fills times = (t*, tx1, tx2); returns the status.
Status solve(Spectrum& s, double count, const SolveOptions& o, double* times);

// Q[p, k] = sum over the grid points m of block p of cos(pi k (2m + 1) / 2n) (row-major, and transposed QT).
struct PooledCosines {
  int64_t pool;
  std::vector<double> Q, QT;
  PooledCosines(const CosineTable& table, int64_t pool_) : pool(pool_) {
    const int64_t n = table.n;
    if (pool == 0) return;
    Q.assign(pool * n, 0.0);
    QT.assign(n * pool, 0.0);
    for (int64_t p = 0; p < pool; ++p)
      for (int64_t m = p * (n / pool); m < (p + 1) * (n / pool); ++m)
        for (int64_t k = 0; k < n; ++k) Q[p * n + k] += table.by_m[m * n + k];
    for (int64_t p = 0; p < pool; ++p)
      for (int64_t k = 0; k < n; ++k) QT[k * pool + p] = Q[p * n + k];
  }
};

// blocks[q / (n / pool)] += the sum of max(scale * row[q], clip) over each block of one density row (n values);
// with `raised`, flags the cells of the row the clip raised (scale * row[q] < clip).
inline void add_clipped_row(int64_t n, int64_t pool, double scale, double clip, const double* row, double* blocks,
                            bool* raised = nullptr) {
  if (raised)
    for (int64_t q = 0; q < n; ++q) raised[q] = scale * row[q] < clip;
  const int64_t side = n / pool;
  for (int64_t qb = 0; qb < pool; ++qb) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};  // four partial sums: the loop vectorises
    const double* cell = row + qb * side;
    int64_t q = 0;
    for (; q + 4 <= side; q += 4)
      for (int64_t v = 0; v < 4; ++v) acc[v] += std::max(scale * cell[q + v], clip);
    for (; q < side; ++q) acc[0] += std::max(scale * cell[q], clip);
    blocks[qb] += (acc[0] + acc[1]) + (acc[2] + acc[3]);
  }
}

// blocks /= their sum (left as they are when the sum is 0); returns the sum.
inline double normalize_blocks(int64_t count, double* blocks) {
  double total = 0;
  for (int64_t i = 0; i < count; ++i) total += blocks[i];
  const double inv = total != 0 ? 1.0 / total : 1.0;
  for (int64_t i = 0; i < count; ++i) blocks[i] *= inv;
  return total;
}

// Smoothed spectrum a[k, l] fx[k] fy[l] (k < Kx, l < Ky) -> density C^T (.) C on the grid (not yet scaled), or the
// pooled block sums Q (.) Q^T. Per-thread scratch buffers.
struct Synthesis {
  int64_t n;
  const CosineTable* table;

  Synthesis(int64_t n_, const CosineTable* table_) : n(n_), table(table_) {}

  void run(Spectrum& s, const std::vector<double>& fx, int64_t Kx, const std::vector<double>& fy, int64_t Ky,
           const PooledCosines* pooled, double* out) {
    if (pooled) {
      smooth(s, fx, Kx, fy, Ky);
      const int64_t k = pooled->pool;
      Z.resize(Kx * k);
      gemm_strided(Kx, k, 0, Ky, 1, S.data(), Ky, pooled->QT.data(), k, Z.data(), k);
      gemm_strided(k, k, 0, Kx, 1, pooled->Q.data(), n, Z.data(), k, out, k);
      return;
    }
    if (use_factors(s, Kx, Ky)) return factored(s, fx, Kx, fy, Ky, out);
    density_rows(s, fx, Kx, fy, Ky, [&](int64_t m, const double* row) { std::copy(row, row + n, out + m * n); });
  }

  // The (pool x pool) block sums of max(scale * density, clip) (not normalised), one tile of rows at a time.
  void clipped_blocks(Spectrum& s, const std::vector<double>& fx, int64_t Kx, const std::vector<double>& fy,
                      int64_t Ky, int64_t pool, double scale, double clip, double* blocks) {
    std::fill(blocks, blocks + pool * pool, 0.0);
    const int64_t side = n / pool;
    if (use_factors(s, Kx, Ky)) {
      D.resize(n * n);
      factored(s, fx, Kx, fy, Ky, D.data());
      for (int64_t m = 0; m < n; ++m) add_clipped_row(n, pool, scale, clip, &D[m * n], blocks + (m / side) * pool);
      return;
    }
    density_rows(s, fx, Kx, fy, Ky, [&](int64_t m, const double* row) {
      add_clipped_row(n, pool, scale, clip, row, blocks + (m / side) * pool);
    });
  }

 private:
  static constexpr int64_t kTile = 16;  // density rows per tile (both parities: 2 x 16 x n doubles stay in cache)
  std::vector<double> S, Z, E, D, T;  // scratch

  bool use_factors(const Spectrum& s, int64_t Kx, int64_t Ky) const {
    const int64_t h = n / 2, R = s.R;
    return R > 0 && R * n * (n + Kx + Ky) < h * Kx * (n + Ky);
  }

  // S = a[k, l] fx[k] fy[l] (Kx x Ky)
  void smooth(Spectrum& s, const std::vector<double>& fx, int64_t Kx, const std::vector<double>& fy, int64_t Ky) {
    s.ensure(std::max(Kx, Ky));
    S.resize(Kx * Ky);
    for (int64_t k = 0; k < Kx; ++k)
      for (int64_t l = 0; l < Ky; ++l) S[k * Ky + l] = s.a[k * n + l] * fx[k] * fy[l];
  }

  // visit(m, row) for every grid row m of the density C^T S C (unscaled), produced in tiles of kTile rows.
  // C[k, n-1-m] = (-1)^k C[k, m]: even and odd frequencies summed over half the grid, then combined, per axis; the
  // axis with fewer frequencies goes last (the n x n stage costs n^2 / 2 per frequency).
  template <typename Visit>
  void density_rows(Spectrum& s, const std::vector<double>& fx, int64_t Kx, const std::vector<double>& fy,
                    int64_t Ky, Visit&& visit) {
    smooth(s, fx, Kx, fy, Ky);
    const int64_t h = n / 2;
    const double *cm = table->by_m.data(), *ck = table->by_k.data();
    T.resize(2 * kTile * n);
    if (Kx <= Ky) {  // Z = S C (Kx x n); rows p and n-1-p of C^T Z from even +- odd frequencies
      Z.resize(Kx * n);
      E.resize(2 * Kx * h);
      for (int par = 0; par < 2; ++par) gemm_strided(Kx, h, par, Ky, 2, S.data(), Ky, ck, n, &E[par * Kx * h], h);
      combine(Kx, E.data(), E.data() + Kx * h, h, 1, Z.data(), n, 1);  // columns q, n-1-q
      D.resize(2 * n);
      for (int64_t p0 = 0; p0 < h; p0 += kTile) {
        const int64_t rows = std::min(kTile, h - p0);
        for (int par = 0; par < 2; ++par)
          gemm_strided(rows, n, par, Kx, 2, cm + p0 * n, n, Z.data(), n, &T[par * kTile * n], n);
        for (int64_t i = 0; i < rows; ++i) {
          const double *ev = &T[i * n], *od = &T[(kTile + i) * n];
          for (int64_t q = 0; q < n; ++q) {
            D[q] = ev[q] + od[q];
            D[n + q] = ev[q] - od[q];
          }
          visit(p0 + i, D.data());
          visit(n - 1 - p0 - i, D.data() + n);
        }
      }
    } else {  // Z = C^T S (n x Ky); columns q and n-1-q of Z C from even +- odd frequencies, kTile rows at a time
      Z.resize(n * Ky);
      E.resize(2 * h * Ky);
      for (int par = 0; par < 2; ++par) gemm_strided(h, Ky, par, Kx, 2, cm, n, S.data(), Ky, &E[par * h * Ky], Ky);
      combine(Ky, E.data(), E.data() + h * Ky, 1, Ky, Z.data(), 1, Ky);  // rows m, n-1-m
      D.resize(n);
      for (int64_t m0 = 0; m0 < n; m0 += kTile) {
        const int64_t rows = std::min(kTile, n - m0);
        for (int par = 0; par < 2; ++par)
          gemm_strided(rows, h, par, Ky, 2, Z.data() + m0 * Ky, Ky, ck, n, &T[par * kTile * h], h);
        for (int64_t i = 0; i < rows; ++i) {
          combine(1, &T[i * h], &T[(kTile + i) * h], 0, 1, D.data(), 0, 1);
          visit(m0 + i, D.data());
        }
      }
    }
  }

  // The even/odd halves of a cosine synthesis into the whole axis (C[k, n-1-m] = (-1)^k C[k, m]): for i < outer,
  // j < n / 2: out[i oi + j oj] = even + odd and out[i oi + (n-1-j) oj] = even - odd, where even = E[i ei + j ej]
  // and odd = O[i ei + j ej].
  void combine(int64_t outer, const double* E, const double* O, int64_t ei, int64_t ej, double* out, int64_t oi,
               int64_t oj) const {
    const int64_t h = n / 2;
    for (int64_t i = 0; i < outer; ++i)
      for (int64_t j = 0; j < h; ++j) {
        const double ev = E[i * ei + j * ej], od = O[i * ei + j * ej];
        out[i * oi + j * oj] = ev + od;
        out[i * oi + (n - 1 - j) * oj] = ev - od;
      }
  }

  // Few factors (points on few bins of one axis): density = Gx^T Gy, G[i, m] = sum_k factor_i[k] f[k] C[k, m].
  void factored(const Spectrum& s, const std::vector<double>& fx, int64_t Kx, const std::vector<double>& fy,
                int64_t Ky, double* out) {
    const int64_t R = s.R;
    S.resize(R * (Kx + Ky));
    double *ax = S.data(), *ay = S.data() + R * Kx;
    for (int64_t i = 0; i < R; ++i) {
      for (int64_t k = 0; k < Kx; ++k) ax[i * Kx + k] = s.px[k * R + i] * fx[k];
      for (int64_t l = 0; l < Ky; ++l) ay[i * Ky + l] = s.py[i * n + l] * fy[l];
    }
    Z.resize(2 * R * n);
    gemm_strided(R, n, 0, Kx, 1, ax, Kx, table->by_k.data(), n, Z.data(), n);
    gemm_strided(R, n, 0, Ky, 1, ay, Ky, table->by_k.data(), n, &Z[R * n], n);
    E.resize(n * R);
    for (int64_t i = 0; i < R; ++i)
      for (int64_t p = 0; p < n; ++p) E[p * R + i] = Z[i * n + p];
    gemm_strided(n, n, 0, R, 1, E.data(), R, &Z[R * n], n, out, n);
  }
};

}  // namespace kdekit::cpu
