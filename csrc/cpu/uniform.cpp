// kdekit::uniform_: fills a float32/float64 CPU tensor with the values torch.rand gives from the same CPU generator,
// bitwise, and leaves the generator where torch.rand would. ATen draws one word at a time from its Mersenne Twister
// (at::mt19937, ~3 ns a value); here the state block's regeneration and the tempering run in the CPU's widest vectors
// on the generator's own state (~0.2 ns a value). ATen's values (at::uniform_real_distribution on [0, 1)):
//   float32: (w & (2^24 - 1)) 2^-24 from one 32-bit word w;
//   float64: (((w1 << 32) | w2) & (2^53 - 1)) 2^-53 from two consecutive words (random64()).
// kdekit/ops/uniform.py checks once per process that this still holds for the torch it runs with.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>

#include "simd.h"

namespace kdekit::cpu {
namespace {

constexpr int64_t kStateN = 624, kStateM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfu, kUpperMask = 0x80000000u, kLowerMask = 0x7fffffffu;

template <int Bytes>
struct Words {
  typedef uint32_t V __attribute__((vector_size(Bytes)));
  typedef int32_t I __attribute__((vector_size(Bytes)));
  typedef float F __attribute__((vector_size(Bytes)));
  static constexpr int64_t L = Bytes / 4;
};

template <typename V>
KDEKIT_INLINE V twist(V u, V v) {
  const V y = (u & kUpperMask) | (v & kLowerMask);
  return (y >> 1) ^ ((V{} - (v & 1u)) & kMatrixA);
}

template <typename V>
KDEKIT_INLINE V temper(V y) {
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

// at::mt19937's next_state on s (kStateN words), L words at a time where every word it reads is final: the first
// kStateN - kStateM words read old words ahead of them, the others words regenerated >= 227 places before.
template <int Bytes>
KDEKIT_INLINE void regenerate(uint32_t* s) {
  using W = Words<Bytes>;
  using V = typename W::V;
  auto run = [&](int64_t i, int64_t end, int64_t offset) {
    for (; i + W::L <= end; i += W::L)
      store(s + i, load<V>(s + i + offset) ^ twist(load<V>(s + i), load<V>(s + i + 1)));
    for (; i < end; ++i) s[i] = s[i + offset] ^ twist(s[i], s[i + 1]);
  };
  run(0, kStateN - kStateM, kStateM);
  run(kStateN - kStateM, kStateN - 1, kStateM - kStateN);
  s[kStateN - 1] = s[kStateM - 1] ^ twist(s[kStateN - 1], s[0]);
}

// out[0, count) = the next count tempered words of the engine state d, advancing d as count calls of
// at::mt19937::operator() would (left_ - 1 words of the current block remain; at 0 the next call regenerates).
template <int Bytes>
KDEKIT_INLINE void draw_words(at::mt19937_data_pod& d, uint32_t* out, int64_t count) {
  using W = Words<Bytes>;
  using V = typename W::V;
  uint32_t* s = d.state_.data();
  int64_t next = d.next_, left = d.left_;
  for (int64_t done = 0; done < count;) {
    if (left == 1) {  // the next call regenerates, returns word 0 and leaves left_ at kStateN
      regenerate<Bytes>(s);
      next = 0;
      left = kStateN + 1;
    }
    const int64_t take = std::min(left - 1, count - done);
    int64_t i = 0;
    for (; i + W::L <= take; i += W::L) store(out + done + i, temper(load<V>(s + next + i)));
    for (; i < take; ++i) out[done + i] = temper(s[next + i]);
    next += take;
    left -= take;
    done += take;
  }
  d.next_ = static_cast<uint32_t>(next);
  d.left_ = static_cast<int>(left);
}

// The words (in place, in the tensor's memory) to float32 values.
template <int Bytes>
KDEKIT_INLINE void words_to_float(uint32_t* w, int64_t count) {
  using W = Words<Bytes>;
  using V = typename W::V;
  using F = typename W::F;
  float* out = reinterpret_cast<float*>(w);
  const float scale = 1.0f / 16777216.0f;
  int64_t i = 0;
  for (; i + W::L <= count; i += W::L) {
    const V m = load<V>(w + i) & 0xffffffu;  // < 2^24: exact as int32 and as float
    store(out + i, __builtin_convertvector((typename W::I)m, F) * scale);
  }
  for (; i < count; ++i) out[i] = static_cast<float>(w[i] & 0xffffffu) * scale;
}

// Pairs of words (in place) to float64 values.
void words_to_double(uint32_t* w, int64_t count) {
  double* out = reinterpret_cast<double*>(w);
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t bits = (static_cast<uint64_t>(w[2 * i]) << 32) | w[2 * i + 1];
    out[i] = static_cast<double>(bits & ((uint64_t(1) << 53) - 1)) * (1.0 / 9007199254740992.0);
  }
}

void uniform_cpu(const at::Tensor& self, const c10::optional<at::Generator>& generator) {
  TORCH_CHECK(self.device().is_cpu(), "uniform_: self must be a CPU tensor, got ", self.device());
  TORCH_CHECK(self.is_contiguous(), "uniform_: self must be contiguous");
  const auto dtype = self.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "uniform_: self must be float32 or float64, got ", dtype);
  const int64_t count = self.numel(), words = dtype == at::kDouble ? 2 * count : count;
  if (count == 0) return;
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  at::mt19937 engine = gen->engine();
  at::mt19937_data_pod d = engine.data();
  TORCH_CHECK(engine.is_valid(), "uniform_: the generator's Mersenne Twister state is not valid");
  uint32_t* w = static_cast<uint32_t*>(self.data_ptr());  // float32: one word a value; float64: two
  run_widest_simd([&](auto width) KDEKIT_INLINE_LAMBDA {
    constexpr int Bytes = decltype(width)::value;
    draw_words<Bytes>(d, w, words);
    if (dtype == at::kFloat) words_to_float<Bytes>(w, count);
  });
  if (dtype == at::kDouble) words_to_double(w, count);
  engine.set_data(d);
  gen->set_engine(engine);
}

}  // namespace

TORCH_LIBRARY_IMPL(kdekit, CPU, m) { m.impl("uniform_", &uniform_cpu); }

}  // namespace kdekit::cpu
