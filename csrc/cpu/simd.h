// Runs a CPU kernel compiled for the widest vector ISA of the CPU (run_widest_simd), the always-inline markers its
// kernels need, their vector types (GCC vector extensions) and a vectorised exp.
#pragma once

#include <cstdint>
#include <type_traits>

#define KDEKIT_INLINE inline __attribute__((always_inline))
#define KDEKIT_INLINE_LAMBDA __attribute__((always_inline))
#pragma GCC diagnostic ignored "-Wpsabi"  // vector arguments of always-inline helpers never cross an ABI boundary

namespace kdekit::cpu {

// Runs f(std::integral_constant<int, Bytes>) compiled for the widest vector ISA of this CPU: x86-64-v4 (AVX-512,
// 64 bytes), x86-64-v3 (AVX2 + FMA, 32 bytes), else the baseline (16 bytes). f must be always-inline so that its body
// is compiled for the chosen target.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
template <typename F>
__attribute__((target("arch=x86-64-v4"))) void run_v4(const F& f) { f(std::integral_constant<int, 64>{}); }
template <typename F>
__attribute__((target("arch=x86-64-v3"))) void run_v3(const F& f) { f(std::integral_constant<int, 32>{}); }
template <typename F>
void run_widest_simd(const F& f) {
  static const int level = (__builtin_cpu_init(), __builtin_cpu_supports("x86-64-v4") ? 4
                                                  : __builtin_cpu_supports("x86-64-v3") ? 3 : 0);
  if (level == 4) return run_v4(f);
  if (level == 3) return run_v3(f);
  f(std::integral_constant<int, 16>{});
}
#else
template <typename F>
void run_widest_simd(const F& f) { f(std::integral_constant<int, 16>{}); }
#endif

// Vectors of `Bytes` bytes (64: AVX-512, 32: AVX2, 16: SSE2) and the exp constants per scalar type.
template <typename T, int Bytes>
struct Simd;

template <int Bytes>
struct Simd<float, Bytes> {
  typedef float V __attribute__((vector_size(Bytes)));
  typedef int32_t I __attribute__((vector_size(Bytes)));
  static constexpr int kLanes = Bytes / 4, kMantissa = 23, kBias = 127, kDegree = 7;
  static constexpr float kMaxArg = 87.0f;       // exp(+-87) is a normal float
  static constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693145751953125f,
                         kLn2Lo = 1.42860682030941723212e-6f;
};

template <int Bytes>
struct Simd<double, Bytes> {
  typedef double V __attribute__((vector_size(Bytes)));
  typedef int64_t I __attribute__((vector_size(Bytes)));
  static constexpr int kLanes = Bytes / 8, kMantissa = 52, kBias = 1023, kDegree = 13;
  static constexpr double kMaxArg = 708.0;
  static constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double kLog2e = 1.4426950408889634, kLn2Hi = 6.93147180369123816490e-01,
                          kLn2Lo = 1.90821492927058770002e-10;
};

template <typename V, typename T>
KDEKIT_INLINE V load(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename V, typename T>
KDEKIT_INLINE void store(T* p, V v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")  // the polynomial in fused multiply-adds (-std=c++20 turns them off)

// exp(t) per lane: t = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial, 2^k through the exponent bits.
// |t| is clamped to kMaxArg (exp(-kMaxArg) stands for 0 in a sigmoid); NaN stays NaN.
template <typename S>
KDEKIT_INLINE typename S::V vexp(typename S::V t) {
  using V = typename S::V;
  using I = typename S::I;
  using T = decltype(S::kMaxArg + 0);
  const V round = V{} + S::kRound;
  t = t > S::kMaxArg ? V{} + S::kMaxArg : t;
  t = t < -S::kMaxArg ? V{} - S::kMaxArg : t;
  const V shifted = t * S::kLog2e + round;  // k in the low mantissa bits
  const V k = shifted - round;
  const V r = (t - k * S::kLn2Hi) - k * S::kLn2Lo;
  T coef[S::kDegree + 1];  // 1 / j!
  coef[0] = 1;
  for (int j = 1; j <= S::kDegree; ++j) coef[j] = coef[j - 1] / T(j);
  V p = V{} + coef[S::kDegree];
  for (int j = S::kDegree - 1; j >= 0; --j) p = p * r + coef[j];
  const I scale = (((I)shifted - (I)round) + S::kBias) << S::kMantissa;
  return p * (V)scale;
}

#pragma GCC pop_options

}  // namespace kdekit::cpu
