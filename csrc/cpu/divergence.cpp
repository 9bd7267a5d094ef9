// KL and Jensen-Shannon divergences over the last dim of (B, K), one item per task, float64 accumulation.
// 0 log(0 / q) = 0 (also at q = 0); kl = inf where q = 0 < p; jsd is clamped at 0 (zero gradient where clamped).
// Gradients follow kdekit.ops.divergence (an entry p_i = 0 contributes no gradient through its own log term):
//   kl:  d/dp = log(p / q) + 1,  d/dq = -p / q                            (0 where p = 0)
//   jsd: d/dp = (log(p / m) + 1 - p / 2m)[p > 0] / 2 - (q / 2m)[q > 0] / 2,  q symmetric.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "common.h"

namespace kdekit {
namespace {

enum class Kind { kKL, kJSD };

Kind parse_kind(const std::string& kind) {
  if (kind == "kl") return Kind::kKL;
  if (kind == "jsd") return Kind::kJSD;
  TORCH_CHECK(false, "kind must be 'kl' or 'jsd', got '", kind, "'");
}

// p != 0 (not p > 0): an unchecked negative entry gives NaN, as in the torch path
inline double rel_entr(double p, double q) { return p != 0 ? p * std::log(p / q) : 0.0; }

void check_pair(const at::Tensor& p, const at::Tensor& q) {
  check_float_or_double(p, "p");
  TORCH_CHECK(p.dim() == 2, "p must be (B, K), got ", p.sizes());
  check_points(q, "q", p.size(0), p.size(1), p.scalar_type());
}

template <typename T>
double divergence_item(const T* p, const T* q, int64_t K, Kind kind) {
  double sum = 0;
  for (int64_t i = 0; i < K; ++i) {
    const double pi = static_cast<double>(p[i]), qi = static_cast<double>(q[i]);
    if (kind == Kind::kKL) {
      sum += rel_entr(pi, qi);
    } else {
      const double m = 0.5 * (pi + qi);
      sum += rel_entr(pi, m) + rel_entr(qi, m);
    }
  }
  return kind == Kind::kKL ? sum : 0.5 * sum;
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
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(K, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        double v = divergence_item(pp + b * K, pq + b * K, K, kind);
        if (kind == Kind::kJSD) v = v < 0 ? 0.0 : v;
        po[b] = static_cast<scalar_t>(v);
      }
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
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(K, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t *pb = pp + b * K, *qb = pq + b * K;
        double g = pg[b];
        if (kind == Kind::kJSD && divergence_item(pb, qb, K, kind) < 0) g = 0.0;  // clamped at 0
        for (int64_t i = 0; i < K; ++i) {
          const double pi = static_cast<double>(pb[i]), qi = static_cast<double>(qb[i]);
          double dp, dq;
          if (kind == Kind::kKL) {
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
  return {gp, gq};
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) {
  m.impl("divergence", &divergence_cpu);
  m.impl("divergence_backward", &divergence_backward_cpu);
}

}  // namespace kdekit
