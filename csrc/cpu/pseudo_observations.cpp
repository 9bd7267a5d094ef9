// The seed's pseudo-observations (kdekit.pseudo_observations) on CPU: for item u and draw o, the mean of
// ratings[u, a, :] over the size[u, o] valid annotators a (both ratings finite) with the smallest (keys[u, o, a], a) —
// the annotators a stable argsort of the keys lists first — and, given noise u[u, o, :] ~ U[0, 1), that mean plus
// (2u - 1) h clamped to [-1, 1], h = 0.5 sd + 1e-12 per dimension (sd: the unbiased std of the item's valid ratings,
// 0 for one annotator). A selection instead of a sort, over (key bits, index) packed in one 64-bit integer (keys >= 0:
// their float32 bits order as integers); O(A) a draw.
//   forward: observations (U, n, 2) in the ratings' dtype, computed in float64, and pivots (U, n) int64: the packed
//            (key, index) of each draw's last chosen annotator (a draw chose a iff packed(a) <= pivot). Keys uniform
//            in [0, 1) (torch.rand) put the size-th smallest near p = size / M (M valid annotators), within a few
//            sd = sqrt(p (1 - p) / M): with many annotators (M >= kBandMin) one vectorised pass sums the ratings of
//            the keys below a band around p (all chosen) and flags the keys in it; nth_element over the band's packed
//            values finds the pivot. With fewer annotators, or where the pivot is outside the band (~1e-4 of uniform
//            draws; any other key distribution), a bucket selection over every key; with at most 32, the pivot by
//            ranks (M^2 vectorised comparisons): the same subset every way.
//   backward: d ratings[u, a, :] = sum over draws o that chose a of g[u, o, :] / size[u, o] (from the pivots: one
//             vectorised comparison per annotator and draw, no second selection), g = the incoming gradient where the
//             clamp passed it; with noise, plus the spread's term dL/dh (r[a] - mean) / ((M - 1) sd) per dimension.
// One item per task (a thread owns its item's rows of every output: deterministic for any number of threads); the
// loops are compiled for the widest vector ISA of the CPU (simd.h), the float64 sums' lane order fixed per ISA.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"
#include "simd.h"

