// Means of random annotator subsets (the seed's pseudo-observations, kdekit.pseudo_observations): for item u and
// draw o, the mean of ratings[u, a, :] over the size[u, o] valid annotators a (both ratings finite) with the smallest
// (keys[u, o, a], a) — the annotators a stable argsort of the keys lists first. A selection instead of a sort, over
// (key bits, index) packed in one 64-bit integer (keys >= 0: their float32 bits order as integers); O(A) a draw.
//   forward: means (U, n, 2) in the ratings' dtype, accumulated in float64, and pivots (U, n) int64: the packed
//            (key, index) of each draw's last chosen annotator (a draw chose a iff packed(a) <= pivot);
//   backward: d ratings[u, a, :] = sum over draws o that chose a of grad[u, o, :] / size[u, o] (from the pivots: one
//             comparison per annotator, no second selection).
// One item per task (a thread owns its item's rows of every output: deterministic for any number of threads).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"

namespace kdekit::cpu {
namespace {

void check_args(const at::Tensor& ratings, const at::Tensor& keys, const at::Tensor& per_draw, const char* name) {
  TORCH_CHECK(ratings.device().is_cpu() && keys.device().is_cpu() && per_draw.device().is_cpu(),
              "ratings, keys and ", name, " must be CPU tensors");
  TORCH_CHECK(ratings.dim() == 3 && ratings.size(2) == 2, "ratings must be (U, A, 2), got ", ratings.sizes());
  const int64_t U = ratings.size(0), A = ratings.size(1);
  TORCH_CHECK(A < (int64_t(1) << 31), "ratings must have fewer than 2^31 annotators, got ", A);
  TORCH_CHECK(keys.dim() == 3 && keys.size(0) == U && keys.size(2) == A, "keys must be (", U, ", n, ", A, "), got ",
              keys.sizes());
  TORCH_CHECK(keys.scalar_type() == at::kFloat, "keys must be float32, got ", keys.scalar_type());
  TORCH_CHECK(per_draw.dim() == 2 && per_draw.size(0) == U && per_draw.size(1) == keys.size(1), name, " must be (",
              U, ", ", keys.size(1), "), got ", per_draw.sizes());
  TORCH_CHECK(per_draw.scalar_type() == at::kLong, name, " must be int64, got ", per_draw.scalar_type());
}

// (key bits << 32) | index: ordered as (key, index) for keys in [0, 1) (or any non-negative float)
inline int64_t pack(float key, int64_t index) {
  uint32_t bits;
  std::memcpy(&bits, &key, sizeof bits);
  return static_cast<int64_t>((static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(index));
}

template <typename scalar_t>
void valid_annotators(const scalar_t* r, int64_t A, std::vector<int64_t>& valid) {
  valid.clear();
  for (int64_t a = 0; a < A; ++a)
    if (std::isfinite(static_cast<double>(r[2 * a])) && std::isfinite(static_cast<double>(r[2 * a + 1])))
      valid.push_back(a);
}

// The pivot of one draw: the count-th smallest packed (key, index) among the valid annotators, by bucket selection
// (keys uniform in [0, 1), as torch.rand draws them, spread evenly over M buckets of the key's value: one pass counts
// them, one gathers the bucket that holds the count-th value, nth_element orders that bucket, ~1 value; other keys
// are still selected exactly, only slower). packed[i] holds the packed value of valid[i] afterwards.
int64_t draw_pivot(const float* k, const std::vector<int64_t>& valid, int64_t count, std::vector<int64_t>& packed,
                   std::vector<int64_t>& bucket_of, std::vector<int64_t>& counts) {
  const int64_t M = static_cast<int64_t>(valid.size());
  TORCH_CHECK(count >= 1 && count <= M, "size must be in [1, ", M, "] (the item's valid annotators), got ", count);
  packed.resize(M);
  bucket_of.resize(M);
  counts.assign(M, 0);
  bool non_negative = true;
  for (int64_t i = 0; i < M; ++i) {
    const float key = k[valid[i]];
    non_negative &= key >= 0.0f;
    packed[i] = pack(key, valid[i]);
    const int64_t bucket = static_cast<int64_t>(std::min(static_cast<double>(key) * M, M - 1.0));
    bucket_of[i] = bucket < 0 ? 0 : bucket;  // (NaN and negative keys are refused below)
    ++counts[bucket_of[i]];
  }
  TORCH_CHECK(non_negative, "keys must be >= 0 (and not NaN)");
  int64_t bucket = 0, below = 0;
  while (below + counts[bucket] < count) below += counts[bucket++];
  int64_t in_bucket = 0;  // the bucket's values gathered at the front of bucket_of (read ahead of the writes)
  for (int64_t i = 0; i < M; ++i) {
    const bool mine = bucket_of[i] == bucket;
    bucket_of[in_bucket] = packed[i];
    in_bucket += mine;
  }
  std::nth_element(bucket_of.begin(), bucket_of.begin() + (count - below - 1), bucket_of.begin() + in_bucket);
  return bucket_of[count - below - 1];
}

std::tuple<at::Tensor, at::Tensor> subset_means_cpu(const at::Tensor& ratings_, const at::Tensor& keys_,
                                                    const at::Tensor& size_) {
  check_args(ratings_, keys_, size_, "size");
  auto ratings = ratings_.contiguous(), keys = keys_.contiguous(), size = size_.contiguous();
  const int64_t U = ratings.size(0), A = ratings.size(1), n = keys.size(1);
  auto means = at::empty({U, n, 2}, ratings.options());
  auto pivots = at::empty({U, n}, size.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ratings.scalar_type(), "subset_means", [&] {
    const scalar_t* r = ratings.data_ptr<scalar_t>();
    scalar_t* out = means.data_ptr<scalar_t>();
    const float* pk = keys.data_ptr<float>();
    const int64_t* ps = size.data_ptr<int64_t>();
    int64_t* pp = pivots.data_ptr<int64_t>();
    at::parallel_for(0, U, item_grain(8.0 * n * A), [&](int64_t u0, int64_t u1) {
      std::vector<int64_t> valid, packed, bucket_of, counts;
      for (int64_t u = u0; u < u1; ++u) {
        const scalar_t* ru = r + u * A * 2;
        valid_annotators(ru, A, valid);
        for (int64_t o = 0; o < n; ++o) {
          const int64_t i = u * n + o;
          if (valid.empty()) {  // no annotator: NaN, as the torch path
            out[2 * i] = out[2 * i + 1] = static_cast<scalar_t>(NAN);
            pp[i] = -1;
            continue;
          }
          const float* k = pk + i * A;
          const int64_t pivot = draw_pivot(k, valid, ps[i], packed, bucket_of, counts);
          double s0 = 0, s1 = 0;
          for (size_t j = 0; j < valid.size(); ++j)
            if (packed[j] <= pivot) {
              s0 += static_cast<double>(ru[2 * valid[j]]);
              s1 += static_cast<double>(ru[2 * valid[j] + 1]);
            }
          out[2 * i] = static_cast<scalar_t>(s0 / ps[i]);
          out[2 * i + 1] = static_cast<scalar_t>(s1 / ps[i]);
          pp[i] = pivot;
        }
      }
    });
  });
  return {means, pivots};
}

at::Tensor subset_means_backward_cpu(const at::Tensor& grad_, const at::Tensor& ratings_, const at::Tensor& keys_,
                                     const at::Tensor& size_, const at::Tensor& pivots_) {
  check_args(ratings_, keys_, size_, "size");
  check_args(ratings_, keys_, pivots_, "pivots");
  const int64_t U = ratings_.size(0), A = ratings_.size(1), n = keys_.size(1);
  TORCH_CHECK(grad_.dim() == 3 && grad_.size(0) == U && grad_.size(1) == n && grad_.size(2) == 2,
              "grad must be (", U, ", ", n, ", 2), got ", grad_.sizes());
  auto grad = grad_.to(at::kDouble).contiguous(), ratings = ratings_.contiguous(), keys = keys_.contiguous();
  auto size = size_.contiguous(), pivots = pivots_.contiguous();
  auto out = at::zeros({U, A, 2}, ratings.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ratings.scalar_type(), "subset_means_backward", [&] {
    const scalar_t* r = ratings.data_ptr<scalar_t>();
    const double* g = grad.data_ptr<double>();
    double* po = out.data_ptr<double>();
    const float* pk = keys.data_ptr<float>();
    const int64_t *ps = size.data_ptr<int64_t>(), *pp = pivots.data_ptr<int64_t>();
    at::parallel_for(0, U, item_grain(4.0 * n * A), [&](int64_t u0, int64_t u1) {
      std::vector<int64_t> valid;
      for (int64_t u = u0; u < u1; ++u) {
        valid_annotators(r + u * A * 2, A, valid);
        double* gu = po + u * A * 2;
        for (int64_t o = 0; o < n; ++o) {
          const int64_t i = u * n + o;
          if (valid.empty()) continue;
          const float* k = pk + i * A;
          const double g0 = g[2 * i] / ps[i], g1 = g[2 * i + 1] / ps[i];
          for (int64_t a : valid)
            if (pack(k[a], a) <= pp[i]) {
              gu[2 * a] += g0;
              gu[2 * a + 1] += g1;
            }
        }
      }
    });
  });
  return out.to(ratings.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("subset_means", &subset_means_cpu);
  m.impl("subset_means_backward", &subset_means_backward_cpu);
}

}  // namespace kdekit::cpu
