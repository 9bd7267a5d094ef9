// The training loss's KDE in one op on CPU: kdekit::soft_kde2d_pooled (points -> soft histogram -> DCT -> Botev's
// fixed point -> smoothing -> k x k block masses / total) and its backward (soft histogram, smoothing and the
// bandwidth's gradient rule), with the maths of the torch path (kdekit/ops/diffusion_kde) for the items brentq
// solves. Each item runs whole on one thread (histogram, its DCT in the kernel's dtype, solve, smoothing; backward
// likewise in reverse) on per-thread buffers: no (B, n, n) temporaries beside the saved spectrum. Items without a
// weighted point inside their limits, items the solver does not solve and items whose blocks are not finite get
// status != 0 and NaN outputs (the caller re-solves them with the fallback rules) and zero gradients here.
//
// Forward, item b (N = count, a = C H C^T / N with C[k, i] = 2 cos(pi k (2i + 1) / 2n), A[k, l] = h_k h_l a[k, l]
// with h_0 = 1/2, else 1, A2 = A o A):
//   t* = brentq root of f on [0, t_max] (csrc/common/brentq.h), (tx1, tx2) = axis_times(psi2(t*)),
//   fx[k] = exp(-pi^2 k^2 tx2 / 2), fy[l] = exp(-pi^2 l^2 tx1 / 2), S = A o fx fy^T,
//   blocks = Q S Q^T (Q: pooled cosines), or with clip the blocks of max(density of S, clip);  out = blocks / sum.
// Backward (G = dL/dout, g = dL/d(t*, tx1, tx2)):
//   M = dL/dS (Smoother::adjoint, from the saved block sums and the cells the clip raised; Q^T G Q for items the clip
//   did not touch);  dL/dA = (fx fy^T) o M;
//   dL/dtx2 = sum_kl M S (-pi^2 k^2 / 2) + g[2], dL/dtx1 likewise + g[1];  c = dL/dpsi2 through axis_times;
//   implicit: lambda = -(c . dpsi2/dt + g[0]) / f_t with dpsi2/dt and f_t from forward-mode tangents of the psi
//   recursion (the torch path's five-point difference agrees to ~1e-12), c += lambda df/dpsi2; the reverse pass of
//   the recursion at t* (PsiTape) gives dL/dA2 for c;
//   dL/dA += 2 A o dL/dA2;  dL/da = h h^T o dL/dA;  dL/dH = C^T dL/da C / N;  then the soft histogram's backward.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <tuple>

#include "diffusion_kde.h"
#include "soft_histogram.h"

namespace kdekit::cpu {
namespace {

constexpr double kDifferentiableSum = 1e-100;  // the torch path's DIFFERENTIABLE_SUM

// The spectrum of one item's soft histogram, a = C H C^T / N with C[k, i] = 2 cos(pi k (2i + 1) / 2n), and its
// adjoint dL/dH = C^T (dL/da) C / N, in the kernel's dtype (as the torch path's dct2) with its register-blocked
// products, on per-thread ld x ld buffers (zero past n). Each transform runs along rows (the column transform as the
// row transform of the transpose) and halves its products by C[k, n-1-i] = (-1)^k C[k, i]: the even rows of C X come
// from Ce (X[i] + X[n-1-i]), the odd ones from Co (X[i] - X[n-1-i]), i < n/2 (Ce, Co: even/odd rows of C, left half).
template <typename Kernel>
struct HistogramSpectrum {
  using T = typename Kernel::Scalar;
  Kernel& kernel;
  int64_t n, h, ld;
  std::vector<T> Ce, Co, CeT, CoT, H, S, D, E, O, Z, GT;

  HistogramSpectrum(Kernel& k, const CosineTable& table)
      : kernel(k), n(k.bins), h(k.bins / 2), ld(k.ld), Ce(ld * ld, T(0)), Co(ld * ld, T(0)), CeT(ld * ld, T(0)),
        CoT(ld * ld, T(0)), H(ld * ld, T(0)), S(ld * ld, T(0)), D(ld * ld, T(0)), E(ld * ld, T(0)),
        O(ld * ld, T(0)), Z(ld * ld, T(0)), GT(ld * ld, T(0)) {
    for (int64_t m = 0; m < h; ++m)
      for (int64_t i = 0; i < h; ++i) {
        Ce[m * ld + i] = CeT[i * ld + m] = static_cast<T>(2.0 * table.by_k[2 * m * n + i]);
        Co[m * ld + i] = CoT[i * ld + m] = static_cast<T>(2.0 * table.by_k[(2 * m + 1) * n + i]);
      }
  }

