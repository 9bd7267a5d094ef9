// kdekit::soft_histogram2d and its backward on CPU (the kernel: soft_histogram.h).
#include <torch/library.h>

#include "soft_histogram.h"

namespace kdekit::cpu {
namespace {

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

// Runs body(kernel, b0, b1) over chunks of items, with the Kernel for x's dtype and this CPU's vector width.
template <typename Body>
void for_items(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, const at::Tensor& rx,
               const at::Tensor& ry, int64_t bins, double sharpness, bool backward, const Body& body) {
  const int64_t B = x.size(0), N = x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "soft_histogram2d_cpu", [&] {
    const scalar_t *px = x.data_ptr<scalar_t>(), *py = y.data_ptr<scalar_t>(), *pw = w.data_ptr<scalar_t>();
    const double *prx = rx.data_ptr<double>(), *pry = ry.data_ptr<double>();
    at::parallel_for(0, B, item_grain(2.0 * N * bins * bins), [&](int64_t b0, int64_t b1) {
      run_widest_simd([&](auto width) KDEKIT_INLINE_LAMBDA {
        Kernel<scalar_t, decltype(width)::value> k(px, py, pw, prx, pry, N, bins, static_cast<scalar_t>(sharpness),
                                                   backward);
        body(k, b0, b1);
      });
    });
  });
}

at::Tensor soft_histogram2d_cpu(const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
                                const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins, double sharpness) {
  check_inputs(x_, y_, w_, rx_, ry_, bins);
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous();
  auto rx = rx_.contiguous(), ry = ry_.contiguous();
  auto out = at::empty({x.size(0), bins, bins}, x.options());
  for_items(x, y, w, rx, ry, bins, sharpness, false, [&](auto& k, int64_t b0, int64_t b1) KDEKIT_INLINE_LAMBDA {
    using T = typename std::decay_t<decltype(k)>::Scalar;
    k.forward(out.data_ptr<T>(), b0, b1);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_histogram2d_backward_cpu(
    const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& y_, const at::Tensor& w_,
    const at::Tensor& rx_, const at::Tensor& ry_, int64_t bins, double sharpness) {
  check_inputs(x_, y_, w_, rx_, ry_, bins);
  const int64_t B = x_.size(0);
  TORCH_CHECK(grad_.dim() == 3 && grad_.size(0) == B && grad_.size(1) == bins && grad_.size(2) == bins,
              "grad must have shape (", B, ", ", bins, ", ", bins, "), got ", grad_.sizes());
  auto x = x_.contiguous(), y = y_.contiguous(), w = w_.contiguous();
  auto rx = rx_.contiguous(), ry = ry_.contiguous();
  auto grad = grad_.to(x.scalar_type()).contiguous();
  auto gx = at::empty_like(x), gy = at::empty_like(x), gw = at::empty_like(x);
  for_items(x, y, w, rx, ry, bins, sharpness, true, [&](auto& k, int64_t b0, int64_t b1) KDEKIT_INLINE_LAMBDA {
    using T = typename std::decay_t<decltype(k)>::Scalar;
    k.backward(grad.data_ptr<T>(), gx.data_ptr<T>(), gy.data_ptr<T>(), gw.data_ptr<T>(), b0, b1);
  });
  return {gx, gy, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("soft_histogram2d", &soft_histogram2d_cpu);
  m.impl("soft_histogram2d_backward", &soft_histogram2d_backward_cpu);
}

}  // namespace kdekit::cpu
