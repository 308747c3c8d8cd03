// at::bernoulli_(p)'s CPU draws, bit for bit, without its per-element cost (dropout_mask.cpp).
//
// ATen's CPU bernoulli_(p) takes, per element in memory order, two draws of the default
// generator's mt19937 (random64 = first << 32 | second), keeps the low 53 bits v, and writes
// v * 2^-53 < p. Its engine refills the 624-word state with a data-dependent branch per word
// and is called through TensorIterator per element: ~10 ns an element. Here the same state
// (the engine's mt19937_data_pod, advanced in place) is refilled branch-free and tempered in
// vectorisable runs, and the comparison is done on integers: v * 2^-53 < p <=> v < ceil(p 2^53)
// (both sides exact in double, and v is an integer).
#pragma once

#include <ATen/core/MT19937RNGEngine.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

constexpr int kMtN = 624, kMtM = 397;

inline uint32_t mt_twist(uint32_t u, uint32_t v) {
  return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((0u - (v & 1u)) & 0x9908b0dfu);
}

// The engine's next_state(), then left_ = N + 1: N draws remain (the engine's own left_ = N
// counts the draw that triggered the refill, which mt_draws takes as the first of them).
inline void mt_refill(at::mt19937_data_pod& d) {
  uint32_t* s = d.state_.data();
  for (int j = 0; j < kMtN - kMtM; ++j) s[j] = s[j + kMtM] ^ mt_twist(s[j], s[j + 1]);
  for (int j = kMtN - kMtM; j < kMtN - 1; ++j) s[j] = s[j + kMtM - kMtN] ^ mt_twist(s[j], s[j + 1]);
  s[kMtN - 1] = s[kMtM - 1] ^ mt_twist(s[kMtN - 1], s[0]);
  d.left_ = kMtN + 1;
  d.next_ = 0;
}

// The next `count` outputs of the engine, as `count` calls of at::mt19937::operator() would
// give them, leaving the same state (left_ - 1 draws remain before a refill).
inline void mt_draws(at::mt19937_data_pod& d, uint32_t* dst, int64_t count) {
  while (count > 0) {
    if (d.left_ <= 1) mt_refill(d);
    const int64_t k = std::min<int64_t>(count, d.left_ - 1);
    const uint32_t* s = d.state_.data() + d.next_;
    for (int64_t i = 0; i < k; ++i) {
      uint32_t y = s[i];
      y ^= y >> 11;
      y ^= (y << 7) & 0x9d2c5680u;
      y ^= (y << 15) & 0xefc60000u;
      y ^= y >> 18;
      dst[i] = y;
    }
    d.next_ += static_cast<uint32_t>(k);
    d.left_ -= static_cast<int>(k);
    dst += k;
    count -= k;
  }
}

// out[i] = keep with probability p, else 0: at::bernoulli_(p)'s draws and generator advance,
// with its ones written as `keep` (a dropout mask's 1/p: no second pass to scale them).
template <class T>
void bernoulli_mask(at::mt19937_data_pod& d, double p, T keep, T* out, int64_t n) {
  constexpr int64_t kBlock = 512;
  constexpr uint64_t kLow53 = (uint64_t(1) << 53) - 1;
  const double scaled = std::ceil(p * 9007199254740992.0);  // p 2^53, p in [0, 1]
  const uint64_t thr = static_cast<uint64_t>(scaled);
  uint32_t buf[2 * kBlock];
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t m = std::min(kBlock, n - i0);
    mt_draws(d, buf, 2 * m);
    T* o = out + i0;
    for (int64_t i = 0; i < m; ++i) {
      const uint64_t v = ((uint64_t(buf[2 * i]) << 32) | buf[2 * i + 1]) & kLow53;
      o[i] = v < thr ? keep : T(0);
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