  // out (h x ld) = L (h x h) R (h x ld)
  KDEKIT_INLINE void product(const T* L, const T* R, T* out) {
    for (int64_t r0 = 0; r0 < h; r0 += Kernel::kRows)
      Kernel::gemm_rows(L + r0 * ld, ld, 1, R, h, ld, out + r0 * ld, false);
  }

  // E[m] = (C X)[2m], O[m] = (C X)[2m + 1] for X (n x ld)
  KDEKIT_INLINE void rows_forward(const T* X) {
    for (int64_t i = 0; i < h; ++i)
      for (int64_t c = 0; c < ld; ++c) {
        const T top = X[i * ld + c], bottom = X[(n - 1 - i) * ld + c];
        S[i * ld + c] = top + bottom;
        D[i * ld + c] = top - bottom;
      }
    product(Ce.data(), S.data(), E.data());
    product(Co.data(), D.data(), O.data());
  }

  // out (n x ld) = C^T X for X with even rows Xe and odd rows Xo (h x ld each)
  KDEKIT_INLINE void rows_inverse(const T* Xe, const T* Xo, T* out) {
    product(CeT.data(), Xe, E.data());
    product(CoT.data(), Xo, O.data());
    for (int64_t i = 0; i < h; ++i)
      for (int64_t c = 0; c < ld; ++c) {
        const T even = E[i * ld + c], odd = O[i * ld + c];
        out[i * ld + c] = even + odd;
        out[(n - 1 - i) * ld + c] = even - odd;
      }
  }

  // A (n x n, float64) = the halved spectrum of item b (row and column 0 times 1/2), N_safe = its count (>0).
  KDEKIT_INLINE void forward(int64_t b, double N_safe, double* A) {
    kernel.histogram(b, H.data());
    rows_forward(H.data());  // C H
    for (int64_t j = 0; j < n; ++j)  // Z = (C H)^T
      for (int64_t k = 0; k < n; ++k) Z[j * ld + k] = ((k & 1) ? O : E)[(k >> 1) * ld + j];
    rows_forward(Z.data());  // C H^T C^T = a^T
    const T count = static_cast<T>(N_safe);
    for (int64_t k = 0; k < n; ++k)
      for (int64_t l = 0; l < n; ++l) {
        const T a = ((l & 1) ? O : E)[(l >> 1) * ld + k];
        A[k * n + l] = static_cast<double>(a / count) * (k == 0 ? 0.5 : 1.0) * (l == 0 ? 0.5 : 1.0);
      }
  }

  // gx, gy, gw of item b from da = dL/da (n x n, float64; the unhalved spectrum).
  KDEKIT_INLINE void backward(int64_t b, double N_safe, const double* da, T* gx, T* gy, T* gw) {
    const T count = static_cast<T>(N_safe);
    for (int64_t m = 0; m < h; ++m)
      for (int64_t l = 0; l < n; ++l) {
        S[m * ld + l] = static_cast<T>(da[2 * m * n + l]) / count;
        D[m * ld + l] = static_cast<T>(da[(2 * m + 1) * n + l]) / count;
      }
    rows_inverse(S.data(), D.data(), Z.data());  // U = C^T (da / N)
    for (int64_t m = 0; m < h; ++m)  // the even and odd rows of U^T
      for (int64_t i = 0; i < n; ++i) {
        S[m * ld + i] = Z[i * ld + 2 * m];
        D[m * ld + i] = Z[i * ld + 2 * m + 1];
      }
    rows_inverse(S.data(), D.data(), GT.data());  // C^T U^T = (dL/dH)^T
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) H[i * ld + j] = GT[j * ld + i];
    kernel.gradient(b, H.data(), GT.data(), gx, gy, gw);
  }
};

// The psi recursion at one time t with its tape and its tangent in t (forward mode): psi(i, j) for 2 <= i + j <= 5,
// the time of each, the sums the lower levels divide by, and d psi / d t; forms over the K leading frequencies whose
// diffusion weight is a normal float64 (the torch path's truncation). One per thread, loaded with each item (load()).
struct PsiTape {
  int64_t n;
  const std::vector<double>& k2pow;  // (6, n): (k^2)^p
  double N = 0.0;
  std::vector<double> a2, dA2;  // (n, n) the item's A o A (row = x frequency), and vjp()'s dL/dA2
  double psi[6][6], dpsi[6][6], time[6][6], sum[6][6], dform[6][6];
  std::vector<double> e, r, c, rk, v, U, V;
  double e_time = kNaN;  // the time of e (the forms of a level share it; e depends on the time only)
  int64_t e_count = 0;

