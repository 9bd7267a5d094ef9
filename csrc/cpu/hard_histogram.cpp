// 2-D hard histogram with numpy.histogram2d's binning (float64 edges), one thread per item, plus the gradient with
// respect to the weights (a gather of the incoming gradient at each point's bin).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common.h"

namespace kdekit::cpu {
namespace {

void check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& rx, const at::Tensor& ry,
                  int64_t bins) {
  check_float_or_double(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (B, N), got ", x.sizes());
  check_points(y, "y", x.size(0), x.size(1), x.scalar_type());
  check_range(rx, "range_x", x.size(0));
  check_range(ry, "range_y", x.size(0));
  TORCH_CHECK(bins >= 2, "bins must be >= 2, got ", bins);
}

at::Tensor hard_histogram2d_cpu(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
                                const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins) {
  check_inputs(x_, y_, rx_, ry_, bins);
  check_points(w_, "weights", x_.size(0), x_.size(1), x_.scalar_type());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  const int64_t B = x.size(0), N = x.size(1);
  auto out = at::zeros({B, bins, bins}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hard_histogram2d_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>();
    const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t n = 0; n < N; ++n) {
          const int64_t bn = b * N + n;
          const int64_t i = hard_bin(static_cast<double>(px[bn]), prx[2 * b], prx[2 * b + 1], bins);
          const int64_t j = hard_bin(static_cast<double>(py[bn]), pry[2 * b], pry[2 * b + 1], bins);
          if (i >= 0 && j >= 0) po[(b * bins + i) * bins + j] += pw[bn];
        }
      }
    });
  });
  return out;
}

at::Tensor hard_histogram2d_backward_cpu(const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& y_,
                                         const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins) {
  check_inputs(x_, y_, rx_, ry_, bins);
  const int64_t B = x_.size(0), N = x_.size(1);
  TORCH_CHECK(grad_.dim() == 3 && grad_.size(0) == B && grad_.size(1) == bins && grad_.size(2) == bins,
              "grad must have shape (", B, ", ", bins, ", ", bins, "), got ", grad_.sizes());
  auto x = x_.contiguous(), y = y_.contiguous(), rx = rx_.contiguous(), ry = ry_.contiguous();
  auto grad = grad_.to(x.scalar_type()).contiguous();
  auto gw = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hard_histogram2d_backward_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>(), *pg = grad.data_ptr<scalar_t>();
    const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
    scalar_t* pgw = gw.data_ptr<scalar_t>();
    at::parallel_for(0, B * N, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t bn = r0; bn < r1; ++bn) {
        const int64_t b = bn / N;
        const int64_t i = hard_bin(static_cast<double>(px[bn]), prx[2 * b], prx[2 * b + 1], bins);
        const int64_t j = hard_bin(static_cast<double>(py[bn]), pry[2 * b], pry[2 * b + 1], bins);
        pgw[bn] = (i >= 0 && j >= 0) ? pg[(b * bins + i) * bins + j] : scalar_t(0);
      }
    });
  });
  return gw;
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("hard_histogram2d", &hard_histogram2d_cpu);
  m.impl("hard_histogram2d_backward", &hard_histogram2d_backward_cpu);
}

}  // namespace kdekit::cpu
