// All kdekit operator schemas (namespace `kdekit`). CPU kernels live in csrc/cpu/*.cpp (TORCH_LIBRARY_IMPL);
// fake (meta) kernels and autograd formulas are registered from Python in kdekit/_ext.py, except the autograd of the
// training loss's ops (soft_kde2d_pooled, pseudo_observations), registered in C++ beside their kernels.
//
// Conventions shared by the ops:
//   points x, y, weights: (B, N) contiguous, one floating dtype; ranges: (B, 2) float64 [lo, hi] per item;
//   histograms/spectra: (B, bins, bins) indexed [x_bin, y_bin]; every item is independent (one thread per item, so
//   results do not depend on the number of threads).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import kdekit._C` only has to load the library (which runs the registrations below); no Python functions.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

TORCH_LIBRARY(kdekit, m) {
  // H[b, i, j] = sum_n w[b, n] A_x[b, n, i] A_y[b, n, j],  A[i] = sigmoid(s (x - e_i)) - sigmoid(s (x - e_{i+1}))
  m.def("soft_histogram2d(Tensor x, Tensor y, Tensor weights, Tensor range_x, Tensor range_y, int bins, "
        "float sharpness) -> Tensor");
  m.def("soft_histogram2d_backward(Tensor grad, Tensor x, Tensor y, Tensor weights, Tensor range_x, "
        "Tensor range_y, int bins, float sharpness) -> (Tensor, Tensor, Tensor)");
  // numpy.histogram2d binning (float64 linspace edges, last bin closed, outside/NaN dropped), summed weights.
  m.def("hard_histogram2d(Tensor x, Tensor y, Tensor weights, Tensor range_x, Tensor range_y, int bins) -> Tensor");
  // d/d weights of hard_histogram2d: grad[b, bin_x, bin_y] per point (0 for dropped points).
  m.def("hard_histogram2d_backward(Tensor grad, Tensor x, Tensor y, Tensor range_x, Tensor range_y, int bins) "
        "-> Tensor");
  // kde_diffusion.kde2d fixed point on a halved DCT spectrum a (B, n, n): times (B, 3) float64 = (t*, tx1, tx2),
  // status (B,) int32 (0 ok, 1 no sign change on [0, t_max], 2 not converged in maxiter, 3 no mass / not finite).
  m.def("kde2d_solve(Tensor spectrum, Tensor count, float t_max, float xtol, float rtol, int maxiter) "
        "-> (Tensor, Tensor)");
  // Hard histogram + DCT + solve + smoothing + inverse DCT (+ pooling) for float64 points, fused: returns the
  // density (B, grid, grid) raised to `clip` (-inf: as it is) when pool == 0, else the (B, pool, pool) block sums of
  // that density divided by their total; grid even.
  m.def("kde2d_points(Tensor x, Tensor y, Tensor weights, Tensor range_x, Tensor range_y, Tensor count, int grid, "
        "int pool, float clip, float t_max, float xtol, float rtol, int maxiter) -> (Tensor, Tensor, Tensor)");
  // The training loss's KDE fused (soft histogram of float32/float64 points -> DCT -> kde2d_solve's fixed point ->
  // smoothing -> (B, pool, pool) block sums / total, in x's dtype; clip > -inf: of the density raised to clip on
  // the grid); also times (B, 3) float64 (t*, tx1, tx2), status (B,) int32 as kde2d_solve (3 also where no weighted
  // point lies inside the limits or the blocks are not finite; items with status != 0 have NaN blocks), and what
  // the backward reuses: the halved spectrum (B, grid, grid) float64, raised (B, grid, grid) bool (the cells the
  // clip raised; (B, 0, 0) without a clip) and the block sums before normalisation (B, pool, pool) float64.
  // `implicit` is the backward's rule for t* (implicit function theorem, or constant).
  m.def("soft_kde2d_pooled(Tensor x, Tensor y, Tensor weights, Tensor range_x, Tensor range_y, Tensor count, "
        "int grid, int pool, float sharpness, float clip, float t_max, float xtol, float rtol, int maxiter, "
        "bool implicit) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // d/d(x, y, weights) of soft_kde2d_pooled's blocks and times (zero for items with status != 0).
  m.def("soft_kde2d_pooled_backward(Tensor grad_blocks, Tensor grad_times, Tensor x, Tensor y, Tensor weights, "
        "Tensor range_x, Tensor range_y, Tensor count, Tensor spectrum, Tensor raised, Tensor sums, "
        "Tensor times, Tensor status, int pool, "
        "float sharpness, float clip, bool implicit) -> (Tensor, Tensor, Tensor)");
  // The seed's pseudo-observations (U, n, 2) from ratings (U, A, 2): draw o of item u averages ratings[u, a, :] over
  // the size[u, o] valid annotators (both ratings finite) with the smallest (keys[u, o, a], a) (float32 keys >= 0;
  // what a stable argsort lists first); with noise (U, n, 2) float32 u ~ U[0, 1), the mean + (2u - 1) h clamped to
  // [-1, 1] (h = 0.5 sd + 1e-12: the item's unbiased std per dimension), without it the subset means alone. Items
  // without a valid annotator give NaN. Also pivots (U, n) int64, the packed (key, index) of each draw's last chosen
  // annotator (the backward's selection).
  m.def("pseudo_observations(Tensor ratings, Tensor keys, Tensor size, Tensor? noise) -> (Tensor, Tensor)");
  m.def("pseudo_observations_backward(Tensor grad, Tensor ratings, Tensor keys, Tensor size, Tensor? noise, "
        "Tensor pivots) -> Tensor");
  // Fills self (contiguous float32/float64, CPU) with torch.rand's values from generator (default: torch's CPU
  // generator), advancing it as torch.rand would; not differentiable.
  m.def("uniform_(Tensor(a!) self, Generator? generator) -> ()");
  // Concordance correlation coefficient over the last dim of (B, N): population (ddof 0) or unbiased moments.
  m.def("ccc(Tensor x, Tensor y, bool unbiased) -> Tensor");
  m.def("ccc_backward(Tensor grad, Tensor x, Tensor y, bool unbiased) -> (Tensor, Tensor)");
  // kind over the last dim of (B, K): "kl" = sum p log(p/q), "jsd" = (kl(p, m) + kl(q, m)) / 2 (0 log 0 = 0; a
  // kl/jsd row with a negative or non-finite entry gives NaN and a zero gradient), "tvd" = sum |p - q| / 2.
  m.def("divergence(Tensor p, Tensor q, str kind) -> Tensor");
  m.def("divergence_backward(Tensor grad, Tensor p, Tensor q, str kind) -> (Tensor, Tensor)");
}