  PsiTape(int64_t n_, const std::vector<double>& k2pow_) : n(n_), k2pow(k2pow_), a2(n_ * n_), dA2(n_ * n_) {}

  void load(const double* A, double count) {
    N = count;
    for (int64_t i = 0; i < n * n; ++i) a2[i] = A[i] * A[i];
  }

  // weights of form(px, py, t) into r (rows, k^(2 px)) and c (columns, l^(2 py)); returns K
  int64_t weights(int px, int py, double t) {
    r.resize(n);
    c.resize(n);
    if (t != e_time) {
      e.resize(n);
      e_count = common::diffusion_weights(t, n, e.data());
      e_time = t;
    }
    const int64_t K = e_count;
    for (int64_t k = 0; k < K; ++k) {
      r[k] = e[k] * k2pow[px * n + k];
      c[k] = e[k] * k2pow[py * n + k];
    }
    return K;
  }

  // form(px, py, t) = sum_{k,l} a2[k, l] r[k] c[l]; *dt = its derivative in t, -pi^2 sum a2 (k^2 + l^2) r c
  double form(int px, int py, double t, double* dt) {
    const int64_t K = weights(px, py, t);
    rk.resize(2 * n);  // rows r and k^2 r
    v.resize(2 * n);   // v[l] = sum_k r[k] a2[k, l], v[n + l] = sum_k k^2 r[k] a2[k, l]
    for (int64_t k = 0; k < K; ++k) {
      rk[k] = r[k];
      rk[n + k] = r[k] * k2pow[n + k];
    }
    weighted_row_sum(2, K, n, rk.data(), n, a2.data(), v.data(), n);
    double total = 0.0, slope = 0.0;
    for (int64_t l = 0; l < K; ++l) {
      total += v[l] * c[l];
      slope += (v[n + l] + v[l] * k2pow[n + l]) * c[l];
    }
    *dt = -(kPi * kPi) * slope;
    return total;
  }

  // psi(i, j) of kde_diffusion (x frequency weighted by k^{2j}, y by l^{2i}) at t; false where the recursion is not
  // differentiable (a non-finite value, or a sum it divides by below kDifferentiableSum).
  bool run(double t) {
    bool ok = true;
    for (int L = 5; L >= 2; --L)
      for (int i = 0; i <= L; ++i) {
        const int j = L - i;
        double ti = t, dti = 1.0;
        if (L < 5) {
          const double s = psi[i + 1][j] + psi[i][j + 1], ds = dpsi[i + 1][j] + dpsi[i][j + 1];
          sum[i][j] = s;
          ok = ok && std::isfinite(s) && std::fabs(s) > kDifferentiableSum;
          ti = common::psi_time(i, j, N, std::fabs(s));
          dti = -ti / ((2.0 + L) * s) * ds;  // t_ij = (const / |s|)^(1 / (2 + L))
        }
        time[i][j] = ti;
        psi[i][j] = psi_scale(L) * form(j, i, ti, &dform[i][j]);
        dpsi[i][j] = psi_scale(L) * dform[i][j] * dti;
        ok = ok && std::isfinite(psi[i][j]) && std::isfinite(dpsi[i][j]);
      }
    return ok;
  }

