// SIMD primitives for the shared gate math: specialises fusedrnn::math::Ops for
// at::vec::Vectorized<T> (exp/tanh from SLEEF through ATen, as torch's own CPU kernels use).
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
  // float: ATen's polynomial exp_u20 (<= 20 ulp, ~2.4e-6 relative), about twice as fast as
  // SLEEF's expf; the gates' error stays far inside float32 parity with torch.nn (1e-5).
  // double: SLEEF's 1-ulp exp.
  static V exp(V x) {
    if constexpr (std::is_same_v<S, float>) {
      return x.exp_u20();
    } else {
      return x.exp();
    }
  }
  // float: tanh from one exp, several times cheaper than SLEEF's tanhf / expm1f (which
  // dominated the LSTM forward profile). |x| >= 1/8: (1 - t) / (1 + t) with t = exp(-2|x|),
  // a few ulp; |x| < 1/8: the odd Taylor series to x^9 (truncation < 1e-12), which avoids the
  // cancellation in 1 - t. double keeps SLEEF's tanh: float64 must match torch to ~1e-12.
  static V tanh(V x) {
    if constexpr (std::is_same_v<S, float>) {
      const V a = x.abs();
      const V t = (a * V(-2.f)).exp_u20();
      const V big = (V(1.f) - t) * recip(V(1.f) + t);
      const V x2 = x * x;
      V p = V(62.f / 2835.f);
      p = at::vec::fmadd(p, x2, V(-17.f / 315.f));
      p = at::vec::fmadd(p, x2, V(2.f / 15.f));
      p = at::vec::fmadd(p, x2, V(-1.f / 3.f));
      const V small = at::vec::fmadd(p * x2, x, x);
      const V signed_big = V::blendv(big, V(0.f) - big, x < V(0.f));
      return V::blendv(signed_big, small, a < V(0.125f));
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
  static V relu(V x) { return at::vec::clamp_min(x, V(S(0))); }
  static V relu_backward(V dh, V h) { return V::blendv(V(S(0)), dh, h > V(S(0))); }
};

}  // namespace fusedrnn::math
