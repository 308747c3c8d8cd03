// Products with a thin side on the CPU (thin_products.cpp decides when they run; argument
// structs in kernel_table.h): the backward's bias gradients (column sums of dG), dW_ih = dG^T x
// for one or a few input features, and the LayerNorm input side's closed form (dY^T A, dY R).
// MKL runs these far below memory bandwidth: on an AMD EPYC (2 threads, MKL 2024.2, its
// mkl_blas_def_* code there) dY [15680, 128] times R [128, 2] took 1.1 ms, dY^T a 0.22 ms and the
// column sums as a GEMV 0.22 ms; these passes take 0.08, 0.05 and 0.05 ms.
//
// TallDot: out = X^T B (X [K, M] rows with stride ldx, B [K, J] with J <= 4, or ones), or the
// column sums of X * Y (elementwise: a LayerNorm weight's gradient, dy * xhat). Rows of X go in
// fixed blocks of kTallRows (more when X is taller: at most kTallBlocks blocks, so the partial
// rows stay within kTallBlocks J M values), each block's sums in registers, and the blocks'
// partial rows are added in block order afterwards: the bits do not depend on the thread count.
// (The LayerNorm column sums kept a block's running row in memory, a load and a store per
// vector and row: 6.2% of the sine LN-LSTM's training step in perf, against 4.9% here.)
//
// RowDot: out = X R (X [K, M] rows, R [M, J] with J <= 8, given transposed as rt [J, M]): a
// row's J dot products in registers; rows are independent.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "kernel_table.h"
#include "pointwise.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

constexpr int64_t kTallRows = 256, kTallBlocks = 256;

// Rows per block: a function of K alone, never of the thread count (the bits would change).
inline int64_t tall_block_rows(int64_t K) {
  return std::max(kTallRows, (K + kTallBlocks - 1) / kTallBlocks);
}

// acc[j][c + v L ...] (=) sum over rows [r0, r1) of x[r, c + ...] * b_j(r) (kY: times
// y[r, c + ...]) for NV vectors of columns from c (NV = 0: the scalar column c).
template <class T, int J, bool kY, int NV>
inline void tall_chunk(const TallDot<T>& s, int64_t r0, int64_t r1, int64_t c, T* acc) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t L = V::size();
  constexpr int W = NV == 0 ? 1 : NV;
  using Acc = std::conditional_t<NV == 0, T, V>;
  Acc a[J][W];
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < W; ++v) a[j][v] = Acc(T(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = s.x + r * s.ldx + c;
    const T* yr = kY ? s.y + r * s.ldy + c : nullptr;
    Acc bj[J];
    for (int j = 0; j < J; ++j) bj[j] = Acc(s.b ? s.b[r * s.b_rs + j * s.b_cs] : T(1));
#pragma GCC unroll 8
    for (int v = 0; v < W; ++v) {
      Acc xv = ld<T, Acc>(xr + v * L);
      if constexpr (kY) xv = xv * ld<T, Acc>(yr + v * L);
      for (int j = 0; j < J; ++j) a[j][v] = a[j][v] + xv * bj[j];
    }
  }
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < W; ++v) st<T, Acc>(acc + j * s.M + c + v * L, a[j][v]);
}

// One block's sums of all M columns into acc [J, M].
template <class T, int J, bool kY>
inline void tall_block(const TallDot<T>& s, int64_t r0, int64_t r1, T* acc) {
  constexpr int64_t L = at::vec::Vectorized<T>::size();
  constexpr int NV = J == 1 ? 8 : J == 2 ? 4 : 2;  // J * NV accumulators, within 16 registers
  int64_t c = 0;
  for (; c + NV * L <= s.M; c += NV * L) tall_chunk<T, J, kY, NV>(s, r0, r1, c, acc);
  for (; c + L <= s.M; c += L) tall_chunk<T, J, kY, 1>(s, r0, r1, c, acc);
  for (; c < s.M; ++c) tall_chunk<T, J, kY, 0>(s, r0, r1, c, acc);
}

template <class T, int J, bool kY = false>
inline void tall_dot_j(const TallDot<T>& s) {
  const int64_t M = s.M, rows = tall_block_rows(s.K), blocks = (s.K + rows - 1) / rows;
  std::vector<T> part(size_t(std::max<int64_t>(blocks, 1) * J * M), T(0));
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      tall_block<T, J, kY>(s, k * rows, std::min(s.K, (k + 1) * rows), part.data() + k * J * M);
  });
  for (int64_t k = 1; k < blocks; ++k) {  // in block order
    const T* p = part.data() + k * J * M;
    over_columns<T>(J * M, [&]<class V>(int64_t q) {
      st<T, V>(part.data() + q, ld<T, V>(part.data() + q) + ld<T, V>(p + q));
    });
  }
  for (int j = 0; j < J; ++j)
    for (int64_t m = 0; m < M; ++m) {
      T& o = s.out[m * s.out_m + j * s.out_j];
      o = s.accumulate ? o + part[j * M + m] : part[j * M + m];
    }
}

struct TallDotPass {
  template <class T>
  static void run(const TallDot<T>& s) {
    if (s.y) return tall_dot_j<T, 1, true>(s);
    switch (s.J) {
      case 1:
        return tall_dot_j<T, 1>(s);
      case 2:
        return tall_dot_j<T, 2>(s);
      case 3:
        return tall_dot_j<T, 3>(s);
      default:
        return tall_dot_j<T, 4>(s);
    }
  }
};

template <class T, int J>
inline void row_dot_j(const RowDot<T>& s) {
  if (s.M < at::vec::Vectorized<T>::size()) {
    // Rows shorter than a vector (an input projection of a few features): scalar sums, no
    // horizontal sum of an empty vector per row (most of the time of a 1-feature [256, 1]).
    over_rows(s.K, J * s.M, [&](int64_t k) {
      const T* xr = s.x + k * s.ldx;
      T* o = s.out + k * s.ldo;
      for (int j = 0; j < J; ++j) {
        T acc = T(0);
        for (int64_t q = 0; q < s.M; ++q) acc += xr[q] * s.rt[j * s.M + q];
        o[j] = s.accumulate ? o[j] + acc : acc;
      }
    });
    return;
  }
  over_rows(s.K, J * s.M, [&](int64_t k) {
    const T* xr = s.x + k * s.ldx;
    RowSum<T> acc[J];
    over_columns<T>(s.M, [&]<class V>(int64_t q) {
      const V xv = ld<T, V>(xr + q);
      for (int j = 0; j < J; ++j) acc[j].add(xv * ld<T, V>(s.rt + j * s.M + q));
    });
    T* o = s.out + k * s.ldo;
    for (int j = 0; j < J; ++j) o[j] = s.accumulate ? o[j] + acc[j].total() : acc[j].total();
  });
}

struct RowDotPass {
  template <class T>
  static void run(const RowDot<T>& s) {
    switch (s.J) {
      case 1:
        return row_dot_j<T, 1>(s);
      case 2:
        return row_dot_j<T, 2>(s);
      case 3:
        return row_dot_j<T, 3>(s);
      case 4:
        return row_dot_j<T, 4>(s);
      case 5:
        return row_dot_j<T, 5>(s);
      case 6:
        return row_dot_j<T, 6>(s);
      case 7:
        return row_dot_j<T, 7>(s);
      default:
        return row_dot_j<T, 8>(s);
    }
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
