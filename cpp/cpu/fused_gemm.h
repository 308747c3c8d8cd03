// The register-blocked GEMM of the fused small-H steps (lstm_fused.h, gru_fused.h,
// rnn_fused.h, ln_fused.h; narrow_gemm.h's backward dh = dG W_hh reads W_hh in place through
// accumulate's ldw): R rows times NB weight vectors accumulate in raw vector registers, so a
// step's recurrent (and narrow input) product feeds its pointwise math without a store of the
// pre-activations; and what the steps share around it (packing, row groups, h written last).
// Weight layout: for each reduction index k, NB vectors of L = FVec::size() floats in a row
// (w advances by NB * L per k). SIMD tables only (AVX2 / AVX-512).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernel_table.h"
#include "pointwise.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

using FVec = at::vec::Vectorized<float>;

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

// The accumulators are raw vector registers: an array of Vectorized (whose operators take
// references) made GCC store all of them to the stack on every reduction step.
#if defined(CPU_CAPABILITY_AVX512)
using FRaw = __m512;
inline FRaw raw_fma(FRaw a, FRaw b, FRaw c) { return _mm512_fmadd_ps(a, b, c); }
inline FRaw raw_bcast(const float* p) { return _mm512_set1_ps(*p); }
inline FRaw raw_load(const float* p) { return _mm512_loadu_ps(p); }
constexpr int kVecRegs = 32;
#elif defined(CPU_CAPABILITY_AVX2)
using FRaw = __m256;
inline FRaw raw_fma(FRaw a, FRaw b, FRaw c) { return _mm256_fmadd_ps(a, b, c); }
inline FRaw raw_bcast(const float* p) { return _mm256_set1_ps(*p); }
inline FRaw raw_load(const float* p) { return _mm256_loadu_ps(p); }
constexpr int kVecRegs = 16;
#endif

// A vector loaded once into a register and reused by several FMAs. Without the empty asm,
// GCC folds the load into each FMA when few rows share it (AVX2's LSTM rows): 2 NB loads and
// R broadcasts per 2 NB FMAs, more than the two vector loads a cycle that feed two FMAs.
__attribute__((always_inline)) inline FRaw raw_load_reg(const float* p) {
  FRaw v = raw_load(p);
  asm("" : "+x"(v));
  return v;
}

// Two register plans for R rows of NB vectors: the NB weight vectors held while the rows'
// broadcasts pass through one register (R NB + NB + 1, plus a spare), or the R broadcasts held
// while the weight vectors pass through one (R NB + R + 1). The second gives AVX2's 16
// registers a third row of 4 vectors: 12 accumulators, 7 loads per 12 FMAs, against 8 and
// 6 per 8. Rows are capped at 12: more add little once the loads are amortised.
constexpr int rows_holding_weights(int NB) { return (kVecRegs - NB - 2) / NB; }
constexpr int rows_holding_broadcasts(int NB) { return (kVecRegs - 1) / (NB + 1); }
constexpr int fused_rows_for(int NB) {
  const int a = rows_holding_weights(NB), b = rows_holding_broadcasts(NB);
  const int r = a > b ? a : b;
  return r < 12 ? r : 12;
}

// acc[r][v] += sum_{k < n} src[r][k] w[k][v] for the R rows, w's rows ldw floats apart (a
// packed weight's: NB L); returns w past its n rows. Always inlined: the accumulators must stay
// in the caller's registers. Either plan adds each element's terms in k order: the bits do
// not depend on R.
template <int NB, int R>
__attribute__((always_inline)) inline const float* accumulate(FRaw (&acc)[R][NB],
                                                              const float* const (&src)[R],
                                                              int64_t n, const float* w,
                                                              int64_t ldw = NB * FVec::size()) {
  constexpr int64_t L = FVec::size();
  if constexpr (R <= rows_holding_weights(NB)) {
    for (int64_t k = 0; k < n; ++k, w += ldw) {
      FRaw wv[NB];
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v) wv[v] = R > 1 ? raw_load_reg(w + v * L) : raw_load(w + v * L);
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        const FRaw a = raw_bcast(src[r] + k);
#pragma GCC unroll 4
        for (int v = 0; v < NB; ++v) acc[r][v] = raw_fma(a, wv[v], acc[r][v]);
      }
    }
  } else {
    static_assert(R <= rows_holding_broadcasts(NB), "accumulate: R x NB does not fit");
    for (int64_t k = 0; k < n; ++k, w += ldw) {
      FRaw a[R];
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) a[r] = raw_bcast(src[r] + k);
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v) {
        const FRaw wv = raw_load_reg(w + v * L);
#pragma GCC unroll 12
        for (int r = 0; r < R; ++r) acc[r][v] = raw_fma(a[r], wv, acc[r][v]);
      }
    }
  }
  return w;
}

// [W_hh | W_ih] of a G-gate family in hidden blocks of L units: for block jb and each
// reduction index k in [0, P + I), the G vectors W[g H + jb L + l, k] (l < L), i.e.
// [H / L][P + I][G][L] floats; k < P from W_hh [G H, P], k >= P from W_ih [G H, I].
template <int G>
inline void gates_pack(const float* whh, int64_t P, const float* wih, int64_t I, int64_t H,
                       float* dst) {
  constexpr int64_t L = FVec::size();
  const int64_t K = P + I;
  for (int64_t jb = 0; jb < H / L; ++jb)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t row = g * H + jb * L + l;
          *dst++ = k < P ? whh[row * P + k] : wih[row * I + (k - P)];
        }
}

// f.template operator()<n>(b0) for the n <= R rows from b0: the kernel for exactly n rows.
template <int R, class F>
inline void fused_rows_upto(F& f, int64_t b0, int64_t n) {
  if constexpr (R > 1) {
    if (n < R) return fused_rows_upto<R - 1>(f, b0, n);
  }
  f.template operator()<R>(b0);
}

// A step's rows in as few groups of at most R as cover them, of sizes differing by one at
// most (16 rows in groups of 3: 3 3 3 3 2 2, not five 3s and a single row, whose 4
// accumulators leave the FMA units waiting on their latency), the groups split over threads by
// the pointwise passes' rule (over_rows; width: floats a row writes); inside the CPU's
// row-parallel time loops this runs on the calling thread.
template <int R, class F>
inline void fused_row_groups(int64_t rows, int64_t width, F&& f) {
  const int64_t groups = (rows + R - 1) / R;
  over_rows(groups, R * width, [&](int64_t q) {
    const int64_t b0 = q * rows / groups, b1 = (q + 1) * rows / groups;
    fused_rows_upto<R>(f, b0, b1 - b0);
  });
}

// The GEMM inputs of rows [b0, b0 + R): h_prev rows, and x_t rows (null when I = 0).
template <int R>
inline void fused_row_inputs(const FusedStepRows& s, int64_t b0, const float* (&hp)[R],
                             const float* (&xp)[R]) {
  for (int r = 0; r < R; ++r) {
    hp[r] = s.h + (b0 + r) * s.P;
    xp[r] = s.I ? s.x + (b0 + r) * s.ldx : nullptr;
  }
}

// The new h of rows [b0, b0 + R), kept aside [R, H] while h was still the GEMM input.
template <int R>
inline void fused_store_h(const FusedStepRows& s, int64_t b0, const float* hnew) {
  for (int r = 0; r < R; ++r)
    std::memcpy(s.h + (b0 + r) * s.P, hnew + r * s.H, sizeof(float) * s.H);
}

#endif  // AVX512 || AVX2

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
