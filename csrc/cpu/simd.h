// Runs a CPU kernel compiled for the widest vector ISA of the CPU (run_widest_simd), and the always-inline markers
// its kernels need.
#pragma once

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

}  // namespace kdekit::cpu
