// Shared helpers for the CPU kernels: argument checks and numpy-compatible bin edges.
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>

namespace kdekit {

// Grain for at::parallel_for over B items of about `work_per_item` flops: items are split across threads only when
// the whole call is large (~2^26 flops); small calls (a training step) stay on one thread, which avoids OpenMP
// hand-off costs that dominate on a small or busy machine.
inline int64_t item_grain(double work_per_item) {
  const double grain = 67108864.0 / (work_per_item > 1.0 ? work_per_item : 1.0);
  return grain < 1.0 ? 1 : (grain > 1e15 ? int64_t(1e15) : static_cast<int64_t>(grain));
}

inline void check_points(const at::Tensor& t, const char* name, int64_t B, int64_t N, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == N, name, " must have shape (", B, ", ", N, "), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
}

inline void check_range(const at::Tensor& t, const char* name, int64_t B) {
  TORCH_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == 2, name, " must have shape (", B, ", 2), got ",
              t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kDouble, name, " must be float64, got ", t.scalar_type());
}

inline void check_float_or_double(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name,
              " must be float32 or float64 (half inputs are widened by the Python wrapper), got ", t.scalar_type());
}

// Edge e of numpy.linspace(lo, hi, bins + 1) computed as numpy does: e * ((hi - lo) / bins) + lo, last edge = hi.
template <typename T>
inline T bin_edge(T lo, T hi, T step, int64_t e, int64_t bins) {
  return e == bins ? hi : static_cast<T>(e) * step + lo;
}

// numpy.histogram2d's bin of x (float64 edges): number of edges <= x, minus one, x == hi in the last bin; -1 when x
// is outside [lo, hi] or NaN.
inline int64_t hard_bin(double x, double lo, double hi, int64_t bins) {
  if (!(x >= lo && x <= hi)) return -1;
  const double step = (hi - lo) / static_cast<double>(bins);
  int64_t g = static_cast<int64_t>((x - lo) / step);
  g = g < 0 ? 0 : (g > bins - 1 ? bins - 1 : g);
  while (g > 0 && x < bin_edge(lo, hi, step, g, bins)) --g;
  while (g < bins - 1 && x >= bin_edge(lo, hi, step, g + 1, bins)) ++g;
  return g;
}

}  // namespace kdekit
