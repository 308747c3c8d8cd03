// The fused Elman RNN step for small H (float32, SIMD tables only), the counterpart of
// lstm_fused.h: a = h W_hh^T (+ x_t W_ih^T for a narrow or stacked input) accumulates in vector
// registers (fused_gemm.h) and goes through tanh / relu there, so a step is one pass over its
// rows instead of a BLAS call, a store of [rows, H] pre-activations and a pointwise pass that
// reads them back. At sine size (B = 784, H = 32) the per-step GEMM is small enough that the
// call and the round trip cost as much as the arithmetic.
//
// Packed weight (rnn_fused_pack): column groups of NB = rnn_fused_blocks(H) vectors, i.e.
// W = NB * L hidden units each; for group cg and each reduction index k in [0, P + I) the W
// floats W[cg W + c, k] (c < W): [H / W][P + I][W]; k < P from W_hh, k >= P from W_ih.
// Step (rnn_fused_step): h' = act(xg (if given) + b (if given) + [h_prev | x_t] Wp), written
// to out, and to h once all of a row group's columns are done (h is the GEMM input). Nothing
// else is written: the backward reads the output, as for the pointwise path.
#pragma once

#include "fused_gemm.h"
#include "fusedrnn/cell_math.h"
#include "kernel_table.h"
#include "pointwise.h"
#include "vec_ops.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

// Vectors per column group: 4 where H / L allows (fewest loads per FMA), else 2, else 1.
inline int rnn_fused_blocks(int64_t H) {
  const int64_t n = H / FVec::size();
  return n % 4 == 0 ? 4 : n % 2 == 0 ? 2 : 1;
}

inline void rnn_fused_pack(const float* whh, int64_t P, const float* wih, int64_t I, int64_t H,
                           float* dst) {
  const int64_t W = rnn_fused_blocks(H) * FVec::size(), K = P + I;
  for (int64_t cg = 0; cg < H / W; ++cg)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < W; ++c) {
        const int64_t row = cg * W + c;
        *dst++ = k < P ? whh[row * P + k] : wih[row * I + (k - P)];
      }
}

// Rows [b0, b0 + R) of one step, NB vectors per column group.
template <int NB, int R>
inline void rnn_fused_rows(const RnnFusedStep& s, int64_t b0) {
  using V = FVec;
  constexpr int64_t L = V::size(), W = NB * L;
  const int64_t H = s.H, P = s.P, I = s.I, K = P + I;
  float hnew[R * kFusedMaxH];
  const float* hp[R];
  const float* xp[R];
  fused_row_inputs<R>(s, b0, hp, xp);
  for (int64_t cg = 0; cg < H / W; ++cg) {
    const int64_t j = cg * W;
    FRaw acc[R][NB];
#pragma GCC unroll 4
    for (int v = 0; v < NB; ++v) {
      const FRaw bias = s.b ? raw_load(s.b + j + v * L) : FRaw(V(0.f));
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r)
        acc[r][v] = s.xg ? FRaw(V(bias) + V::loadu(s.xg + (b0 + r) * H + j + v * L)) : bias;
    }
    const float* w = s.wp + cg * K * W;
    w = accumulate<NB, R>(acc, hp, P, w);  // h_prev W_hh^T
    accumulate<NB, R>(acc, xp, I, w);      // x_t W_ih^T (I may be 0)
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      float* out = s.out + (b0 + r) * s.ld_out + j;
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v) {
        const V a(acc[r][v]);
        const V h = s.relu ? math::rnn_act<true>(a) : math::rnn_act<false>(a);
        h.store(out + v * L);
        h.store(hnew + r * H + j + v * L);
      }
    }
  }
  fused_store_h<R>(s, b0, hnew);
}

template <int NB>
inline void rnn_fused_run(const RnnFusedStep& s) {
  fused_row_groups<fused_rows_for(NB)>(s.rows, s.H,
                                       [&]<int R>(int64_t b0) { rnn_fused_rows<NB, R>(s, b0); });
}

inline void rnn_fused_step(const RnnFusedStep& s) {
  switch (rnn_fused_blocks(s.H)) {
    case 4:
      return rnn_fused_run<4>(s);
    case 2:
      return rnn_fused_run<2>(s);
    default:
      return rnn_fused_run<1>(s);
  }
}

#endif  // AVX512 || AVX2

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
