// Concordance correlation coefficient over the last dim of (B, N) (any strides: a transposed view needs no copy),
// one item per task, float64 accumulation.
//   ccc = 2 C / (M2x + M2y + (n - ddof) (mx - my)^2)   (C, M2: centred co-/second moments; NaN if undefined)
//   d ccc / d x_i = 2 (y_i - my) / D - 2 C / D^2 (2 (x_i - mx) + 2 (n - ddof) (mx - my) / n), y symmetric;
//   zero for undefined items.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>

#include "common.h"

namespace kdekit::cpu {
namespace {

struct Moments {
  double n, mx, my, m2x, m2y, cxy;
};

// moments of row x[i * incx], y[i * incy], i < N
template <typename T>
Moments moments(const T* x, int64_t incx, const T* y, int64_t incy, int64_t N) {
  double sx = 0, sy = 0;
  for (int64_t i = 0; i < N; ++i) {
    sx += static_cast<double>(x[i * incx]);
    sy += static_cast<double>(y[i * incy]);
  }
  double mx = sx / N, my = sy / N;
  double m2x = 0, m2y = 0, cxy = 0, rx = 0, ry = 0;
  for (int64_t i = 0; i < N; ++i) {
    const double dx = static_cast<double>(x[i * incx]) - mx, dy = static_cast<double>(y[i * incy]) - my;
    rx += dx;
    ry += dy;
    m2x += dx * dx;
    m2y += dy * dy;
    cxy += dx * dy;
  }
  // one refinement step of the means (exact centring up to rounding); the moments change by n * shift^2
  const double ex = rx / N, ey = ry / N;
  return {static_cast<double>(N), mx + ex, my + ey, m2x - N * ex * ex, m2y - N * ey * ey, cxy - N * ex * ey};
}

void check_pair(const at::Tensor& x, const at::Tensor& y) {
  check_float_or_double(x, "x");
  TORCH_CHECK(x.dim() == 2 && x.size(1) >= 1, "x must be (B, N) with N >= 1, got ", x.sizes());
  check_points(y, "y", x.size(0), x.size(1), x.scalar_type());
}

at::Tensor ccc_cpu(const at::Tensor& x, const at::Tensor& y, bool unbiased) {
  check_pair(x, y);
  const int64_t B = x.size(0), N = x.size(1);
  const double ddof = unbiased ? 1.0 : 0.0;
  auto out = at::empty({B}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ccc_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, B, item_grain(10.0 * N), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const Moments m = moments(px + b * x.stride(0), x.stride(1), py + b * y.stride(0), y.stride(1), N);
        const double d = m.mx - m.my;
        const double den = m.m2x + m.m2y + (m.n - ddof) * d * d;
        po[b] = (m.n > ddof && den > 0) ? static_cast<scalar_t>(2.0 * m.cxy / den)
                                        : std::numeric_limits<scalar_t>::quiet_NaN();
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> ccc_backward_cpu(const at::Tensor& grad_, const at::Tensor& x_,
                                                    const at::Tensor& y_, bool unbiased) {
  check_pair(x_, y_);
  auto x = x_.contiguous(), y = y_.contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  TORCH_CHECK(grad_.dim() == 1 && grad_.size(0) == B, "grad must have shape (", B, ",), got ", grad_.sizes());
  auto grad = grad_.to(at::kDouble).contiguous();
  const double ddof = unbiased ? 1.0 : 0.0;
  auto gx = at::empty_like(x), gy = at::empty_like(y);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ccc_backward_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>();
    const double* pg = grad.data_ptr<double>();
    scalar_t *pgx = gx.data_ptr<scalar_t>(), *pgy = gy.data_ptr<scalar_t>();
    at::parallel_for(0, B, item_grain(20.0 * N), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t *xb = px + b * N, *yb = py + b * N;
        const Moments m = moments(xb, 1, yb, 1, N);
        const double d = m.mx - m.my;
        const double den = m.m2x + m.m2y + (m.n - ddof) * d * d;
        const bool ok = m.n > ddof && den > 0;
        const double g = pg[b];
        // undefined (NaN) items get a zero gradient, as in the torch path
        const double a = ok ? 2.0 * g / den : 0.0, c = ok ? 2.0 * g * m.cxy / (den * den) : 0.0;
        const double shift = 2.0 * (m.n - ddof) * d / m.n;
        for (int64_t i = 0; i < N; ++i) {
          const double dx = static_cast<double>(xb[i]) - m.mx, dy = static_cast<double>(yb[i]) - m.my;
          pgx[b * N + i] = static_cast<scalar_t>(a * dy - c * (2.0 * dx + shift));
          pgy[b * N + i] = static_cast<scalar_t>(a * dx - c * (2.0 * dy - shift));
        }
      }
    });
  });
  return {gx, gy};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("ccc", &ccc_cpu);
  m.impl("ccc_backward", &ccc_backward_cpu);
}

}  // namespace kdekit::cpu
