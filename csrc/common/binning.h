// numpy-compatible binning shared by the CPU and CUDA kernels (host and device).
#pragma once

#include <cstdint>

#include "host_device.h"

namespace kdekit::common {

// Edge e of numpy.linspace(lo, hi, bins + 1) computed as numpy does: e * ((hi - lo) / bins) + lo, last edge = hi.
template <typename T>
KDEKIT_HOST_DEVICE inline T bin_edge(T lo, T hi, T step, int64_t e, int64_t bins) {
  return e == bins ? hi : static_cast<T>(e) * step + lo;
}

// numpy.histogram2d's bin of x (float64 edges): number of edges <= x, minus one, x == hi in the last bin; -1 when x
// is outside [lo, hi] or NaN.
KDEKIT_HOST_DEVICE inline int64_t hard_bin(double x, double lo, double hi, int64_t bins) {
  if (!(x >= lo && x <= hi)) return -1;
  const double step = (hi - lo) / static_cast<double>(bins);
  int64_t g = static_cast<int64_t>((x - lo) / step);
  g = g < 0 ? 0 : (g > bins - 1 ? bins - 1 : g);
  while (g > 0 && x < bin_edge(lo, hi, step, g, bins)) --g;
  while (g < bins - 1 && x >= bin_edge(lo, hi, step, g + 1, bins)) ++g;
  return g;
}

}  // namespace kdekit::common
