// The fused LSTM step for small H (float32, SIMD tables only): the recurrent GEMM
// a = h W_hh^T (+ x_t W_ih^T for a narrow input) accumulates in vector registers and feeds the
// gate math directly, so a step is one pass over the rows instead of a BLAS call, a store of
// the [rows, 4H] gates and a pointwise pass that reads them back. At stock and sine sizes
// MKL's small-GEMM entry and the gate round trip cost about as much as the arithmetic.
//
// Packed weight (lstm_fused_pack), for L = V::size() hidden units per block jb and each
// reduction index k in [0, P + I): the 4 gate vectors W[g H + jb L + l, k] (g = i, f, g, o;
// l < L), i.e. [H / L][P + I][4][L] floats; k < P from W_hh, k >= P from W_ih.
// Step (lstm_fused_step): a_g = xg_g (if given) + b_g (if given) + sum_k [h_prev | x_t]_k Wp,
// then the gate math of cell_math.h; writes out, c (in place), ws [i f g o c] (if given) like
// LstmPointwise::forward, and h once a row group's blocks are all done (h is the GEMM input).
// Row groups of kFusedRows rows keep 4 kFusedRows accumulators in registers (fused_gemm.h).
#pragma once

#include "fused_gemm.h"
#include "fusedrnn/cell_math.h"
#include "kernel_table.h"
#include "pointwise.h"
#include "vec_ops.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

// The portable table has no fused step (the kernel needs real vector registers).
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

// 4 kFusedRows accumulators (one per gate) beside the 4 weight vectors and a broadcast
// (AVX-512: 6 rows), or beside the rows' broadcasts and one weight vector (AVX2: 3 rows;
// fused_gemm.h).
constexpr int kFusedRows = fused_rows_for(4);
static_assert(kFusedRows == (kVecRegs == 32 ? 6 : 3));

inline void lstm_fused_pack(const float* whh, int64_t P, const float* wih, int64_t I, int64_t H,
                            float* dst) {
  gates_pack<4>(whh, P, wih, I, H, dst);
}

// Rows [b0, b0 + R) of one step.
template <int R>
inline void lstm_fused_rows(const LstmFusedStep& s, int64_t b0) {
  using V = FVec;
  constexpr int64_t L = V::size();
  const int64_t H = s.H, P = s.P, I = s.I, K = P + I;
  float hnew[R * kFusedMaxH];
  const float* hp[R];
  const float* xp[R];
  fused_row_inputs<R>(s, b0, hp, xp);
  for (int64_t jb = 0; jb < H / L; ++jb) {
    const int64_t j = jb * L;
    FRaw acc[R][4];
    for (int g = 0; g < 4; ++g) {
      const FRaw bias = s.b ? raw_load(s.b + g * H + j) : FRaw(V(0.f));
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
        acc[r][g] = s.xg ? FRaw(V(bias) + V::loadu(s.xg + (b0 + r) * 4 * H + g * H + j)) : bias;
    }
    const float* w = s.wp + jb * K * 4 * L;
    w = accumulate<4, R>(acc, hp, P, w);  // h_prev W_hh^T
    accumulate<4, R>(acc, xp, I, w);      // x_t W_ih^T (narrow input; I may be 0)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int64_t b = b0 + r;
      float* c = s.c + b * H + j;
      const auto o = math::lstm_forward<V>(V(acc[r][0]), V(acc[r][1]), V(acc[r][2]), V(acc[r][3]),
                                           V::loadu(c));
      if (s.ws) {
        float* ws = s.ws + b * s.ld_ws + j;
        o.i.store(ws);
        o.f.store(ws + H);
        o.g.store(ws + 2 * H);
        o.o.store(ws + 3 * H);
        o.c.store(ws + 4 * H);
      }
      o.c.store(c);
      o.h.store(s.out + b * s.ld_out + j);
      o.h.store(hnew + r * H + j);
    }
  }
  fused_store_h<R>(s, b0, hnew);
}

inline void lstm_fused_step(const LstmFusedStep& s) {
  fused_row_groups<kFusedRows>(s.rows, 4 * s.H,
                               [&]<int R>(int64_t b0) { lstm_fused_rows<R>(s, b0); });
}

#endif  // AVX512 || AVX2

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
