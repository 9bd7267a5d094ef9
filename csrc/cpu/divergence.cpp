// KL, Jensen-Shannon and total variation over the last dim of (B, K) rows, one row per task.
//   kl  = sum p log(p / q),  jsd = (kl(p, m) + kl(q, m)) / 2 with m = (p + q) / 2,  tvd = sum |p - q| / 2
// kl/jsd: 0 log(0 / q) = 0 (also at q = 0); kl = inf where q = 0 < p; jsd is clamped at 0 (zero gradient where
// clamped). A row holding a negative or non-finite entry gives NaN and a zero gradient (the Python wrappers read
// this flag instead of scanning the inputs). tvd takes any reals; its gradient is sign(p - q) / 2 (0 at p = q).
// float64 rows are computed in float64; float32 rows compute each entry's term in float32 (vectorised, with a
// polynomial log of ~1 ulp error) and sum the terms of a row in float64. Deterministic (no threads share a row).
// Gradients follow kdekit.ops.divergence (an entry p_i = 0 contributes no gradient through its own log term),
// computed in float64:
//   kl:  d/dp = log(p / q) + 1,  d/dq = -p / q                            (0 where p = 0)
//   jsd: d/dp = (log(p / m) + 1 - p / 2m)[p > 0] / 2 - (q / 2m)[q > 0] / 2,  q symmetric.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common.h"

