// Means of random annotator subsets (the seed's pseudo-observations, kdekit.pseudo_observations): for item u and
// draw o, the mean of ratings[u, a, :] over the size[u, o] annotators a with the smallest (keys[u, o, a], a) — the
// annotators an argsort of the keys (stable: ties by index) lists first. A partial selection (nth_element, O(A) per
// draw) instead of a sort. Invalid annotators carry keys above every valid one (the caller's convention: 2.0, as
// keys are uniform in [0, 1)) and size <= the number of valid annotators, so they are never chosen.
//   forward: means (U, n, 2) in the ratings' dtype, accumulated in float64;
//   backward: d ratings[u, a, :] = sum over draws o that chose a of grad[u, o, :] / size[u, o] (the same selection).
// One item per task (a thread owns its item's rows of every output: deterministic for any number of threads).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "common.h"

namespace kdekit::cpu {
namespace {

void check_args(const at::Tensor& ratings, const at::Tensor& keys, const at::Tensor& size) {
  TORCH_CHECK(ratings.device().is_cpu() && keys.device().is_cpu() && size.device().is_cpu(),
              "ratings, keys and size must be CPU tensors");
  TORCH_CHECK(ratings.dim() == 3 && ratings.size(2) == 2, "ratings must be (U, A, 2), got ", ratings.sizes());
  const int64_t U = ratings.size(0), A = ratings.size(1);
  TORCH_CHECK(keys.dim() == 3 && keys.size(0) == U && keys.size(2) == A, "keys must be (", U, ", n, ", A, "), got ",
              keys.sizes());
  TORCH_CHECK(keys.scalar_type() == at::kFloat, "keys must be float32, got ", keys.scalar_type());
  TORCH_CHECK(size.dim() == 2 && size.size(0) == U && size.size(1) == keys.size(1), "size must be (", U, ", ",
              keys.size(1), "), got ", size.sizes());
  TORCH_CHECK(size.scalar_type() == at::kLong, "size must be int64, got ", size.scalar_type());
}

constexpr int64_t kRankCountMax = 24;  // up to this many annotators, ranks by counting (A^2 branch-free compares)

// Calls visit(o, chosen, count) for each draw o of item u: chosen[0 .. count) are the annotators of the draw.
template <typename Visit>
void for_each_subset(const float* keys, const int64_t* size, int64_t n, int64_t A, std::vector<int64_t>& order,
                     Visit&& visit) {
  order.resize(A);
  for (int64_t o = 0; o < n; ++o) {
    const float* k = keys + o * A;
    const int64_t count = size[o];
    TORCH_CHECK(count >= 1 && count <= A, "size must be in [1, ", A, "], got ", count);
    int64_t chosen = 0;
    if (count == A) {
      std::iota(order.begin(), order.end(), int64_t(0));
      chosen = A;
    } else if (A <= kRankCountMax) {  // rank of a = #annotators before it in (key, index) order
      for (int64_t a = 0; a < A; ++a) {
        int64_t rank = 0;
        for (int64_t b = 0; b < A; ++b) rank += (k[b] < k[a]) | ((k[b] == k[a]) & (b < a));
        if (rank < count) order[chosen++] = a;
      }
    } else {
      std::iota(order.begin(), order.end(), int64_t(0));
      std::nth_element(order.begin(), order.begin() + (count - 1), order.end(), [k](int64_t l, int64_t r) {
        return k[l] < k[r] || (k[l] == k[r] && l < r);
      });
      chosen = count;
    }
    visit(o, order.data(), chosen);
  }
}

at::Tensor subset_means_cpu(const at::Tensor& ratings_, const at::Tensor& keys_, const at::Tensor& size_) {
  check_args(ratings_, keys_, size_);
  auto ratings = ratings_.contiguous(), keys = keys_.contiguous(), size = size_.contiguous();
  const int64_t U = ratings.size(0), A = ratings.size(1), n = keys.size(1);
  auto means = at::empty({U, n, 2}, ratings.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ratings.scalar_type(), "subset_means", [&] {
    const scalar_t* r = ratings.data_ptr<scalar_t>();
    scalar_t* out = means.data_ptr<scalar_t>();
    const float* pk = keys.data_ptr<float>();
    const int64_t* ps = size.data_ptr<int64_t>();
    at::parallel_for(0, U, item_grain(8.0 * n * A), [&](int64_t u0, int64_t u1) {
      std::vector<int64_t> order;
      for (int64_t u = u0; u < u1; ++u) {
        const scalar_t* ru = r + u * A * 2;
        for_each_subset(pk + u * n * A, ps + u * n, n, A, order, [&](int64_t o, const int64_t* chosen, int64_t c) {
          double s0 = 0, s1 = 0;
          for (int64_t i = 0; i < c; ++i) {
            s0 += static_cast<double>(ru[2 * chosen[i]]);
            s1 += static_cast<double>(ru[2 * chosen[i] + 1]);
          }
          out[(u * n + o) * 2] = static_cast<scalar_t>(s0 / c);
          out[(u * n + o) * 2 + 1] = static_cast<scalar_t>(s1 / c);
        });
      }
    });
  });
  return means;
}

at::Tensor subset_means_backward_cpu(const at::Tensor& grad_, const at::Tensor& ratings, const at::Tensor& keys_,
                                     const at::Tensor& size_) {
  check_args(ratings, keys_, size_);
  const int64_t U = ratings.size(0), A = ratings.size(1), n = keys_.size(1);
  TORCH_CHECK(grad_.dim() == 3 && grad_.size(0) == U && grad_.size(1) == n && grad_.size(2) == 2,
              "grad must be (", U, ", ", n, ", 2), got ", grad_.sizes());
  auto grad = grad_.to(at::kDouble).contiguous(), keys = keys_.contiguous(), size = size_.contiguous();
  auto out = at::zeros({U, A, 2}, ratings.options().dtype(at::kDouble));
  const double* g = grad.data_ptr<double>();
  double* po = out.data_ptr<double>();
  const float* pk = keys.data_ptr<float>();
  const int64_t* ps = size.data_ptr<int64_t>();
  at::parallel_for(0, U, item_grain(8.0 * n * A), [&](int64_t u0, int64_t u1) {
    std::vector<int64_t> order;
    for (int64_t u = u0; u < u1; ++u) {
      double* gu = po + u * A * 2;
      for_each_subset(pk + u * n * A, ps + u * n, n, A, order, [&](int64_t o, const int64_t* chosen, int64_t c) {
        const double g0 = g[(u * n + o) * 2] / c, g1 = g[(u * n + o) * 2 + 1] / c;
        for (int64_t i = 0; i < c; ++i) {
          gu[2 * chosen[i]] += g0;
          gu[2 * chosen[i] + 1] += g1;
        }
      });
    }
  });
  return out.to(ratings.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("subset_means", &subset_means_cpu);
  m.impl("subset_means_backward", &subset_means_backward_cpu);
}

}  // namespace kdekit::cpu
