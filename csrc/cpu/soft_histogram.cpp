// Fused 2-D soft histogram (forward and backward) on CPU.
//
// Per item b (one thread): the item's sigmoid differences A_x, A_y (N x bins, bins + 1 sigmoids per point and axis)
// live in per-thread buffers reused across items, so the (B, N, bins) matrices never exist; products use BLAS.
//   forward:  H = A_x^T (w A_y)
//   backward: with G = dL/dH, u = A_x[n] G, v = G A_y[n]^T:
//             dL/dw_n = <A_x[n], v>,  dL/dx_n = w_n <dA_x[n], v>,  dL/dy_n = w_n <u, dA_y[n]>,
//             dA[i] = s (sigmoid'(s (x - e_i)) - sigmoid'(s (x - e_{i+1}))),  sigmoid' = sigmoid (1 - sigmoid).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "common.h"

namespace kdekit {
namespace {

template <typename T>
struct AxisEdges {
  std::vector<T> edges;
  AxisEdges(T lo, T hi, int64_t bins) : edges(bins + 1) {
    const T step = (hi - lo) / static_cast<T>(bins);
    for (int64_t e = 0; e <= bins; ++e) edges[e] = bin_edge(lo, hi, step, e, bins);
  }
};

// mass[i] = sigmoid(s (x - e_i)) - sigmoid(s (x - e_{i+1})); if dmass: its derivative in x.
template <typename T>
inline void sigmoid_mass(T x, T s, const T* edges, int64_t bins, T* cdf, T* mass, T* dmass) {
  for (int64_t e = 0; e <= bins; ++e) cdf[e] = T(1) / (T(1) + std::exp(-s * (x - edges[e])));
  for (int64_t i = 0; i < bins; ++i) mass[i] = cdf[i] - cdf[i + 1];
  if (dmass) {
    for (int64_t i = 0; i < bins; ++i)
      dmass[i] = s * (cdf[i] * (T(1) - cdf[i]) - cdf[i + 1] * (T(1) - cdf[i + 1]));
  }
}

void check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx,
                  const at::Tensor& ry, int64_t bins) {
  check_float_or_double(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (B, N), got ", x.sizes());
  check_points(y, "y", x.size(0), x.size(1), x.scalar_type());
  check_points(w, "weights", x.size(0), x.size(1), x.scalar_type());
  check_range(rx, "range_x", x.size(0));
  check_range(ry, "range_y", x.size(0));
  TORCH_CHECK(bins >= 2, "bins must be >= 2, got ", bins);
}

// Sigmoid differences of one item's points: mass (N, bins) and, if dmass, d mass / dx; a per-thread tile.
template <typename T>
void item_mass(const T* x, int64_t N, T s, const AxisEdges<T>& ax, int64_t bins, std::vector<T>& cdf, T* mass,
               T* dmass) {
  for (int64_t n = 0; n < N; ++n)
    sigmoid_mass(x[n], s, ax.edges.data(), bins, cdf.data(), mass + n * bins, dmass ? dmass + n * bins : nullptr);
}

at::Tensor soft_histogram2d_cpu(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
                                const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins, double sharpness) {
  check_inputs(x_, y_, w_, rx_, ry_, bins);
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous();
  auto rx = rx_.contiguous(), ry = ry_.contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  auto out = at::empty({B, bins, bins}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "soft_histogram2d_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>();
    const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
    const scalar_t s = static_cast<scalar_t>(sharpness);
    at::parallel_for(0, B, item_grain(2.0 * N * bins * bins), [&](int64_t b0, int64_t b1) {
      auto mx = at::empty({N, bins}, x.options()), my = at::empty({N, bins}, x.options());
      std::vector<scalar_t> cdf(bins + 1);
      for (int64_t b = b0; b < b1; ++b) {
        AxisEdges<scalar_t> ex(prx[2 * b], prx[2 * b + 1], bins), ey(pry[2 * b], pry[2 * b + 1], bins);
        scalar_t *pmx = mx.data_ptr<scalar_t>(), *pmy = my.data_ptr<scalar_t>();
        item_mass(px + b * N, N, s, ex, bins, cdf, pmx, (scalar_t*)nullptr);
        item_mass(py + b * N, N, s, ey, bins, cdf, pmy, (scalar_t*)nullptr);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t j = 0; j < bins; ++j) pmy[n * bins + j] *= pw[b * N + n];
        auto H = out.select(0, b);
        at::mm_out(H, mx.t(), my);  // (bins, N) x (N, bins), BLAS
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_histogram2d_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
    const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins, double sharpness) {
  check_inputs(x_, y_, w_, rx_, ry_, bins);
  const int64_t B = x_.size(0), N = x_.size(1);
  TORCH_CHECK(grad_.dim() == 3 && grad_.size(0) == B && grad_.size(1) == bins && grad_.size(2) == bins,
              "grad must have shape (", B, ", ", bins, ", ", bins, "), got ", grad_.sizes());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous();
  auto rx = rx_.contiguous(), ry = ry_.contiguous();
  auto grad = grad_.to(x.scalar_type()).contiguous();
  auto gx = at::empty_like(x), gy = at::empty_like(x), gw = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "soft_histogram2d_backward_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>();
    const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
    scalar_t *pgx = gx.data_ptr<scalar_t>(), *pgy = gy.data_ptr<scalar_t>(), *pgw = gw.data_ptr<scalar_t>();
    const scalar_t s = static_cast<scalar_t>(sharpness);
    at::parallel_for(0, B, item_grain(2.0 * N * bins * bins), [&](int64_t b0, int64_t b1) {
      auto opts = x.options();
      auto mx = at::empty({N, bins}, opts), my = at::empty({N, bins}, opts);
      auto dmx = at::empty({N, bins}, opts), dmy = at::empty({N, bins}, opts);
      auto u = at::empty({N, bins}, opts), v = at::empty({N, bins}, opts);
      std::vector<scalar_t> cdf(bins + 1);
      for (int64_t b = b0; b < b1; ++b) {
        AxisEdges<scalar_t> ex(prx[2 * b], prx[2 * b + 1], bins), ey(pry[2 * b], pry[2 * b + 1], bins);
        item_mass(px + b * N, N, s, ex, bins, cdf, mx.data_ptr<scalar_t>(), dmx.data_ptr<scalar_t>());
        item_mass(py + b * N, N, s, ey, bins, cdf, my.data_ptr<scalar_t>(), dmy.data_ptr<scalar_t>());
        auto G = grad.select(0, b);
        at::mm_out(u, mx, G);      // u[n, j] = sum_i A_x[n, i] G[i, j]
        at::mm_out(v, my, G.t());  // v[n, i] = sum_j G[i, j] A_y[n, j]
        const scalar_t *pmx = mx.data_ptr<scalar_t>(), *pdmx = dmx.data_ptr<scalar_t>();
        const scalar_t *pdmy = dmy.data_ptr<scalar_t>(), *pu = u.data_ptr<scalar_t>(), *pv = v.data_ptr<scalar_t>();
        for (int64_t n = 0; n < N; ++n) {
          scalar_t sw = 0, sx = 0, sy = 0;
          for (int64_t i = 0; i < bins; ++i) {
            const int64_t e = n * bins + i;
            sw += pmx[e] * pv[e];
            sx += pdmx[e] * pv[e];
            sy += pu[e] * pdmy[e];
          }
          const int64_t bn = b * N + n;
          pgw[bn] = sw;
          pgx[bn] = pw[bn] * sx;
          pgy[bn] = pw[bn] * sy;
        }
      }
    });
  });
  return {gx, gy, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("soft_histogram2d", &soft_histogram2d_cpu);
  m.impl("soft_histogram2d_backward", &soft_histogram2d_backward_cpu);
}

}  // namespace kdekit