  // dA2 = d(cot . (psi02, psi11, psi20)) / dA2 at fixed t (after run()): the forms' rank-one terms g r c^T gathered as
  // U V^T and added in one product, in the forms' order. Returns K: dA2 is that product on its leading K x K block
  // and 0 outside it.
  int64_t vjp(const double cot[3]) {
    constexpr int64_t kForms = 18;  // levels 2..5
    U.assign(n * kForms, 0.0);
    V.assign(kForms * n, 0.0);
    int64_t F = 0, Kmax = 0;
    double adj[6][6] = {};
    adj[0][2] = cot[0];
    adj[1][1] = cot[1];
    adj[2][0] = cot[2];
    for (int L = 2; L <= 5; ++L)
      for (int i = 0; i <= L; ++i) {
        const int j = L - i;
        const double g = adj[i][j] * psi_scale(L);  // cotangent of the form
        if (g == 0.0) continue;
        const int64_t K = weights(j, i, time[i][j]);
        for (int64_t k = 0; k < K; ++k) {  // d form / d a2[k, l] = r[k] c[l]
          U[k * kForms + F] = g * r[k];
          V[F * n + k] = c[k];
        }
        Kmax = std::max(Kmax, K);
        ++F;
        if (L == 5) continue;  // the top level's time is the given t (held fixed here)
        // through t_ij = (const / |sum|)^(1 / (2 + L)): d t / d sum = -t / ((2 + L) sum)
        const double dsum = g * dform[i][j] * (-time[i][j] / ((2.0 + L) * sum[i][j]));
        adj[i + 1][j] += dsum;
        adj[i][j + 1] += dsum;
      }
    gemm_strided(Kmax, Kmax, 0, F, 1, U.data(), kForms, V.data(), n, dA2.data(), n);
    return Kmax;
  }
};

void check_args(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx,
                const at::Tensor& ry, const at::Tensor& count) {
  check_float_or_double(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (B, N), got ", x.sizes());
  const int64_t B = x.size(0), N = x.size(1);
  check_points(y, "y", B, N, x.scalar_type());
  check_points(w, "weights", B, N, x.scalar_type());
  check_range(rx, "range_x", B);
  check_range(ry, "range_y", B);
  TORCH_CHECK(count.dim() == 1 && count.size(0) == B, "count must have shape (", B, ",), got ", count.sizes());
}

// Runs body(spectra, next) on each thread (parallel_items: next(b) hands out the B items), spectra a per-thread
// HistogramSpectrum for x's dtype and this CPU's widest vectors (body must be KDEKIT_INLINE_LAMBDA).
template <typename Body>
void for_items(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx,
               const at::Tensor& ry, int64_t n, double sharpness, bool backward, const Body& body) {
  const int64_t B = x.size(0), N = x.size(1);
  auto table = cosine_table(n);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "soft_kde2d_pooled", [&] {
    parallel_items(B, [&](const auto& next) {
      run_widest_simd([&](auto width) KDEKIT_INLINE_LAMBDA {
        Kernel<scalar_t, decltype(width)::value> k(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                                   w.data_ptr<scalar_t>(), rx.data_ptr<double>(),
                                                   ry.data_ptr<double>(), N, n, static_cast<scalar_t>(sharpness),
                                                   backward);
        HistogramSpectrum<decltype(k)> spectra(k, *table);
        body(spectra, next);
      });
    });
  });
}

// One item's smoothing and pooling (per-thread scratch): the halved spectrum A and its times -> the (pool x pool)
// block sums, and the adjoint of their normalisation (blocks / sum). `clip` > -inf: the density on the grid
// (integrating to 1 over the limits, `scale` = 1 / area) is raised to `clip` before its blocks are summed (the seed's
// clipping), and the forward flags the cells it raised for the adjoint; -inf: the blocks come straight from the
// spectrum (Q S Q^T, pooling is linear).
struct Smoother {
  int64_t n, pool;
  double clip;
  const CosineTable* table;
  const PooledCosines* pooled;
  Synthesis synth{n, table};
  std::vector<double> fx, fy, D, blocks, Gb, T;
  int64_t Kx = 0, Ky = 0;

  // fx, fy and their leading frequencies for times (t*, tx1, tx2): rows (x) smoothed with tx2, columns (y) with tx1
  void weights(const double* times) {
    Kx = smoothing_weights(times[2], n, fx);
    Ky = smoothing_weights(times[1], n, fy);
  }

  // sums (pool x pool) = the block sums of the item with (dense) spectrum s and times; with clip, raised (n x n)
  // flags the cells the clip raised
  void forward(Spectrum& s, const double* times, double scale, double* sums, bool* raised) {
    weights(times);
    if (clip > -kInf) {
      D.resize(n * n);
      synth.run(s, fx, Kx, fy, Ky, nullptr, D.data());
      std::fill(sums, sums + pool * pool, 0.0);
      for (int64_t m = 0; m < n; ++m)
        add_clipped_row(n, pool, scale, clip, &D[m * n], sums + (m / (n / pool)) * pool, raised + m * n);
    } else {
      synth.run(s, fx, Kx, fy, Ky, pooled, sums);
    }
  }