namespace kdekit::cpu {
namespace {

enum class Kind { kKL, kJSD, kTVD };

Kind parse_kind(const std::string& kind) {
  if (kind == "kl") return Kind::kKL;
  if (kind == "jsd") return Kind::kJSD;
  if (kind == "tvd") return Kind::kTVD;
  TORCH_CHECK(false, "kind must be 'kl', 'jsd' or 'tvd', got '", kind, "'");
}

// The float32 terms are computed by branch-free loops that GCC vectorises (floating-point ternaries are not
// if-converted under the default -ftrapping-math, hence `pick`); x86-64 builds also get an AVX2 clone, chosen at
// load time. Terms round identically in every lane width (no FMA contraction); a row's float64 sum is
// reassociated by the vector width, so results can differ between CPUs in the last bits (never between runs).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KDEKIT_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KDEKIT_VECTOR_CLONES
#endif

template <typename T>
using IntOf = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// std::bit_cast, also for C++17 builds (torch < 2.13 compiles extensions as C++17)
template <typename To, typename From>
inline To bit_cast(const From& v) {
  return __builtin_bit_cast(To, v);
}

// c ? a : b without a branch
template <typename T>
inline T pick(bool c, T a, T b) {
  const IntOf<T> m = -static_cast<IntOf<T>>(c);
  return bit_cast<T>((bit_cast<IntOf<T>>(a) & m) | (bit_cast<IntOf<T>>(b) & ~m));
}

// Natural log of a finite positive normal float: v = 2^e (1 + x) with 1 + x in [sqrt(1/2), sqrt(2)), log(1 + x) =
// x - x^2 / 2 + x^3 P(x) with P of degree 6 (a near-minimax fit for relative error; < 1.2 ulp on that range in float
// arithmetic), e log 2 added in two parts as in Cephes logf. Its value at 0, denormals, inf and NaN is unspecified
// (callers discard it).
inline float log_approx(float v) {
  const int32_t ix = bit_cast<int32_t>(v) - 0x3f3504f3;  // 0x3f3504f3 = sqrt(1/2)
  const float e = static_cast<float>(ix >> 23);
  const float x = bit_cast<float>((ix & 0x007fffff) + 0x3f3504f3) - 1.0f;
  const float z = x * x;
  float y = 8.700361848e-02f;
  y = y * x - 1.426747888e-01f;
  y = y * x + 1.491478831e-01f;
  y = y * x - 1.657758504e-01f;
  y = y * x + 1.996306181e-01f;
  y = y * x - 2.500133812e-01f;
  y = y * x + 3.333390951e-01f;
  return x + (y * x * z + e * -2.12194440e-4f - 0.5f * z) + e * 0.693359375f;
}

inline float log_of(float v) { return log_approx(v); }
inline double log_of(double v) { return std::log(v); }

// the term of each of n contiguous entries; NaN where p or q is negative or non-finite (kl/jsd)
template <Kind kind, typename T>
KDEKIT_VECTOR_CLONES void entry_terms(const T* p, const T* q, int64_t n, T* term) {
  constexpr T big = std::numeric_limits<T>::max(), nan = std::numeric_limits<T>::quiet_NaN();
  constexpr T inf = std::numeric_limits<T>::infinity();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T pi = p[i], qi = q[i];
    if constexpr (kind == Kind::kTVD) {
      term[i] = T(0.5) * std::abs(pi - qi);
    } else {
      const bool ok = (pi >= 0) & (pi <= big) & (qi >= 0) & (qi <= big);
      T t;
      if constexpr (kind == Kind::kKL) {
        const T ratio = pi / pick(qi > 0, qi, T(1));  // inf when q is tiny
        t = pick(pi != 0, pick((qi > 0) & (ratio <= big), pi * log_of(ratio), inf), T(0));
      } else {
        const T s = pi + qi, inv = T(2) / pick(s > 0, s, T(1));  // 1 / m
        const T tp = pi * log_of(pi * inv), tq = qi * log_of(qi * inv);
        t = T(0.5) * (pick(pi != 0, tp, T(0)) + pick(qi != 0, tq, T(0)));
      }
      term[i] = pick(ok, t, nan);
    }
  }
}

// the value of each row b in [b0, b1) of contiguous (B, K) rows (jsd not yet clamped): entry terms in chunks of
// ~1024 entries, then each row's sum in float64
template <Kind kind, typename T>
KDEKIT_VECTOR_CLONES void rows_value(const T* p, const T* q, int64_t K, int64_t b0, int64_t b1, double* value) {
  const int64_t chunk = std::max<int64_t>(1, 1024 / K);
  std::vector<T> term(chunk * K);
  for (int64_t c0 = b0; c0 < b1; c0 += chunk) {
    const int64_t c1 = std::min(b1, c0 + chunk);
    entry_terms<kind>(p + c0 * K, q + c0 * K, (c1 - c0) * K, term.data());
    for (int64_t b = c0; b < c1; ++b) {
      const T* t = term.data() + (b - c0) * K;
      double sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < K; ++i) sum += static_cast<double>(t[i]);
      value[b - b0] = sum;
    }
  }
}

template <typename F>
void dispatch_kind(Kind kind, F&& f) {
  switch (kind) {
    case Kind::kKL: return f(std::integral_constant<Kind, Kind::kKL>{});
    case Kind::kJSD: return f(std::integral_constant<Kind, Kind::kJSD>{});
    case Kind::kTVD: return f(std::integral_constant<Kind, Kind::kTVD>{});
  }
}

void check_pair(const at::Tensor& p, const at::Tensor& q) {
  check_float_or_double(p, "p");
  TORCH_CHECK(p.dim() == 2 && p.size(1) >= 1, "p must be (B, K) with K >= 1, got ", p.sizes());
  check_points(q, "q", p.size(0), p.size(1), p.scalar_type());
}

