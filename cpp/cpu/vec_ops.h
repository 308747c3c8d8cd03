// SIMD primitives for the shared gate math: specialises fusedrnn::math::Ops for
// at::vec::Vectorized<T>: float exp / tanh / reciprocal are short polynomial and estimate
// forms (accuracy stated at each), double uses SLEEF through ATen as torch's kernels do.
// Included only by the per-ISA translation units (capability.cpp), before cell_math.h users.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <limits>
#include <type_traits>

#include "fusedrnn/cell_math.h"

namespace fusedrnn::math {

template <class S>
struct Ops<at::vec::Vectorized<S>> {
  using V = at::vec::Vectorized<S>;
  // float on AVX-512: exp(x) = 2^n e^r with n = round(x log2 e), r = x - n ln 2 (ln 2 split in
  // two), e^r a degree-5 polynomial fitted here for relative error on |r| <= ln2 / 2 (8.5e-8,
  // under 1 ulp before rounding), and 2^n applied by vscalefps, which also saturates to 0 / inf
  // at the clamp. 12 instructions against ATen's exp_u20 (18, ~2.4e-6). The clamp keeps NaN
  // (min/max return their second operand when either is NaN).
  // float on AVX2 and the portable table: ATen's exp_u20. double: SLEEF's 1-ulp exp.
  static V exp(V x) {
    if constexpr (std::is_same_v<S, float>) {
#if defined(CPU_CAPABILITY_AVX512)
      const __m512 xc = clamp_keep_nan(V(-88.f), V(88.5f), x);
      const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.442695f)),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.6931472f), xc);
      r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-1.9046542e-09f), r);
      __m512 p = _mm512_set1_ps(0.00829636f);
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.04192574f));
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16667649f));
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49998802f));
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.99999964f));
      p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0000001f));
      return V(_mm512_scalef_ps(p, n));
#else
      return x.exp_u20();
#endif
    } else {
      return x.exp();
    }
  }
  // float: tanh(x) = x P(x^2) / Q(x^2) with degree-4 P and Q fitted here for relative error
  // on |x| <= 9 (float32 evaluation: <= 3.6e-7 relative, i.e. no cancellation near 0), x
  // clamped to +-9 where tanh rounds to 1. 17 instructions against 34 for the exp-based form
  // with a Taylor branch near 0 it replaces. double keeps SLEEF's tanh: float64 must match
  // torch to ~1e-12.
  static V tanh(V x) {
    if constexpr (std::is_same_v<S, float>) {
      const V xc = clamp_keep_nan(V(-9.f), V(9.f), x);
      const V t = xc * xc;
      V p = V(1.4310130e-08f);
      p = at::vec::fmadd(p, t, V(2.1306743e-05f));
      p = at::vec::fmadd(p, t, V(3.5383219e-03f));
      p = at::vec::fmadd(p, t, V(1.3417111e-01f));
      p = at::vec::fmadd(p, t, V(1.f));
      V q = V(8.1700301e-07f);
      q = at::vec::fmadd(q, t, V(3.3552878e-04f));
      q = at::vec::fmadd(q, t, V(2.6039887e-02f));
      q = at::vec::fmadd(q, t, V(4.6750438e-01f));
      q = at::vec::fmadd(q, t, V(1.f));
      return xc * p * recip(q);
    } else {
      return x.tanh();
    }
  }
  // float: the hardware reciprocal estimate refined by one Newton step, r + r (1 - x r):
  // ~2^-28 (AVX-512, from 14 bits) or ~2^-23 (AVX2, from 12 bits) relative error, where the
  // divides it replaces (5 per 16 LSTM lanes) were the costliest instructions of the pass.
  // x is a denominator >= 1; capping it at FLT_MAX (NaN still passes) keeps an inf from exp
  // from turning into NaN in the Newton step.
  static V recip(V x) {
    if constexpr (std::is_same_v<S, float>) {
#if defined(CPU_CAPABILITY_AVX512)
      const V d(_mm512_min_ps(_mm512_set1_ps(std::numeric_limits<float>::max()), x));
      const V r(_mm512_rcp14_ps(d));
      return at::vec::fmadd(r, at::vec::fnmadd(d, r, V(1.f)), r);
#elif defined(CPU_CAPABILITY_AVX2)
      const V d(_mm256_min_ps(_mm256_set1_ps(std::numeric_limits<float>::max()), x));
      const V r(_mm256_rcp_ps(d));
      return at::vec::fmadd(r, at::vec::fnmadd(d, r, V(1.f)), r);
#else
      return V(1.f) / x;
#endif
    } else {
      return V(S(1)) / x;
    }
  }
  // min(max(x, lo), hi) that returns NaN for NaN: the x86 min/max return their second
  // operand when either is NaN, which is x here (ATen's NaN-aware minimum/maximum cost 4 more
  // instructions each).
  static V clamp_keep_nan(V lo, V hi, V x) {
#if defined(CPU_CAPABILITY_AVX512)
    if constexpr (std::is_same_v<S, float>) return V(_mm512_max_ps(lo, _mm512_min_ps(hi, x)));
#elif defined(CPU_CAPABILITY_AVX2)
    if constexpr (std::is_same_v<S, float>) return V(_mm256_max_ps(lo, _mm256_min_ps(hi, x)));
#endif
    return at::vec::maximum(lo, at::vec::minimum(hi, x));
  }
  static V relu(V x) { return at::vec::clamp_min(x, V(S(0))); }
  static V relu_backward(V dh, V h) { return V::blendv(V(S(0)), dh, h > V(S(0))); }
};

}  // namespace fusedrnn::math