  // M (Kx x Ky, row stride n) = dL/dS for S = A o fx fy^T, given G = dL/dblocks of blocks = sums / total (after
  // weights() of the item) and, where the clip raised cells of the item, their flags (else null: the pooled map)
  void adjoint(const double* G, const double* sums, double scale, const bool* raised, double* M) {
    blocks.assign(sums, sums + pool * pool);
    const double total = normalize_blocks(pool * pool, blocks.data());  // the forward's blocks, and their sum
    double inner = 0.0;
    for (int64_t i = 0; i < pool * pool; ++i) inner += G[i] * blocks[i];
    // dL/d(block sums), per unit of the spectrum's synthesis (with a clip the sums are of the density, scale times it)
    const double unit = clip > -kInf ? scale : 1.0;
    Gb.resize(pool * pool);
    for (int64_t i = 0; i < pool * pool; ++i) Gb[i] = (G[i] - inner) / total * unit;
    if (raised) {  // dL/dD on the grid (0 where raised), then M = C dD C^T
      const int64_t side = n / pool;
      D.resize(n * n);
      for (int64_t m = 0; m < n; ++m) {
        const double* g = Gb.data() + (m / side) * pool;
        for (int64_t qb = 0; qb < pool; ++qb) {
          const double gq = g[qb];
          double* cell = D.data() + m * n + qb * side;
          const bool* up = raised + m * n + qb * side;
          for (int64_t q = 0; q < side; ++q) cell[q] = up[q] ? 0.0 : gq;
        }
      }
      T.resize(n * Ky);
      gemm_strided(n, Ky, 0, n, 1, D.data(), n, table->by_m.data(), n, T.data(), Ky);
      gemm_strided(Kx, Ky, 0, n, 1, table->by_k.data(), n, T.data(), Ky, M, n);
    } else {  // M = Q^T Gb Q
      T.resize(pool * Ky);
      gemm_strided(pool, Ky, 0, pool, 1, Gb.data(), pool, pooled->Q.data(), n, T.data(), Ky);
      gemm_strided(Kx, Ky, 0, pool, 1, pooled->QT.data(), pool, T.data(), Ky, M, n);
    }
  }
};

void check_pool(int64_t grid, int64_t pool) {
  TORCH_CHECK(grid >= 2 && grid % 2 == 0, "grid must be even and >= 2, got ", grid);
  TORCH_CHECK(pool >= 1 && grid % pool == 0, "pool must divide grid=", grid, ", got ", pool);
}

double area_scale(const double* rx, const double* ry, int64_t b) {
  return 1.0 / ((rx[2 * b + 1] - rx[2 * b]) * (ry[2 * b + 1] - ry[2 * b]));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_kde2d_pooled_cpu(
    const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_, const at::Tensor& rx_, const at::Tensor& ry_,
    const at::Tensor& count_, int64_t grid, int64_t pool, double sharpness, double clip, double t_max, double xtol,
    double rtol, int64_t maxiter, bool /*implicit: the backward's*/) {
  check_args(x_, y_, w_, rx_, ry_, count_);
  check_pool(grid, pool);
  const SolveOptions opts{t_max, xtol, rtol, maxiter};
  check_solve_options(opts);
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  auto count = count_.to(at::kDouble).contiguous();
  const int64_t B = x.size(0), n = grid;
  auto spectrum = at::empty({B, n, n}, x.options().dtype(at::kDouble));
  auto blocks = at::empty({B, pool, pool}, spectrum.options());
  auto times = at::empty({B, 3}, spectrum.options());
  auto status = at::empty({B}, spectrum.options().dtype(at::kInt));
  auto sums = at::empty({B, pool, pool}, spectrum.options());
  const int64_t side = clip > -kInf ? n : 0;  // the raised flags exist only with a clip
  auto raised = at::empty({B, side, side}, spectrum.options().dtype(at::kBool));
  bool* pr = raised.data_ptr<bool>();
  double *pa = spectrum.data_ptr<double>(), *po = blocks.data_ptr<double>(), *pt = times.data_ptr<double>();
  double* psum = sums.data_ptr<double>();
  const double *pc = count.data_ptr<double>(), *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
  int32_t* ps = status.data_ptr<int32_t>();
  auto table = cosine_table(n);
  const PooledCosines pooled(*table, pool);
  for_items(x, y, w, rx, ry, n, sharpness, false, [&](auto& spectra, const auto& next) KDEKIT_INLINE_LAMBDA {
    Spectrum s;
    Smoother smoother{n, pool, clip, table.get(), &pooled};
    for (int64_t b; next(b);) {
      double* A = pa + b * n * n;
      if (spectra.kernel.mass_inside(b)) {
        spectra.forward(b, pc[b] > 0 ? pc[b] : 1.0, A);
        s.dense(n, A);
        ps[b] = solve(s, pc[b], opts, pt + 3 * b);
      } else {  // no weighted point inside the limits: left to the caller's rules
        std::fill(A, A + n * n, 0.0);
        std::fill(pt + 3 * b, pt + 3 * b + 3, kNaN);
        ps[b] = kInvalid;
      }
      double *ob = po + b * pool * pool, *sb = psum + b * pool * pool;
      bool* rb = pr + b * side * side;
      if (ps[b] == kOk) {
        smoother.forward(s, pt + 3 * b, area_scale(prx, pry, b), sb, rb);
        std::copy(sb, sb + pool * pool, ob);
        normalize_blocks(pool * pool, ob);
        if (!std::all_of(ob, ob + pool * pool, [](double v) { return std::isfinite(v); })) ps[b] = kInvalid;
      }
      if (ps[b] != kOk) {
        std::fill(ob, ob + pool * pool, kNaN);
        std::fill(sb, sb + pool * pool, kNaN);
        std::fill(rb, rb + side * side, false);
      }
    }
  });
  return {blocks.to(x.scalar_type()), times, status, spectrum, raised, sums};
}

// dA += the bandwidth's part of dL/dA (the rule of kdekit/ops/diffusion_kde/implicit.py on the tape of the psi
// recursion): (tx1, tx2) through the level-2 psi at t*, and with `implicit` t* itself (implicit function theorem at a
// simple root); nothing where the recursion is not differentiable around t* (a constant bandwidth).
void add_bandwidth_term(PsiTape& tape, const double* A, double N, double t0, double tx1, double tx2, double dtx1,
                        double dtx2, double grad_t, bool implicit, double* dA) {
  tape.load(A, N);
  bool ok = tape.run(t0);
  const double p02 = tape.psi[0][2], p11 = tape.psi[1][1], p20 = tape.psi[2][0];
  const double p_t[3] = {tape.dpsi[0][2], tape.dpsi[1][1], tape.dpsi[2][0]};  // d psi / d t at fixed data
  const double sigma = p02 + p20 + 2.0 * p11;
  const double gamma = std::pow(2.0 * kPi * N * sigma, -1.0 / 3.0);
  const double f0 = t0 - (t0 - gamma) / gamma;  // kde_diffusion's solved function
  const double df_dsigma = -t0 / (3.0 * gamma * sigma);
  const double f_t = 1.0 - 1.0 / gamma + df_dsigma * (p_t[0] + p_t[2] + 2.0 * p_t[1]);
  ok = ok && std::isfinite(f0) && std::isfinite(f_t);
  if (!ok) return;  // a constant bandwidth: the direct term only
  // c = d L / d (p02, p11, p20) through tx1, tx2 (logarithmic derivatives of axis_times)
  const double r = std::sqrt(p02 * p20), D = p11 + r;
  const double l1[3] = {(0.75 / p02 - r / (2 * p02) / D) / 3, -1.0 / (3 * D), (-0.75 / p20 - r / (2 * p20) / D) / 3};
  const double l2[3] = {(-0.75 / p02 - r / (2 * p02) / D) / 3, -1.0 / (3 * D), (0.75 / p20 - r / (2 * p20) / D) / 3};
  double cot[3];
  for (int c = 0; c < 3; ++c) cot[c] = dtx1 * tx1 * l1[c] + dtx2 * tx2 * l2[c];
  if (implicit && f_t != 0.0) {
    const double lambda = -(cot[0] * p_t[0] + cot[1] * p_t[1] + cot[2] * p_t[2] + grad_t) / f_t;
    cot[0] += lambda * df_dsigma;
    cot[1] += lambda * 2.0 * df_dsigma;
    cot[2] += lambda * df_dsigma;
  }
  const int64_t n = tape.n, K = tape.vjp(cot);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t l = 0; l < K; ++l) dA[k * n + l] += 2.0 * A[k * n + l] * tape.dA2[k * n + l];
}

// dL/da (n x n, float64) of one solved item, given dL/dblocks and dL/dtimes (per-thread scratch), from what the
// forward saved: no synthesis. Items the clip did not touch take the pooled path (the same map there, without the
// n x n grid).
struct SpectrumGradient {
  int64_t n, pool;
  double clip;
  bool implicit;
  const CosineTable* table;
  const PooledCosines* pooled;
  const std::vector<double>& k2pow;
  Smoother smoother{n, pool, clip, table, pooled};
  PsiTape tape{n, k2pow};
  std::vector<double> M = std::vector<double>(n * n);

