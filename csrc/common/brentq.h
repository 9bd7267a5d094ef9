// scipy.optimize.brentq (the classic Brent algorithm of scipy's brentq.c: same bracket bookkeeping,
// interpolation/extrapolation steps and stopping rule, so iterates match kde_diffusion's), shared by the CPU kernels
// (csrc/cpu/diffusion_kde.*) and the CUDA one (csrc/cuda/diffusion_kde.cu, where every thread of a block runs it
// on block-reduced values of f). Its Python twin is kdekit/ops/diffusion_kde/root.py (KernelStatus mirrors Status).
#pragma once

#include <cmath>
#include <cstdint>

#include "host_device.h"

namespace kdekit::common {

// Status codes of kdekit::kde2d_solve / kde2d_points (csrc/kdekit.cpp).
enum Status : int32_t { kOk = 0, kNoSignChange = 1, kNotConverged = 2, kInvalid = 3 };

struct SolveOptions {
  double t_max, xtol, rtol;
  int64_t maxiter;
};

// std::min's rule (the first argument unless the second is smaller), so a NaN propagates the same way everywhere.
KDEKIT_HOST_DEVICE inline double min_like_std(double a, double b) { return b < a ? b : a; }

// Root of f on [xa, xb] with f(xa) = fa given (kde_diffusion: f(0) = 1 exactly whenever gamma is finite).
template <typename F>
KDEKIT_HOST_DEVICE Status brentq(F&& f, double xa, double fa, double xb, double xtol, double rtol, int64_t maxiter,
                                 double& root) {
  using std::fabs;
  using std::isfinite;
  using std::isnan;
  using std::signbit;
  double xpre = xa, xcur = xb, fpre = fa, fcur = f(xcur);
  double xblk = 0, fblk = 0, spre = 0, scur = 0;
  if (!isfinite(fcur)) return kInvalid;
  if (fpre == 0) { root = xpre; return kOk; }
  if (fcur == 0) { root = xcur; return kOk; }
  if (signbit(fpre) == signbit(fcur)) return kNoSignChange;
  for (int64_t it = 0; it < maxiter; ++it) {
    if (fpre != 0 && fcur != 0 && signbit(fpre) != signbit(fcur)) {
      xblk = xpre;
      fblk = fpre;
      spre = scur = xcur - xpre;
    }
    if (fabs(fblk) < fabs(fcur)) {
      xpre = xcur; xcur = xblk; xblk = xpre;
      fpre = fcur; fcur = fblk; fblk = fpre;
    }
    const double delta = (xtol + rtol * fabs(xcur)) / 2;
    const double sbis = (xblk - xcur) / 2;
    if (fcur == 0 || fabs(sbis) < delta) { root = xcur; return kOk; }
    if (fabs(spre) > delta && fabs(fcur) < fabs(fpre)) {
      double stry;
      if (xpre == xblk) {
        stry = -fcur * (xcur - xpre) / (fcur - fpre);  // secant
      } else {
        const double dpre = (fpre - fcur) / (xpre - xcur);
        const double dblk = (fblk - fcur) / (xblk - xcur);
        stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre));  // inverse quadratic
      }
      if (2 * fabs(stry) < min_like_std(fabs(spre), 3 * fabs(sbis) - delta)) {
        spre = scur;
        scur = stry;
      } else {
        spre = sbis;
        scur = sbis;
      }
    } else {
      spre = sbis;
      scur = sbis;
    }
    xpre = xcur;
    fpre = fcur;
    xcur += fabs(scur) > delta ? scur : (sbis > 0 ? delta : -delta);
    fcur = f(xcur);
    if (isnan(fcur)) return kInvalid;
  }
  root = xcur;
  return kNotConverged;
}

}  // namespace kdekit::common
