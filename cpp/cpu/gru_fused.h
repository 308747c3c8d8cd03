// The fused GRU step for small H (float32, SIMD tables only), as lstm_fused.h: the recurrent
// GEMM h W_hh^T (+ x_t W_ih^T for a narrow or stacked input) accumulates in vector registers
// and feeds the gate math directly. The reset gate multiplies only the hidden side of n
// (torch.nn's n = tanh(x_n + r (W_hn h + b_hn))), so each hidden block keeps four
// accumulators: r and z (both sides), n's input side and n's hidden side.
//
// Packed weight (gru_fused_pack), for L = V::size() hidden units per block jb and each
// reduction index k in [0, P + I): 3 vectors of L floats, W_hh[g H + jb L + l, k] for k < P
// (g = r, z, n: into the r, z, hidden-n accumulators) and W_ih[g H + jb L + l, k - P] after
// (into r, z, input-n), i.e. [H / L][P + I][3][L] floats. b_ih comes in xg, or as the weight
// of the ones column the driver appends to a per-step input (forward_input).
// Step (gru_fused_step): the gate math of cell_math.h on those sums (+ xg, + b_hh); writes
// out, ws [r z n hn] (if given) like GruPointwise::forward, and h once a row group's blocks
// are all done (h is the GEMM input).
#pragma once

#include "fused_gemm.h"
#include "fusedrnn/cell_math.h"
#include "kernel_table.h"
#include "pointwise.h"
#include "vec_ops.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

// 4 accumulators a row (r, z, input n, hidden n), 3 weight vectors and a broadcast: 6 rows on
// AVX-512, 3 on AVX2 (all 16 registers; the weights loaded once into registers, fused_gemm.h).
constexpr int kGruFusedRows = fused_rows_for(4);
static_assert(4 * kGruFusedRows + 3 + 1 <= kVecRegs);

inline void gru_fused_pack(const float* whh, int64_t P, const float* wih, int64_t I, int64_t H,
                           float* dst) {
  gates_pack<3>(whh, P, wih, I, H, dst);
}

// acc[r][0, 1, kN] += sum_{k < n} src[r][k] w[k][0, 1, 2]: the third vector goes to the
// input-side (kN = 2) or hidden-side (kN = 3) n accumulator. Returns w past its n rows.
template <int kN, int R>
__attribute__((always_inline)) inline const float* gru_accumulate(FRaw (&acc)[R][4],
                                                                  const float* const (&src)[R],
                                                                  int64_t n, const float* w) {
  constexpr int64_t L = FVec::size();
  for (int64_t k = 0; k < n; ++k, w += 3 * L) {
    const FRaw w0 = raw_load_reg(w), w1 = raw_load_reg(w + L), w2 = raw_load_reg(w + 2 * L);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const FRaw a = raw_bcast(src[r] + k);
      acc[r][0] = raw_fma(a, w0, acc[r][0]);
      acc[r][1] = raw_fma(a, w1, acc[r][1]);
      acc[r][kN] = raw_fma(a, w2, acc[r][kN]);
    }
  }
  return w;
}

// Rows [b0, b0 + R) of one step.
template <int R>
inline void gru_fused_rows(const GruFusedStep& s, int64_t b0) {
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
    const FRaw zero = FRaw(V(0.f));
    const FRaw br = s.b ? raw_load(s.b + j) : zero, bz = s.b ? raw_load(s.b + H + j) : zero,
               bn = s.b ? raw_load(s.b + 2 * H + j) : zero;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const float* xg = s.xg ? s.xg + (b0 + r) * 3 * H + j : nullptr;
      acc[r][0] = xg ? FRaw(V(br) + V::loadu(xg)) : br;
      acc[r][1] = xg ? FRaw(V(bz) + V::loadu(xg + H)) : bz;
      acc[r][2] = xg ? FRaw(V::loadu(xg + 2 * H)) : zero;
      acc[r][3] = bn;
    }
    const float* w = s.wp + jb * K * 3 * L;
    w = gru_accumulate<3, R>(acc, hp, P, w);  // h_prev W_hh^T: r, z, hidden n
    gru_accumulate<2, R>(acc, xp, I, w);      // x_t W_ih^T: r, z, input n (I may be 0)
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int64_t b = b0 + r;
      const V none(0.f);
      const auto o = math::gru_forward<V>(V(acc[r][0]), V(acc[r][1]), V(acc[r][2]), none, none,
                                          V(acc[r][3]), V::loadu(hp[r] + j));
      if (s.ws) {
        float* ws = s.ws + b * s.ld_ws + j;
        o.r.store(ws);
        o.z.store(ws + H);
        o.n.store(ws + 2 * H);
        o.hn.store(ws + 3 * H);
      }
      o.h.store(s.out + b * s.ld_out + j);
      o.h.store(hnew + r * H + j);
    }
  }
  fused_store_h<R>(s, b0, hnew);
}

inline void gru_fused_step(const GruFusedStep& s) {
  fused_row_groups<kGruFusedRows>(s.rows, 3 * s.H,
                                  [&]<int R>(int64_t b0) { gru_fused_rows<R>(s, b0); });
}

#endif  // AVX512 || AVX2

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