namespace kdekit::cpu {
namespace {

void check_noise(const c10::optional<at::Tensor>& noise, const at::Tensor& keys) {
  if (!noise) return;
  TORCH_CHECK(noise->device().is_cpu(), "noise must be a CPU tensor");
  TORCH_CHECK(noise->dim() == 3 && noise->size(0) == keys.size(0) && noise->size(1) == keys.size(1) &&
                  noise->size(2) == 2,
              "noise must be (", keys.size(0), ", ", keys.size(1), ", 2), got ", noise->sizes());
  TORCH_CHECK(noise->scalar_type() == at::kFloat, "noise must be float32, got ", noise->scalar_type());
}

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

constexpr double kNoiseEps = 1e-12;  // kdekit.labels.NOISE_EPS

// (key bits << 32) | index: ordered as (key, index) for keys >= 0 (-0 counts as +0, as in a float comparison)
inline int64_t pack(float key, int64_t index) {
  key += 0.0f;  // -0 -> +0
  uint32_t bits;
  std::memcpy(&bits, &key, sizeof bits);
  return static_cast<int64_t>((static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(index));
}

// One item's valid annotators (both ratings finite): their indices, and their ratings as float64 columns.
struct Annotators {
  std::vector<int64_t> index;
  std::vector<double> r0, r1;

  template <typename scalar_t>
  void gather(const scalar_t* r, int64_t A) {
    index.clear();
    r0.clear();
    r1.clear();
    for (int64_t a = 0; a < A; ++a) {
      const double v0 = static_cast<double>(r[2 * a]), v1 = static_cast<double>(r[2 * a + 1]);
      if (std::isfinite(v0) && std::isfinite(v1)) {
        index.push_back(a);
        r0.push_back(v0);
        r1.push_back(v1);
      }
    }
  }
  int64_t size() const { return static_cast<int64_t>(index.size()); }

  // per dimension: the mean, and 1 / ((M - 1) sd) (0 where sd = 0) into inv; returns the half-widths h (noise scale)
  void spread(double mean[2], double inv[2], double h[2]) const {
    const int64_t M = size();
    const std::vector<double>* r[2] = {&r0, &r1};
    for (int d = 0; d < 2; ++d) {
      double sum = 0.0, ss = 0.0;
      for (int64_t j = 0; j < M; ++j) sum += (*r[d])[j];
      mean[d] = sum / static_cast<double>(std::max<int64_t>(M, 1));
      for (int64_t j = 0; j < M; ++j) ss += ((*r[d])[j] - mean[d]) * ((*r[d])[j] - mean[d]);
      const double dof = static_cast<double>(std::max<int64_t>(M - 1, 1));
      const double sd = ss > 0 ? std::sqrt(ss / dof) : 0.0;
      inv[d] = sd > 0 ? 1.0 / (dof * sd) : 0.0;
      h[d] = 0.5 * sd + kNoiseEps;
    }
  }

  // the keys of the valid annotators, contiguous: `k` itself when every annotator is valid, else gathered into `buf`
  const float* keys(const float* k, int64_t A, std::vector<float>& buf) const {
    if (size() == A) return k;
    buf.resize(index.size());
    for (size_t j = 0; j < index.size(); ++j) buf[j] = k[index[j]];
    return buf.data();
  }
};

// The pivot of one draw by bucket selection over the M valid annotators' keys `k` (contiguous; exact for any key
// distribution): keys spread over M buckets of their value; one pass counts them, one gathers the bucket that holds
// the count-th value, nth_element orders that bucket. packed[i] holds the packed value of valid annotator i after.
int64_t bucket_pivot(const float* k, const Annotators& valid, int64_t count, std::vector<int64_t>& packed,
                     std::vector<int64_t>& bucket_of, std::vector<int64_t>& counts) {
  const int64_t M = valid.size();
  packed.resize(M);
  bucket_of.resize(M);
  counts.assign(M, 0);
  bool non_negative = true;
  for (int64_t i = 0; i < M; ++i) {
    non_negative &= k[i] >= 0.0f;
    packed[i] = pack(k[i], valid.index[i]);
    // (NaN and negative keys land in bucket 0 and are refused below)
    bucket_of[i] = std::max<int64_t>(0, static_cast<int64_t>(std::min(static_cast<double>(k[i]) * M, M - 1.0)));
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

constexpr int64_t kBandMin = 384;  // fewer valid annotators: the bucket selection is faster (2-core AVX-512)
constexpr int64_t kRankMax = 32;   // up to this many valid annotators: the selection by ranks (M^2 compares) is faster

// One draw's selection (per-thread scratch): the sums of the chosen annotators' ratings into s[0], s[1]; returns the
// pivot. `k`: the M valid annotators' keys, contiguous.
struct Draw {
  std::vector<int64_t> candidates, packed, bucket_of, counts;
  std::vector<uint8_t> band;  // 1 where the key is in the band, padded to whole 8-byte words

  KDEKIT_INLINE int64_t select(const float* k, const Annotators& valid, int64_t count, double s[2]) {
    const int64_t M = valid.size();
    TORCH_CHECK(count >= 1 && count <= M, "size must be in [1, ", M, "] (the item's valid annotators), got ", count);
    if (M <= kRankMax) return ranked(k, valid, count, s);
    if (M < kBandMin) return exact(k, valid, count, s);
    const double p = static_cast<double>(count) / M;
    const double half = 4.0 * std::sqrt((p * (1.0 - p) + 1.0 / M) / M) + 1.0 / M;
    const float lo = static_cast<float>(p - half), hi = static_cast<float>(p + half);
    const double *r0 = valid.r0.data(), *r1 = valid.r1.data();
    band.resize((M + 7) / 8 * 8);
    std::fill(band.begin() + M, band.end(), 0);  // the padding; the loop writes every flag below M
    uint8_t* in = band.data();
    int64_t below = 0, in_band = 0, bad = 0;
    double b0 = 0.0, b1 = 0.0;
#pragma omp simd reduction(+ : below, in_band, b0, b1) reduction(| : bad)
    for (int64_t i = 0; i < M; ++i) {  // every key below the band is chosen
      const float key = k[i];
      const bool low = key < lo;
      in[i] = !low & (key < hi);
      below += low;
      in_band += in[i];
      bad |= !(key >= 0.0f);
      b0 += low ? r0[i] : 0.0;
      b1 += low ? r1[i] : 0.0;
    }
    TORCH_CHECK(!bad, "keys must be >= 0 (and not NaN)");
    if (below < count && count <= below + in_band) {
      candidates.resize(in_band);
      int64_t m = 0;
      for (int64_t w = 0; w < M; w += 8) {  // the band's indices from its flags, a word of 8 at a time
        uint64_t word;
        std::memcpy(&word, in + w, sizeof word);
        for (; word != 0; word &= word - 1) candidates[m++] = w + __builtin_ctzll(word) / 8;
      }
      packed.resize(in_band);
      for (int64_t j = 0; j < in_band; ++j) packed[j] = pack(k[candidates[j]], valid.index[candidates[j]]);
      std::nth_element(packed.begin(), packed.begin() + (count - below - 1), packed.end());
      const int64_t pivot = packed[count - below - 1];
      for (int64_t j = 0; j < in_band; ++j) {
        const int64_t i = candidates[j];
        const double chosen = pack(k[i], valid.index[i]) <= pivot;
        b0 += r0[i] * chosen;
        b1 += r1[i] * chosen;
      }
      s[0] = b0;
      s[1] = b1;
      return pivot;
    }
    return exact(k, valid, count, s);  // the pivot is outside the band
  }

  // the selection by bucket_pivot over every key
  int64_t exact(const float* k, const Annotators& valid, int64_t count, double s[2]) {
    const int64_t pivot = bucket_pivot(k, valid, count, packed, bucket_of, counts);
    packed_sums(packed.data(), valid, pivot, s);
    return pivot;
  }

  // few annotators (M <= kRankMax): the pivot is the packed value with count - 1 smaller ones (they are distinct)
  KDEKIT_INLINE int64_t ranked(const float* k, const Annotators& valid, int64_t count, double s[2]) {
    const int64_t M = valid.size();
    int64_t p[kRankMax];
    bool bad = false;
    for (int64_t i = 0; i < M; ++i) {
      bad |= !(k[i] >= 0.0f);
      p[i] = pack(k[i], valid.index[i]);
    }
    TORCH_CHECK(!bad, "keys must be >= 0 (and not NaN)");
    int64_t pivot = 0;
    for (int64_t i = 0; i < M; ++i) {
      int64_t rank = 0;
      for (int64_t j = 0; j < M; ++j) rank += p[j] < p[i];
      pivot = rank == count - 1 ? p[i] : pivot;
    }
    packed_sums(p, valid, pivot, s);
    return pivot;
  }

  // s = the rating sums of the annotators with packed value <= pivot; branch-free: the mask as a 0/1 factor (the
  // ratings are finite)
  static KDEKIT_INLINE void packed_sums(const int64_t* packed, const Annotators& valid, int64_t pivot, double s[2]) {
    double b0 = 0.0, b1 = 0.0;
    for (int64_t i = 0; i < valid.size(); ++i) {
      const double chosen = packed[i] <= pivot;
      b0 += valid.r0[i] * chosen;
      b1 += valid.r1[i] * chosen;
    }
    s[0] = b0;
    s[1] = b1;
  }
};

// Threads: one chunk of items each from kSplitKeys keys in the call (a key costs a few ns), else one thread.
constexpr int64_t kSplitKeys = int64_t(1) << 14;
int64_t grain(int64_t U, int64_t n, int64_t A) { return U * n * A >= kSplitKeys ? grain_per_thread(U) : U; }

// The draw's noise factor 2u - 1 with u rounded to the ratings' dtype first (as the torch path's u.to(dtype)).
template <typename scalar_t>
KDEKIT_INLINE double noise_factor(float u) {
  return 2.0 * static_cast<double>(static_cast<scalar_t>(u)) - 1.0;
}

std::tuple<at::Tensor, at::Tensor> pseudo_observations_cpu(const at::Tensor& ratings_, const at::Tensor& keys_,
                                                            const at::Tensor& size_,
                                                            const c10::optional<at::Tensor>& noise_) {
  check_args(ratings_, keys_, size_, "size");
  check_noise(noise_, keys_);
  auto ratings = ratings_.contiguous(), keys = keys_.contiguous(), size = size_.contiguous();
  auto noise = noise_ ? noise_->contiguous() : at::Tensor();
  const int64_t U = ratings.size(0), A = ratings.size(1), n = keys.size(1);
  auto obs = at::empty({U, n, 2}, ratings.options());
  auto pivots = at::empty({U, n}, size.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ratings.scalar_type(), "pseudo_observations", [&] {
    const scalar_t* r = ratings.data_ptr<scalar_t>();
    scalar_t* out = obs.data_ptr<scalar_t>();
    const float* pk = keys.data_ptr<float>();
    const float* pu = noise.defined() ? noise.data_ptr<float>() : nullptr;
    const int64_t* ps = size.data_ptr<int64_t>();
    int64_t* pp = pivots.data_ptr<int64_t>();
    at::parallel_for(0, U, grain(U, n, A), [&](int64_t u0, int64_t u1) {
      Annotators valid;
      Draw draw;
      std::vector<float> buf;
      run_widest_simd([&](auto) KDEKIT_INLINE_LAMBDA {
        for (int64_t u = u0; u < u1; ++u) {
          valid.gather(r + u * A * 2, A);
          double mean[2], inv[2], h[2] = {0.0, 0.0};
          if (pu) valid.spread(mean, inv, h);
          for (int64_t o = 0; o < n; ++o) {
            const int64_t i = u * n + o;
            if (valid.size() == 0) {  // no annotator: NaN, as the torch path
              out[2 * i] = out[2 * i + 1] = static_cast<scalar_t>(NAN);
              pp[i] = -1;
              continue;
            }
            double s[2];
            pp[i] = draw.select(valid.keys(pk + i * A, A, buf), valid, ps[i], s);
            for (int d = 0; d < 2; ++d) {
              const double m = s[d] / static_cast<double>(ps[i]);
              out[2 * i + d] = static_cast<scalar_t>(
                  pu ? std::clamp(m + noise_factor<scalar_t>(pu[2 * i + d]) * h[d], -1.0, 1.0) : m);
            }
          }
        }
      });
    });
  });
  return {obs, pivots};
}

// Whether the draw with `pivot` chose valid annotator j (packed (key, index) <= pivot), from its key and index.
struct Chosen {
  float key;
  int64_t index;
  explicit Chosen(int64_t pivot) : index(pivot & 0xffffffff) {
    const uint32_t bits = static_cast<uint32_t>(static_cast<uint64_t>(pivot) >> 32);
    std::memcpy(&key, &bits, sizeof bits);
  }
  KDEKIT_INLINE bool operator()(float k, int64_t i) const { return (k < key) | ((k == key) & (i <= index)); }
};

// s = the sums of the ratings of the annotators the draw with `pivot` chose (keys `k` of the valid annotators).
KDEKIT_INLINE void chosen_sums(const float* k, const Annotators& valid, int64_t pivot, double s[2]) {
  const Chosen chosen(pivot);
  const int64_t M = valid.size();
  const int64_t* index = valid.index.data();
  const double *r0 = valid.r0.data(), *r1 = valid.r1.data();
  double b0 = 0.0, b1 = 0.0;
#pragma omp simd reduction(+ : b0, b1)
  for (int64_t j = 0; j < M; ++j) {
    const bool c = chosen(k[j], index[j]);
    b0 += c ? r0[j] : 0.0;
    b1 += c ? r1[j] : 0.0;
  }
  s[0] = b0;
  s[1] = b1;
}

// d[j] += g where the draw with `pivot` chose valid annotator j (keys `k` of the valid annotators, contiguous); a
// select, not a product: a non-finite g reaches only the annotators the draw chose.
KDEKIT_INLINE void add_to_chosen(const float* k, const Annotators& valid, int64_t pivot, double g0, double g1,
                                 double* d0, double* d1) {
  const Chosen chosen(pivot);
  const int64_t M = valid.size();
  const int64_t* index = valid.index.data();
#pragma omp simd
  for (int64_t j = 0; j < M; ++j) {
    const bool c = chosen(k[j], index[j]);
    d0[j] += c ? g0 : 0.0;
    d1[j] += c ? g1 : 0.0;
  }
}

at::Tensor pseudo_observations_backward_cpu(const at::Tensor& grad_, const at::Tensor& ratings_,
                                            const at::Tensor& keys_, const at::Tensor& size_,
                                            const c10::optional<at::Tensor>& noise_, const at::Tensor& pivots_) {
  check_args(ratings_, keys_, size_, "size");
  check_args(ratings_, keys_, pivots_, "pivots");
  check_noise(noise_, keys_);
  const int64_t U = ratings_.size(0), A = ratings_.size(1), n = keys_.size(1);
  TORCH_CHECK(grad_.dim() == 3 && grad_.size(0) == U && grad_.size(1) == n && grad_.size(2) == 2,
              "grad must be (", U, ", ", n, ", 2), got ", grad_.sizes());
  auto grad = grad_.to(at::kDouble).contiguous(), ratings = ratings_.contiguous(), keys = keys_.contiguous();
  auto size = size_.contiguous(), pivots = pivots_.contiguous();
  auto noise = noise_ ? noise_->contiguous() : at::Tensor();
  auto out = at::empty({U, A, 2}, ratings.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ratings.scalar_type(), "pseudo_observations_backward",
                                  [&] {
    const scalar_t* r = ratings.data_ptr<scalar_t>();
    const double* g = grad.data_ptr<double>();
    double* po = out.data_ptr<double>();
    const float* pk = keys.data_ptr<float>();
    const float* pu = noise.defined() ? noise.data_ptr<float>() : nullptr;
    const int64_t *ps = size.data_ptr<int64_t>(), *pp = pivots.data_ptr<int64_t>();
    at::parallel_for(0, U, grain(U, n, A), [&](int64_t u0, int64_t u1) {
      Annotators valid;
      std::vector<double> d[2];
      std::vector<float> buf;
      run_widest_simd([&](auto) KDEKIT_INLINE_LAMBDA {
        for (int64_t u = u0; u < u1; ++u) {
          valid.gather(r + u * A * 2, A);
          const int64_t M = valid.size();
          d[0].assign(M, 0.0);
          d[1].assign(M, 0.0);
          double mean[2], inv[2], h[2], dh[2] = {0.0, 0.0};
          if (pu && M > 0) valid.spread(mean, inv, h);
          for (int64_t o = 0; o < n && M > 0; ++o) {
            const int64_t i = u * n + o;
            const float* k = valid.keys(pk + i * A, A, buf);
            double gi[2] = {g[2 * i], g[2 * i + 1]};
            if (pu) {  // the clamp passes the gradient where mean + (2u - 1) h is in [-1, 1]; h gets (2u - 1) of it
              double s[2];
              chosen_sums(k, valid, pp[i], s);
              for (int e = 0; e < 2; ++e) {
                const double f = noise_factor<scalar_t>(pu[2 * i + e]);
                const double pre = s[e] / static_cast<double>(ps[i]) + f * h[e];
                gi[e] = pre >= -1.0 && pre <= 1.0 ? gi[e] : 0.0;
                dh[e] += gi[e] * f;
              }
            }
            add_to_chosen(k, valid, pp[i], gi[0] / ps[i], gi[1] / ps[i], d[0].data(), d[1].data());
          }
          if (pu && M > 0)  // h = 0.5 sd + eps, sd^2 = sum (r - mean)^2 / (M - 1): d sd / d r = (r - mean) inv
            for (int e = 0; e < 2; ++e) {
              if (inv[e] == 0.0) continue;  // sd = 0: no gradient through the spread
              const std::vector<double>& re = e == 0 ? valid.r0 : valid.r1;
              for (int64_t j = 0; j < M; ++j) d[e][j] += 0.5 * dh[e] * inv[e] * (re[j] - mean[e]);
            }
          double* gu = po + u * A * 2;
          std::fill(gu, gu + 2 * A, 0.0);
          for (int64_t j = 0; j < M; ++j) {
            gu[2 * valid.index[j]] = d[0][j];
            gu[2 * valid.index[j] + 1] = d[1][j];
          }
        }
      });
    });
  });
  return out.to(ratings.scalar_type());
}

// The op's autograd in C++ (the training loss's hot path: no Python per call): the gradient of the observations to
// the ratings from the pivots the forward returns (no second selection).
struct PseudoObservations : public torch::autograd::Function<PseudoObservations> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& ratings,
                                                const at::Tensor& keys, const at::Tensor& size,
                                                const c10::optional<at::Tensor>& noise) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdekit::pseudo_observations", "")
                         .typed<decltype(pseudo_observations_cpu)>();
    at::AutoDispatchBelowADInplaceOrView below;
    auto [obs, pivots] = op.call(ratings, keys, size, noise);
    ctx->save_for_backward({ratings, keys, size, noise.value_or(at::Tensor()), pivots});
    ctx->mark_non_differentiable({pivots});
    ctx->set_materialize_grads(false);
    return {obs, pivots};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("kdekit::pseudo_observations_backward", "")
                         .typed<decltype(pseudo_observations_backward_cpu)>();
    const auto saved = ctx->get_saved_variables();
    const c10::optional<at::Tensor> noise = saved[3].defined() ? c10::optional<at::Tensor>(saved[3]) : c10::nullopt;
    return {op.call(grads[0], saved[0], saved[1], saved[2], noise, saved[4]), at::Tensor(), at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> pseudo_observations_autograd(const at::Tensor& ratings, const at::Tensor& keys,
                                                                const at::Tensor& size,
                                                                const c10::optional<at::Tensor>& noise) {
  auto out = PseudoObservations::apply(ratings, keys, size, noise);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("pseudo_observations", &pseudo_observations_cpu);
  m.impl("pseudo_observations_backward", &pseudo_observations_backward_cpu);
}

TORCH_LIBRARY_IMPL(kdekit, Autograd, m) { m.impl("pseudo_observations", &pseudo_observations_autograd); }

}  // namespace kdekit::cpu
