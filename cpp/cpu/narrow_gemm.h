// C [rows, N] (=, or += with accumulate) A [rows, K] W, for a row-major W [K, N] with N narrow
// (a multiple of the vector width, at most kNarrowMaxN): the backward's per-step dh = dG W_hh
// at small H (K = G H). Rows go in groups of R, R x NB accumulators in vector registers per
// block of NB column vectors (fused_gemm.h's accumulate), A's values broadcast, W read in
// place: no packing of A or W and no BLAS call per step. With MKL each step of a small-H
// backward paid the call, a copy of A into MKL's panel layout and a pass scaling C by beta
// (MKL's copies and beta passes, these calls' and the weight gradients', were ~9% of the stock
// LSTM's training step in perf; the step ran 1.07-1.09x faster without these calls, alternating
// in-process at 2 threads). The k loop runs in order, one FMA chain per output element: the bits
// do not depend on the thread count. Row groups split over threads unless the caller is
// already in a parallel region (the row-parallel time loops, cpu_backend.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "fused_gemm.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)

// Column vectors per block: 4 (AVX-512, 6 rows: 24 accumulators, 4 weight vectors and a
// broadcast in 32 registers) or 2 (AVX2, 6 rows in 16).
constexpr int kNarrowCols = kVecRegs == 32 ? 4 : 2;

// Rows [b0, b0 + R), the NB column vectors from column c0.
template <int NB, int R>
inline void narrow_block(const NarrowGemm& s, int64_t b0, int64_t c0) {
  constexpr int64_t L = FVec::size();
  FRaw acc[R][NB];
  const float* a[R];
  for (int r = 0; r < R; ++r) {
    a[r] = s.a + (b0 + r) * s.lda;
    for (int v = 0; v < NB; ++v) acc[r][v] = FRaw(FVec(0.f));
  }
  accumulate<NB, R>(acc, a, s.K, s.w + c0, s.ldw);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NB; ++v) {
      float* c = s.c + (b0 + r) * s.ldc + c0 + v * L;
      FVec o(acc[r][v]);
      if (s.accumulate) o = o + FVec::loadu(c);
      o.store(c);
    }
}

// Rows [b0, b0 + R), every column block: NB vectors wide, the last one narrower.
template <int NB, int R>
inline void narrow_rows(const NarrowGemm& s, int64_t b0) {
  constexpr int64_t L = FVec::size();
  const int64_t nv = s.N / L;
  int64_t v = 0;
  for (; v + NB <= nv; v += NB) narrow_block<NB, R>(s, b0, v * L);
  if constexpr (NB == 4) {
    if (nv - v == 3) narrow_block<3, R>(s, b0, v * L);
    if (nv - v == 2) narrow_block<2, R>(s, b0, v * L);
  }
  if constexpr (NB > 1) {
    if (nv - v == 1) narrow_block<1, R>(s, b0, v * L);
  }
}

// Every row, in groups of R rows (R: as many as NB column vectors leave registers for).
template <int NB>
inline void narrow_groups(const NarrowGemm& s) {
  constexpr int R = fused_rows_for(NB);
  const int64_t groups = (s.rows + R - 1) / R;
  // A group is 2 R K N flops; fork for ~64K flops a task or more (at::parallel_for runs
  // inline below one grain, and always inside a parallel region).
  const int64_t grain =
      std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(1, 2 * R * s.K * s.N));
  at::parallel_for(0, groups, grain, [&](int64_t g0, int64_t g1) {
    auto f = [&]<int n>(int64_t b) { narrow_rows<NB, n>(s, b); };
    for (int64_t g = g0; g < g1; ++g)
      fused_rows_upto<R>(f, g * R, std::min<int64_t>(R, s.rows - g * R));
  });
}

// Narrow products of up to kNarrowCols vectors run as one column block with more rows per group
// (H = 32 on AVX-512: 12 rows of 2 vectors, not 6).
inline void narrow_gemm(const NarrowGemm& s) {
  const int64_t nv = s.N / FVec::size();
  if (nv == 1) return narrow_groups<1>(s);
  if (nv == 2) return narrow_groups<2>(s);
  if constexpr (kNarrowCols == 4) {
    if (nv == 3) return narrow_groups<3>(s);
  }
  narrow_groups<kNarrowCols>(s);
}

#endif  // AVX512 || AVX2

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
