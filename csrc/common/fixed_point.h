// The pieces of kde_diffusion's 2-D fixed point that the CPU and CUDA kernels share (host and device): the diffusion
// weights of a time t, the time t_ij of each psi(i, j) below the top level, and the per-axis times from the level-2
// psi. The Python twin is kdekit/ops/diffusion_kde/fixed_point.py.
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace kdekit::common {

constexpr double kPi = 3.14159265358979323846;

// Weights w_k exp(-pi^2 k^2 t) (w_0 = 1, else 1/2) into e[0, n) by a recurrence refreshed with an exact exp every 32
// steps (its rounding grows along each block of 32: relative error at most 2e-12 over t in [1e-5, 0.1], n = 512). Returns the number K of leading weights >= 1e-60 (e[k] for k >= K is set to 0): the
// rest, even times k^10 <= 512^10, are below 1e-32 and cannot change any psi form (all terms >= 0) beyond rounding.
KDEKIT_HOST_DEVICE inline int64_t diffusion_weights(double t, int64_t n, double* e) {
  const double c = -(kPi * kPi);
  double q = exp(c * t), q2 = q * q, ek = 1.0;
  e[0] = 1.0;
  int64_t nz = n;
  for (int64_t k = 1; k < n; ++k) {
    const double kk = static_cast<double>(k);
    ek = (k % 32 == 0) ? exp((c * (kk * kk)) * t) : ek * q;
    q *= q2;
    if (ek < 1e-60) {
      nz = k;
      break;
    }
    e[k] = 0.5 * ek;
  }
  for (int64_t k = nz; k < n; ++k) e[k] = 0.0;
  return nz;
}

// kde_diffusion's time of psi(i, j) for i + j <= 4 from sum = |psi(i + 1, j) + psi(i, j + 1)|:
// t_ij = (C Pi Pj / (pi N sum))^(1 / (2 + i + j)), C = (1 + 2^-(i + j + 1)) / 3, Pm = 1 * 3 * ... * (2m - 1).
KDEKIT_HOST_DEVICE inline double psi_time(int i, int j, double N, double sum) {
  const double C = (1.0 + ldexp(1.0, -(i + j + 1))) / 3.0;
  double Pi = 1.0, Pj = 1.0;
  for (int m = 1; m < 2 * i; m += 2) Pi *= m;
  for (int m = 1; m < 2 * j; m += 2) Pj *= m;
  return pow(C * Pi * Pj / (kPi * N * sum), 1.0 / (2 + i + j));
}

// Per-axis times (tx1, tx2) from the level-2 psi; tx2 smooths rows (x), tx1 columns (y) (kde_diffusion's naming).
KDEKIT_HOST_DEVICE inline void axis_times(double p02, double p11, double p20, double N, double* tx1, double* tx2) {
  const double root = sqrt(p02 * p20);
  *tx1 = pow(pow(p02, 0.75) / (4 * kPi * N * pow(p20, 0.75) * (p11 + root)), 1.0 / 3);
  *tx2 = pow(pow(p20, 0.75) / (4 * kPi * N * pow(p02, 0.75) * (p11 + root)), 1.0 / 3);
}

}  // namespace kdekit::common
