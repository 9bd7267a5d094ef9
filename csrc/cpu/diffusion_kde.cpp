// kdekit::kde2d_solve and kdekit::kde2d_points on CPU (the machinery: diffusion_kde.h):
//   kde2d_solve:  halved DCT spectrum a (B, n, n) -> t*, tx1, tx2 and a status per item;
//   kde2d_points: float64 points -> hard histogram -> spectrum -> solve -> smoothed density, or directly the
//                 (pool x pool) block sums of the density divided by their total (the full grid is never formed).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <map>
#include <mutex>

#include "diffusion_kde.h"

namespace kdekit::cpu {

std::shared_ptr<const CosineTable> cosine_table(int64_t n) {
  static std::mutex lock;
  static std::map<int64_t, std::shared_ptr<const CosineTable>> cache;
  std::lock_guard<std::mutex> guard(lock);
  auto& entry = cache[n];
  if (!entry) entry = std::make_shared<const CosineTable>(n);
  return entry;
}

std::shared_ptr<const std::vector<double>> k2_powers(int64_t n) {
  static std::mutex lock;
  static std::map<int64_t, std::shared_ptr<const std::vector<double>>> cache;
  std::lock_guard<std::mutex> guard(lock);
  auto& entry = cache[n];
  if (!entry) {
    auto powers = std::make_shared<std::vector<double>>(6 * n);
    for (int p = 0; p < 6; ++p)
      for (int64_t k = 0; k < n; ++k)
        (*powers)[p * n + k] = std::pow(static_cast<double>(k) * static_cast<double>(k), p);
    entry = powers;
  }
  return entry;
}

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")  // fused multiply-adds where the ISA has them (-std=c++20 turns them off)

namespace {

// out[i * ldo + c * L + v] = sum over j = j0, j0 + js, ... < j1 of A[i * lda + j] B[j * ldb + c * L + v] for i < RR,
// c < CC, v < L (L doubles a vector): one register tile.
template <int Bytes, int RR, int CC>
KDEKIT_INLINE void gemm_tile(int64_t j0, int64_t j1, int64_t js, const double* A, int64_t lda, const double* B,
                             int64_t ldb, double* out, int64_t ldo) {
  using V = typename Simd<double, Bytes>::V;
  constexpr int L = Simd<double, Bytes>::kLanes;
  V acc[RR][CC] = {};
  for (int64_t j = j0; j < j1; j += js) {
    V b[CC];
#pragma GCC unroll 8
    for (int c = 0; c < CC; ++c) b[c] = load<V>(B + j * ldb + c * L);
#pragma GCC unroll 8
    for (int i = 0; i < RR; ++i) {
      const double a = A[i * lda + j];
#pragma GCC unroll 8
      for (int c = 0; c < CC; ++c) acc[i][c] += a * b[c];
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RR; ++i)
#pragma GCC unroll 8
    for (int c = 0; c < CC; ++c) store(out + i * ldo + c * L, acc[i][c]);
}

// gemm_strided for the CPU's vectors: tiles of RR rows x CC vectors, then single vectors; the last cols % L columns
// from a zero-padded copy of B's (one vector per j), written out lane by lane.
template <int Bytes, int RR, int CC>
KDEKIT_INLINE void gemm_rows(int64_t r0, int64_t r1, int64_t cols, int64_t j0, int64_t j1, int64_t js,
                             const double* A, int64_t lda, const double* B, int64_t ldb, const double* edge,
                             double* out, int64_t ldo) {
  constexpr int L = Simd<double, Bytes>::kLanes;
  const int64_t full = cols / L * L;
  for (int64_t r = r0; r + RR <= r1; r += RR) {
    const double* Ar = A + r * lda;
    double* o = out + r * ldo;
    int64_t w = 0;
    for (; w + CC * L <= full; w += CC * L) gemm_tile<Bytes, RR, CC>(j0, j1, js, Ar, lda, B + w, ldb, o + w, ldo);
    for (; w < full; w += L) gemm_tile<Bytes, RR, 1>(j0, j1, js, Ar, lda, B + w, ldb, o + w, ldo);
    if (full < cols) {
      double tile[RR * L];
      gemm_tile<Bytes, RR, 1>(j0, j1, js, Ar, lda, edge, L, tile, L);
      for (int i = 0; i < RR; ++i)
        for (int64_t v = 0; v < cols - full; ++v) o[i * ldo + full + v] = tile[i * L + v];
    }
  }
}

}  // namespace

// Compiled for the CPU's widest vectors (run_widest_simd) with fused multiply-adds where it has them: every element
// is the same chain of (fused) multiply-adds whatever the tiling, so results depend on the ISA only, in the last bits.
void gemm_strided(int64_t rows, int64_t cols, int64_t j0, int64_t j1, int64_t js, const double* A, int64_t lda,
                  const double* B, int64_t ldb, double* out, int64_t ldo) {
  run_widest_simd([&](auto width) KDEKIT_INLINE_LAMBDA {
    constexpr int Bytes = decltype(width)::value, L = Simd<double, Bytes>::kLanes;
    const int64_t full = cols / L * L;
    std::vector<double> edge;
    if (full < cols) {
      edge.assign(j1 * L, 0.0);
      for (int64_t j = j0; j < j1; j += js)
        for (int64_t v = 0; v < cols - full; ++v) edge[j * L + v] = B[j * ldb + full + v];
    }
    const int64_t main = rows / 4 * 4;
    gemm_rows<Bytes, 4, 2>(0, main, cols, j0, j1, js, A, lda, B, ldb, edge.data(), out, ldo);
    gemm_rows<Bytes, 1, 4>(main, rows, cols, j0, j1, js, A, lda, B, ldb, edge.data(), out, ldo);
  });
}

// The psi forms' hot loop: K is at most n, so whole vectors of a2's rows are in bounds (n a multiple of the vector),
// and v[l] for l < K is gemm_strided's chain without its edge copy, in tiles of up to 8 vectors (independent chains
// that keep both FMA pipes busy); `rows` weight rows (RR at a time) share each load of a2.
template <int Bytes, int RR>
KDEKIT_INLINE void row_sums(int64_t K, int64_t n, const double* r, int64_t ldr, const double* a2, double* v,
                            int64_t ldv) {
  constexpr int L = Simd<double, Bytes>::kLanes;
  double tile[RR * 8 * L];
  for (int64_t w = 0; w < K;) {
    const int64_t left = K - w;
    const int64_t width = left > 4 * L && w + 8 * L <= n ? 8 * L : left > L && w + 4 * L <= n ? 4 * L : L;
    if (width == 8 * L) {
      gemm_tile<Bytes, RR, 8>(0, K, 1, r, ldr, a2 + w, n, tile, width);
    } else if (width == 4 * L) {
      gemm_tile<Bytes, RR, 4>(0, K, 1, r, ldr, a2 + w, n, tile, width);
    } else {
      gemm_tile<Bytes, RR, 1>(0, K, 1, r, ldr, a2 + w, n, tile, width);
    }
    const int64_t done = std::min<int64_t>(left, width);
    for (int i = 0; i < RR; ++i) std::copy(tile + i * width, tile + i * width + done, v + i * ldv + w);
    w += done;
  }
}

void weighted_row_sum(int64_t rows, int64_t K, int64_t n, const double* r, int64_t ldr, const double* a2, double* v,
                      int64_t ldv) {
  run_widest_simd([&](auto width) KDEKIT_INLINE_LAMBDA {
    constexpr int Bytes = decltype(width)::value, L = Simd<double, Bytes>::kLanes;
    if (n % L != 0) return gemm_strided(rows, K, 0, K, 1, r, ldr, a2, n, v, ldv);
    int64_t i = 0;
    for (; i + 2 <= rows; i += 2) row_sums<Bytes, 2>(K, n, r + i * ldr, ldr, a2, v + i * ldv, ldv);
    for (; i < rows; ++i) row_sums<Bytes, 1>(K, n, r + i * ldr, ldr, a2, v + i * ldv, ldv);
  });
}

#pragma GCC pop_options

void check_solve_options(const SolveOptions& o) {
  TORCH_CHECK(o.t_max > 0 && std::isfinite(o.t_max), "t_max must be positive and finite, got ", o.t_max);
  TORCH_CHECK(o.xtol >= 0 && o.rtol >= 0, "xtol and rtol must be >= 0, got ", o.xtol, ", ", o.rtol);
  TORCH_CHECK(o.maxiter >= 0, "maxiter must be >= 0, got ", o.maxiter);
}

Status solve(Spectrum& s, double count, const SolveOptions& o, double* times) {
  times[0] = times[1] = times[2] = kNaN;
  if (!(count > 0) || !(s.amax2 > 0) || !std::isfinite(s.amax2)) return kInvalid;
  Solver solver(s, count);
  double ts = kNaN;
  const Status st = brentq([&](double t) { return solver.f(t); }, 0.0, 1.0, o.t_max, o.xtol, o.rtol, o.maxiter, ts);
  if (st != kOk) return st;
  solver.sigma(ts);
  const double p02 = solver.psi(0, 2), p20 = solver.psi(2, 0), p11 = solver.psi(1, 1);
  double tx1, tx2;
  common::axis_times(p02, p11, p20, count, &tx1, &tx2);
  if (!std::isfinite(tx1) || !std::isfinite(tx2)) return kInvalid;
  times[0] = ts;
  times[1] = tx1;
  times[2] = tx2;
  return kOk;
}

namespace {

// f[k] = exp(c k^2) for k < n (c <= 0) by the vectorised exp of simd.h (~1 ulp)
void gaussian_weights(double c, int64_t n, double* f) {
  run_widest_simd([&](auto width) KDEKIT_INLINE_LAMBDA {
    using S = Simd<double, decltype(width)::value>;
    using V = typename S::V;
    V k;
    for (int j = 0; j < S::kLanes; ++j) k[j] = j;
    int64_t i = 0;
    for (; i + S::kLanes <= n; i += S::kLanes, k += S::kLanes) store(f + i, vexp<S>(c * (k * k)));
    for (; i < n; ++i) f[i] = std::exp(c * (static_cast<double>(i) * static_cast<double>(i)));
  });
}

}  // namespace

int64_t smoothing_weights(double t, int64_t n, std::vector<double>& f) {
  f.resize(n);
  gaussian_weights(-(kPi * kPi) * t / 2, n, f.data());
  // the smallest K with 8 tail(K) tail(0) <= 1e-18 (tail: suffix sums; they only grow as K falls)
  const double total = sum_of(f.data(), n);
  double tail = 0.0;
  for (int64_t K = n - 1; K >= 1; --K) {
    tail += f[K];
    if (4.0 * 2.0 * tail * total > 1e-18) return K + 1;
  }
  return 1;
}

namespace {

// Whether raising the density (scale * C^T S C, S = a o fx fy^T) to `clip` cannot change its block sums by more than
// 1e-12 of the total: with smoothing weights below 1e-18 (smoothing_weights) beyond half the grid on both axes, the
// density is the histogram smoothed by a sampled Gaussian to 1e-18 (no negative lobes), so a cell below `clip` is
// rounding noise, |cell| <= 1e-15 * scale * sum |S|, raised by at most clip + that; n^2 such cells against a total of
// scale * n^2 * S[0, 0] (the cosines of frequency 0 sum to n per axis).
bool clip_is_rounding(Spectrum& s, const std::vector<double>& fx, int64_t Kx, const std::vector<double>& fy,
                      int64_t Ky, double scale, double clip) {
  const int64_t n = s.n;
  if (2 * Kx >= n || 2 * Ky >= n) return false;
  s.ensure(std::max(Kx, Ky));
  double abs_sum = 0.0;
  for (int64_t k = 0; k < Kx; ++k)
    for (int64_t l = 0; l < Ky; ++l) abs_sum += std::fabs(s.a[k * n + l] * fx[k] * fy[l]);
  const double total = scale * s.a[0] * fx[0] * fy[0];
  return clip + 1e-15 * scale * abs_sum <= 1e-12 * total;
}

std::tuple<at::Tensor, at::Tensor> kde2d_solve_cpu(const at::Tensor& spectrum_, const at::Tensor& count_,
                                                   double t_max, double xtol, double rtol, int64_t maxiter) {
  TORCH_CHECK(spectrum_.dim() == 3 && spectrum_.size(1) == spectrum_.size(2) && spectrum_.size(1) >= 2,
              "spectrum must be (B, n, n) with n >= 2, got ", spectrum_.sizes());
  check_float_or_double(spectrum_, "spectrum");
  const int64_t B = spectrum_.size(0), n = spectrum_.size(1);
  TORCH_CHECK(count_.dim() == 1 && count_.size(0) == B, "count must have shape (", B, ",), got ", count_.sizes());
  const SolveOptions opts{t_max, xtol, rtol, maxiter};
  check_solve_options(opts);
  auto spectrum = spectrum_.to(at::kDouble).contiguous();
  auto count = count_.to(at::kDouble).contiguous();
  auto times = at::empty({B, 3}, spectrum.options());
  auto status = at::empty({B}, spectrum.options().dtype(at::kInt));
  const double* pa = spectrum.data_ptr<double>();
  const double* pc = count.data_ptr<double>();
  double* pt = times.data_ptr<double>();
  int32_t* ps = status.data_ptr<int32_t>();
  at::parallel_for(0, B, item_grain(200.0 * n * n), [&](int64_t b0, int64_t b1) {
    Spectrum s;
    for (int64_t b = b0; b < b1; ++b) {
      s.dense(n, pa + b * n * n);
      ps[b] = solve(s, pc[b], opts, pt + 3 * b);
    }
  });
  return {times, status};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kde2d_points_cpu(
    const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_, const at::Tensor& rx_, const at::Tensor& ry_,
    const at::Tensor& count_, int64_t grid, int64_t pool, double clip, double t_max, double xtol, double rtol,
    int64_t maxiter) {
  TORCH_CHECK(x_.dim() == 2, "x must be (B, N), got ", x_.sizes());
  TORCH_CHECK(x_.scalar_type() == at::kDouble, "x must be float64, got ", x_.scalar_type());
  const int64_t B = x_.size(0), N = x_.size(1);
  check_points(y_, "y", B, N, at::kDouble);
  check_points(w_, "weights", B, N, at::kDouble);
  check_range(rx_, "range_x", B);
  check_range(ry_, "range_y", B);
  TORCH_CHECK(count_.dim() == 1 && count_.size(0) == B, "count must have shape (", B, ",), got ", count_.sizes());
  TORCH_CHECK(grid >= 2 && grid % 2 == 0, "grid must be even and >= 2, got ", grid);
  TORCH_CHECK(pool >= 0 && (pool == 0 || grid % pool == 0), "pool must be 0 (full grid) or divide grid=", grid,
              ", got ", pool);
  const SolveOptions opts{t_max, xtol, rtol, maxiter};
  check_solve_options(opts);
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous();
  auto rx = rx_.contiguous(), ry = ry_.contiguous(), count = count_.to(at::kDouble).contiguous();
  const int64_t n = grid, side = pool == 0 ? grid : pool;
  auto out = at::empty({B, side, side}, x.options());
  auto times = at::empty({B, 3}, x.options());
  auto status = at::empty({B}, x.options().dtype(at::kInt));
  auto table = cosine_table(n);
  const double *px = x.data_ptr<double>(), *py = y.data_ptr<double>(), *pw = w.data_ptr<double>();
  const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>(), *pc = count.data_ptr<double>();
  double *po = out.data_ptr<double>(), *pt = times.data_ptr<double>();
  int32_t* ps = status.data_ptr<int32_t>();
  const PooledCosines pooled(*table, pool);
  at::parallel_for(0, B, item_grain(2e6 * (n / 64.0)), [&](int64_t b0, int64_t b1) {
    Spectrum s;
    std::vector<std::pair<int64_t, double>> cells;
    std::vector<int64_t> bin_x, bin_y;
    std::vector<double> mass;
    std::vector<double> fx, fy;
    Synthesis synth{n, table.get()};
    for (int64_t b = b0; b < b1; ++b) {
      double* ob = po + b * side * side;
      s.reset(n);
      // occupied bins and their mass / N
      cells.clear();
      for (int64_t i = 0; i < N; ++i) {
        const int64_t bx = hard_bin(px[b * N + i], prx[2 * b], prx[2 * b + 1], n);
        const int64_t by = hard_bin(py[b * N + i], pry[2 * b], pry[2 * b + 1], n);
        if (bx >= 0 && by >= 0 && pw[b * N + i] != 0.0) cells.emplace_back(bx * n + by, pw[b * N + i]);
      }
      std::sort(cells.begin(), cells.end(),
                [](const auto& l, const auto& r) { return l.first < r.first; });
      bin_x.clear();
      bin_y.clear();
      mass.clear();
      double total = 0;
      for (size_t i = 0; i < cells.size(); ++i) {
        if (i == 0 || cells[i].first != cells[i - 1].first) {
          bin_x.push_back(cells[i].first / n);
          bin_y.push_back(cells[i].first % n);
          mass.push_back(0.0);
        }
        mass.back() += cells[i].second;
      }
      for (auto& m : mass) {
        m /= pc[b];
        total += std::fabs(m);
      }
      if (!mass.empty()) s.factor(*table, bin_x, bin_y, mass);
      s.amax2 = 16.0 * total * total;
      const Status st = solve(s, pc[b], opts, pt + 3 * b);
      ps[b] = st;
      if (st != kOk) {
        std::fill(ob, ob + side * side, kNaN);
        continue;
      }
      // rows (x) smoothed with tx2, columns (y) with tx1 (kde_diffusion's naming; see its code comment)
      const int64_t Kx = smoothing_weights(pt[3 * b + 2], n, fx);
      const int64_t Ky = smoothing_weights(pt[3 * b + 1], n, fy);
      const double scale = 1.0 / ((prx[2 * b + 1] - prx[2 * b]) * (pry[2 * b + 1] - pry[2 * b]));
      if (pool == 0) {
        synth.run(s, fx, Kx, fy, Ky, nullptr, ob);
        for (int64_t i = 0; i < n * n; ++i) ob[i] = std::max(ob[i] * scale, clip);
        continue;
      }
      if (clip > -kInf && !clip_is_rounding(s, fx, Kx, fy, Ky, scale, clip)) {  // the density, clipped, its blocks
        synth.clipped_blocks(s, fx, Kx, fy, Ky, pool, scale, clip, ob);
      } else {
        synth.run(s, fx, Kx, fy, Ky, &pooled, ob);
      }
      normalize_blocks(pool * pool, ob);
    }
  });
  return {out, times, status};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("kde2d_solve", &kde2d_solve_cpu);
  m.impl("kde2d_points", &kde2d_points_cpu);
}

}  // namespace kdekit::cpu
