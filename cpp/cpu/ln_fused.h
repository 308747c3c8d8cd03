// The fused LayerNorm LSTM / GRU forward step for small H (float32, the AVX-512 table only,
// capability.cpp): per group of rows the recurrent GEMM hg = h W_hh^T accumulates in vector
// registers (fused_gemm.h) into a [rows, G H] block on the stack, and the step's LN pass
// (ln_pointwise.h, forward_rows) runs on that block while it is in L1. Without it a step is a BLAS
// call writing [rows, G H] and a pass reading it back, whose fixed cost weighs at small batches
// (timings in ln_kernels.h). The LN statistics need a whole row of hg, so unlike lstm_fused.h the
// GEMM of a row group is complete before its pass starts; the pass then writes h in place, which
// only this group's GEMM read. Same writes as LnLstmPointwise / LnGruPointwise::forward; in
// training (a workspace to write) the pass takes the group's rows one at a time, as that
// forward does. The input side is not in the GEMM (its LN is separate).
//
// Packed weight (ln_fused_pack, fused_gemm.h gates_pack): [H / L][H][G][L] floats, for hidden
// block jb and reduction index k the G gate vectors W_hh[g H + jb L + l, k].
#pragma once

#include "fused_gemm.h"
#include "kernel_table.h"
#include "ln_pointwise.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512)

// Rows per group: the LN pass's own group at inference; 4 G accumulators, G weight vectors
// and a broadcast fit the 32 registers.
constexpr int kLnFusedRows = kLnRowGroup;
static_assert(kLnFusedRows <= fused_rows_for(4));

template <int G>
inline void ln_fused_pack(const float* whh, int64_t P, const float* /*wih*/, int64_t /*I*/,
                          int64_t H, float* dst) {
  gates_pack<G>(whh, P, nullptr, 0, H, dst);
}

// The step's arguments for its rows from b: every per-row pointer moved down b rows, and hg
// the group's block (ld G H, as the driver's buffer).
template <int G>
inline LnFwdStep<float> ln_rows_from(const LnFwdStep<float>& s, int64_t b, const float* hg) {
  const int64_t H = s.H, GH = G * H;
  LnFwdStep<float> r = s;
  r.xg = s.xg ? s.xg + b * GH : nullptr;
  r.xs = s.xs ? s.xs + b : nullptr;
  r.hg = hg;
  r.h = s.h + b * H;
  r.c = s.c ? s.c + b * H : nullptr;
  r.out = s.out + b * s.ld_out;
  r.ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
  return r;
}

// Rows [b0, b0 + R) of one step; Pass: LnLstmPointwise or LnGruPointwise.
template <int G, class Pass, int R>
inline void ln_fused_rows(const LnFusedStep& s, int64_t b0) {
  constexpr int64_t L = FVec::size();
  const int64_t H = s.st.H, GH = G * H;
  alignas(64) float hg[R * G * kFusedMaxH];
  const float* hp[R];
  for (int r = 0; r < R; ++r) hp[r] = s.st.h + (b0 + r) * H;
  for (int64_t jb = 0; jb < H / L; ++jb) {
    FRaw acc[R][G];
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) acc[r][g] = FRaw(FVec(0.f));
    accumulate<G, R>(acc, hp, H, s.wp + jb * H * G * L);
    for (int r = 0; r < R; ++r)
      for (int g = 0; g < G; ++g) FVec(acc[r][g]).store(hg + r * GH + g * H + jb * L);
  }
  if (s.st.ws == nullptr) {
    Pass::template forward_rows<R>(ln_rows_from<G>(s.st, b0, hg), 0);
  } else {  // interleaved workspace streams of R rows ran slower (ln_pointwise.h)
    for (int r = 0; r < R; ++r)
      Pass::template forward_rows<1>(ln_rows_from<G>(s.st, b0 + r, hg + r * GH), 0);
  }
}

template <int G, class Pass>
inline void ln_fused_step(const LnFusedStep& s) {
  fused_row_groups<kLnFusedRows>(s.st.rows, 2 * G * s.st.H,
                                 [&]<int R>(int64_t b0) { ln_fused_rows<G, Pass, R>(s, b0); });
}

#endif  // AVX512

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
