// Shared helpers of the CPU kernels: argument checks, the per-call thread grain and dynamic item scheduling
// (binning: csrc/common/binning.h).
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "../common/binning.h"

namespace kdekit::cpu {

using common::bin_edge;
using common::hard_bin;

// Grain for at::parallel_for over B items of about `work_per_item` flops: items are split across threads only when
// the whole call is large (~2^26 flops); small calls (a training step) stay on one thread, which avoids OpenMP
// hand-off costs that dominate on a small or busy machine.
inline int64_t item_grain(double work_per_item) {
  const double grain = 67108864.0 / (work_per_item > 1.0 ? work_per_item : 1.0);
  return grain < 1.0 ? 1 : (grain > 1e15 ? int64_t(1e15) : static_cast<int64_t>(grain));
}

// Grain that gives each thread one chunk of the B items (calls whose per-item work dwarfs the hand-off).
inline int64_t grain_per_thread(int64_t B) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, (B + threads - 1) / threads);
}

// Runs worker(next) once on each intra-op thread (at most B of them), where next(b) hands out the items 0..B-1 one at a
// time and returns false when none is left: dynamic scheduling, so a thread slowed by other load or by harder items
// takes fewer items. Each item's result must not depend on the thread that computes it or on the items before it.
template <typename Worker>
void parallel_items(int64_t B, const Worker& worker) {
  std::atomic<int64_t> next{0};
  const int64_t threads = std::min<int64_t>(B, std::max<int64_t>(1, at::get_num_threads()));
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    worker([&](int64_t& b) {
      b = next.fetch_add(1, std::memory_order_relaxed);
      return b < B;
    });
  });
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


}  // namespace kdekit::cpu