at::Tensor divergence_cpu(const at::Tensor& p_, const at::Tensor& q_, c10::string_view kind_) {
  check_pair(p_, q_);
  const Kind kind = parse_kind(std::string(kind_));
  auto p = p_.contiguous(), q = q_.contiguous();
  const int64_t B = p.size(0), K = p.size(1);
  auto out = at::empty({B}, p.options());
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "divergence_cpu", [&] {
    const scalar_t *pp = p.data_ptr<scalar_t>(), *pq = q.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    dispatch_kind(kind, [&](auto k) {
      at::parallel_for(0, B, item_grain(40.0 * K), [&](int64_t b0, int64_t b1) {
        std::vector<double> value(b1 - b0);
        rows_value<decltype(k)::value>(pp, pq, K, b0, b1, value.data());
        for (int64_t b = b0; b < b1; ++b) {
          const double v = value[b - b0];
          po[b] = static_cast<scalar_t>(decltype(k)::value == Kind::kJSD && v < 0 ? 0.0 : v);  // NaN stays NaN
        }
      });
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> divergence_backward_cpu(const at::Tensor& grad_, const at::Tensor& p_,
                                                           const at::Tensor& q_, c10::string_view kind_) {
  check_pair(p_, q_);
  const Kind kind = parse_kind(std::string(kind_));
  auto p = p_.contiguous(), q = q_.contiguous();
  const int64_t B = p.size(0), K = p.size(1);
  TORCH_CHECK(grad_.dim() == 1 && grad_.size(0) == B, "grad must have shape (", B, ",), got ", grad_.sizes());
  auto grad = grad_.to(at::kDouble).contiguous();
  auto gp = at::empty_like(p), gq = at::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "divergence_backward_cpu", [&] {
    const scalar_t *pp = p.data_ptr<scalar_t>(), *pq = q.data_ptr<scalar_t>();
    const double* pg = grad.data_ptr<double>();
    scalar_t *pgp = gp.data_ptr<scalar_t>(), *pgq = gq.data_ptr<scalar_t>();
    dispatch_kind(kind, [&](auto k) {
      constexpr Kind kd = decltype(k)::value;
      at::parallel_for(0, B, item_grain(80.0 * K), [&](int64_t b0, int64_t b1) {
        std::vector<double> value(b1 - b0);
        if (kd != Kind::kTVD) rows_value<kd>(pp, pq, K, b0, b1, value.data());
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t *pb = pp + b * K, *qb = pq + b * K;
          const double v = kd == Kind::kTVD ? 0.0 : value[b - b0];
          // zero gradient for a flagged row (NaN) and where jsd is clamped (its unclamped value is < 0)
          const bool live = !std::isnan(v) && !(kd == Kind::kJSD && v < 0);
          const double g = live ? pg[b] : 0.0;
          for (int64_t i = 0; i < K; ++i) {
            if (g == 0) {  // also where the derivative itself is NaN or infinite
              pgp[b * K + i] = pgq[b * K + i] = 0;
              continue;
            }
            const double pi = static_cast<double>(pb[i]), qi = static_cast<double>(qb[i]);
            double dp, dq;
            if constexpr (kd == Kind::kTVD) {
              dp = pi > qi ? 0.5 : (pi < qi ? -0.5 : 0.0);
              dq = -dp;
            } else if constexpr (kd == Kind::kKL) {
              dp = pi > 0 ? std::log(pi / qi) + 1.0 : 0.0;
              dq = pi > 0 ? -pi / qi : 0.0;
            } else {
              const double m = 0.5 * (pi + qi);
              const double own_p = pi > 0 ? std::log(pi / m) + 1.0 - pi / (2 * m) : 0.0;
              const double own_q = qi > 0 ? std::log(qi / m) + 1.0 - qi / (2 * m) : 0.0;
              const double cross_p = qi > 0 ? qi / (2 * m) : 0.0;  // d/dp of q log(q / m)
              const double cross_q = pi > 0 ? pi / (2 * m) : 0.0;
              dp = 0.5 * (own_p - cross_p);
              dq = 0.5 * (own_q - cross_q);
            }
            pgp[b * K + i] = static_cast<scalar_t>(g * dp);
            pgq[b * K + i] = static_cast<scalar_t>(g * dq);
          }
        }
      });
    });
  });
  return {gp, gq};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("divergence", &divergence_cpu);
  m.impl("divergence_backward", &divergence_backward_cpu);
}

}  // namespace kdekit::cpu