  // A: the item's halved spectrum, times (t*, tx1, tx2), sums its block sums and raised the cells the clip raised (n x
  // n; null if none), G = dL/dblocks, g = dL/dtimes, N its count, scale 1 / area
  void item(const double* A, const double* times, const double* sums, const bool* raised, const double* G,
            const double* g, double N, double scale, double* dA) {
    std::fill(dA, dA + n * n, 0.0);
    smoother.weights(times);
    smoother.adjoint(G, sums, scale, raised, M.data());
    // S = A o fx fy^T: dL/dA at fixed times, and dL/dtx2, dL/dtx1 through fx, fy
    const std::vector<double>&fx = smoother.fx, &fy = smoother.fy;
    double dtx2 = g[2], dtx1 = g[1];
    for (int64_t k = 0; k < smoother.Kx; ++k)
      for (int64_t l = 0; l < smoother.Ky; ++l) {
        const double m = M[k * n + l], v = m * A[k * n + l] * fx[k] * fy[l];  // dL/dS o S
        dA[k * n + l] = m * fx[k] * fy[l];
        dtx2 += v * (-(kPi * kPi) * k2pow[n + k] / 2);
        dtx1 += v * (-(kPi * kPi) * k2pow[n + l] / 2);
      }
    add_bandwidth_term(tape, A, N, times[0], times[1], times[2], dtx1, dtx2, g[0], implicit, dA);
    // A = h h^T o a: back to the unhalved spectrum
    for (int64_t i = 0; i < n; ++i) {
      dA[i] *= 0.5;
      dA[i * n] *= 0.5;
    }
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_kde2d_pooled_backward_cpu(
    const at::Tensor& grad_blocks_, const at::Tensor& grad_times_, const at::Tensor& x_, const at::Tensor& y_,
    const at::Tensor& w_, const at::Tensor& rx_, const at::Tensor& ry_, const at::Tensor& count_,
    const at::Tensor& spectrum_, const at::Tensor& raised_, const at::Tensor& sums_, const at::Tensor& times_,
    const at::Tensor& status_, int64_t pool, double sharpness, double clip, bool implicit) {
  check_args(x_, y_, w_, rx_, ry_, count_);
  const int64_t B = x_.size(0), Np = x_.size(1), n = spectrum_.size(1);
  TORCH_CHECK(spectrum_.dim() == 3 && spectrum_.size(0) == B && spectrum_.size(2) == n, "spectrum must be (", B,
              ", n, n), got ", spectrum_.sizes());
  const int64_t side = clip > -kInf ? n : 0;
  TORCH_CHECK(raised_.dim() == 3 && raised_.size(0) == B && raised_.size(1) == side && raised_.size(2) == side,
              "raised must be (", B, ", ", side, ", ", side, "), got ", raised_.sizes());
  check_pool(n, pool);
  TORCH_CHECK(sums_.dim() == 3 && sums_.size(0) == B && sums_.size(1) == pool && sums_.size(2) == pool,
              "sums must have shape (", B, ", ", pool, ", ", pool, "), got ", sums_.sizes());
  TORCH_CHECK(grad_blocks_.dim() == 3 && grad_blocks_.size(0) == B && grad_blocks_.size(1) == pool &&
                  grad_blocks_.size(2) == pool,
              "grad_blocks must have shape (", B, ", ", pool, ", ", pool, "), got ", grad_blocks_.sizes());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  auto count = count_.to(at::kDouble).contiguous(), grad_blocks = grad_blocks_.to(at::kDouble).contiguous();
  auto grad_times = grad_times_.to(at::kDouble).contiguous(), spectrum = spectrum_.to(at::kDouble).contiguous();
  auto raised = raised_.to(at::kBool).contiguous(), sums = sums_.to(at::kDouble).contiguous();
  auto times = times_.to(at::kDouble).contiguous();
  auto status = status_.to(at::kInt).contiguous();
  const double *pG = grad_blocks.data_ptr<double>(), *pg = grad_times.data_ptr<double>();
  const double *pA = spectrum.data_ptr<double>(), *pt = times.data_ptr<double>(), *pc = count.data_ptr<double>();
  const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
  const int32_t* ps = status.data_ptr<int32_t>();
  const bool* pr = raised.data_ptr<bool>();
  const double* psum = sums.data_ptr<double>();
  auto table = cosine_table(n);
  const PooledCosines pooled(*table, pool);
  const auto k2pow = k2_powers(n);
  auto gx = at::empty_like(x), gy = at::empty_like(x), gw = at::empty_like(x);
  for_items(x, y, w, rx, ry, n, sharpness, true, [&](auto& spectra, const auto& next) KDEKIT_INLINE_LAMBDA {
    using T = typename std::decay_t<decltype(spectra)>::T;
    T *px = gx.data_ptr<T>(), *py = gy.data_ptr<T>(), *pw = gw.data_ptr<T>();
    SpectrumGradient gradient{n, pool, clip, implicit, table.get(), &pooled, *k2pow};
    std::vector<double> da(n * n);
    for (int64_t b; next(b);) {
      if (ps[b] != kOk) {  // not solved here: no gradient
        for (T* g : {px, py, pw}) std::fill(g + b * Np, g + (b + 1) * Np, T(0));
        continue;
      }
      const bool *rb = pr + b * side * side, *re = rb + side * side;
      gradient.item(pA + b * n * n, pt + 3 * b, psum + b * pool * pool, std::find(rb, re, true) != re ? rb : nullptr,
                    pG + b * pool * pool, pg + 3 * b, pc[b], area_scale(prx, pry, b), da.data());
      spectra.backward(b, pc[b] > 0 ? pc[b] : 1.0, da.data(), px, py, pw);  // dL/dH = C^T (dL/da) C / N
    }
  });
  return {gx, gy, gw};
}

// The op's autograd in C++ (the training loss's hot path: no Python per call): gradients of the blocks and the times
// to x, y and weights through kdekit::soft_kde2d_pooled_backward, from the op's own saved outputs.
struct SoftKDE2dPooled : public torch::autograd::Function<SoftKDE2dPooled> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx,
                                                const at::Tensor& ry, const at::Tensor& count, int64_t grid,
                                                int64_t pool, double sharpness, double clip, double t_max,
                                                double xtol, double rtol, int64_t maxiter, bool implicit) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdekit::soft_kde2d_pooled", "")
                         .typed<decltype(soft_kde2d_pooled_cpu)>();
    at::AutoDispatchBelowADInplaceOrView below;
    // contiguous copies of strided views (e.g. the columns of (B, N, 2) observations) made once, for both passes
    auto xc = x.contiguous(), yc = y.contiguous(), wc = w.contiguous(), rxc = rx.contiguous(), ryc = ry.contiguous();
    auto [blocks, times, status, spectrum, raised, sums] =
        op.call(xc, yc, wc, rxc, ryc, count, grid, pool, sharpness, clip, t_max, xtol, rtol, maxiter, implicit);
    ctx->save_for_backward({xc, yc, wc, rxc, ryc, count, spectrum, raised, sums, times, status});
    ctx->saved_data["pool"] = pool;
    ctx->saved_data["sharpness"] = sharpness;
    ctx->saved_data["clip"] = clip;
    ctx->saved_data["implicit"] = implicit;
    ctx->mark_non_differentiable({status, spectrum, raised, sums});
    ctx->set_materialize_grads(false);  // no zeros for the outputs without a gradient
    return {blocks, times, status, spectrum, raised, sums};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdekit::soft_kde2d_pooled_backward", "")
                         .typed<decltype(soft_kde2d_pooled_backward_cpu)>();
    const auto saved = ctx->get_saved_variables();
    const int64_t pool = ctx->saved_data["pool"].toInt();
    const at::Tensor &x = saved[0], &times = saved[9];
    at::Tensor grad_blocks = grads[0].defined() ? grads[0] : at::zeros({x.size(0), pool, pool}, x.options());
    at::Tensor grad_times = grads[1].defined() ? grads[1] : at::zeros_like(times);
    auto [gx, gy, gw] = op.call(grad_blocks, grad_times, x, saved[1], saved[2], saved[3], saved[4], saved[5],
                                saved[6], saved[7], saved[8], times, saved[10], pool,
                                ctx->saved_data["sharpness"].toDouble(), ctx->saved_data["clip"].toDouble(),
                                ctx->saved_data["implicit"].toBool());
    torch::autograd::variable_list out(15);
    out[0] = gx;
    out[1] = gy;
    out[2] = gw;
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> soft_kde2d_pooled_autograd(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx, const at::Tensor& ry,
    const at::Tensor& count, int64_t grid, int64_t pool, double sharpness, double clip, double t_max, double xtol,
    double rtol, int64_t maxiter, bool implicit) {
  auto out = SoftKDE2dPooled::apply(x, y, w, rx, ry, count, grid, pool, sharpness, clip, t_max, xtol, rtol, maxiter,
                                    implicit);
  return {out[0], out[1], out[2], out[3], out[4], out[5]};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("soft_kde2d_pooled", &soft_kde2d_pooled_cpu);
  m.impl("soft_kde2d_pooled_backward", &soft_kde2d_pooled_backward_cpu);
}

TORCH_LIBRARY_IMPL(kdekit, Autograd, m) { m.impl("soft_kde2d_pooled", &soft_kde2d_pooled_autograd); }

}  // namespace kdekit::cpu
