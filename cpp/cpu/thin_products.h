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
//
// Outer: out = a b^T, the weight gradients of a one-row backward (dG^T x, dG^T h_prev at B =
// 1). MKL ran that K = 1 GEMM on one thread (mkl_blas_def_xsgemmger): ~20% of an LSTM cell's
// training step at H = 256 (1.5 MB of gradients written), against two threads here.
//
// Wide TallDot: out = X^T B with J > 4 whole vectors (up to 64 columns; B's and out's rows
// unit-stride): dW_hh = dG^T h_prev at H = 16..64. MKL's def path spent ~40% of that product
// packing (scopy); this pass reads the tensors in place. dG^T h_prev at the sine shape ([96,
// 14896] x [14896, 32], 2 threads) took 0.57-0.69 ms in MKL and 0.41-0.44 ms here; K = 928,
// J = 64 (the stock shapes) 1.0-1.3x, at one thread 1.2-1.4x.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
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

// The blocks' partial sums (`blocks` of s.M J values each, block k at part + k s.M J) added
// in block order into the first, which is then written (=, or += with accumulate) to out's J
// columns; the first block holds element (m, j) at part[m pm + j pj].
template <class T>
inline void add_blocks_to_out(const TallDot<T>& s, int64_t J, T* part, int64_t blocks, int64_t pm,
                              int64_t pj) {
  const int64_t n = s.M * J;
  for (int64_t k = 1; k < blocks; ++k) {  // in block order
    const T* p = part + k * n;
    over_columns<T>(
        n, [&]<class V>(int64_t q) { st<T, V>(part + q, ld<T, V>(part + q) + ld<T, V>(p + q)); });
  }
  for (int64_t m = 0; m < s.M; ++m)
    for (int64_t j = 0; j < J; ++j) {
      T& o = s.out[m * s.out_m + j * s.out_j];
      o = s.accumulate ? o + part[m * pm + j * pj] : part[m * pm + j * pj];
    }
}

template <class T, int J, bool kY = false>
inline void tall_dot_j(const TallDot<T>& s) {
  const int64_t M = s.M, rows = tall_block_rows(s.K), blocks = (s.K + rows - 1) / rows;
  std::vector<T> part(size_t(std::max<int64_t>(blocks, 1) * J * M), T(0));
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      tall_block<T, J, kY>(s, k * rows, std::min(s.K, (k + 1) * rows), part.data() + k * J * M);
  });
  add_blocks_to_out(s, J, part.data(), blocks, 1, M);  // part: [blocks][J][M]
}

// Wide: vectorised along j (B's rows) with X's values broadcast, a tile of MT x JV vectors in
// registers (acc[i][v] += x[r, m0 + i] * b[r, j0 + v L ...]). Partial sums per block of rows,
// added in block order, as tall_dot_j.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kWideAcc = 24;  // of 32 vector registers
#else
constexpr int kWideAcc = 12;  // of 16
#endif
constexpr int kWideMaxJV = 4;

template <class T, int MT, int JV>
inline void wide_tile(const TallDot<T>& s, int64_t r0, int64_t r1, int64_t m0, int64_t j0,
                      T* part) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t L = V::size();
  V acc[MT][JV];
  for (int i = 0; i < MT; ++i)
    for (int v = 0; v < JV; ++v) acc[i][v] = V(T(0));
  for (int64_t r = r0; r < r1; ++r) {
    const T* br = s.b + r * s.b_rs + j0;
    const T* xr = s.x + r * s.ldx + m0;
    V bv[JV];
    for (int v = 0; v < JV; ++v) bv[v] = V::loadu(br + v * L);
    for (int i = 0; i < MT; ++i) {
      const V xb(xr[i]);
      for (int v = 0; v < JV; ++v) acc[i][v] = at::vec::fmadd(xb, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MT; ++i)
    for (int v = 0; v < JV; ++v) acc[i][v].store(part + (m0 + i) * s.J + j0 + v * L);
}

// Rows [r0, r1) of one block over all M: tiles of MT rows of out, then of MT / 2, MT / 4 and
// single rows (single rows alone for M = 32's tail of 8 ran at 0.95x MKL on one thread).
template <class T, int JV>
inline void wide_columns(const TallDot<T>& s, int64_t r0, int64_t r1, int64_t j0, T* part) {
  constexpr int MT = kWideAcc / JV, MT2 = std::max(MT / 2, 1), MT4 = std::max(MT / 4, 1);
  int64_t m0 = 0;
  for (; m0 + MT <= s.M; m0 += MT) wide_tile<T, MT, JV>(s, r0, r1, m0, j0, part);
  for (; m0 + MT2 <= s.M; m0 += MT2) wide_tile<T, MT2, JV>(s, r0, r1, m0, j0, part);
  for (; m0 + MT4 <= s.M; m0 += MT4) wide_tile<T, MT4, JV>(s, r0, r1, m0, j0, part);
  for (; m0 < s.M; ++m0) wide_tile<T, 1, JV>(s, r0, r1, m0, j0, part);
}

// J a multiple of the vector width (thin_mm takes whole 64-byte vectors only: a partial last
// vector, loaded and stored under a mask, ran at half MKL's speed).
template <class T>
inline void wide_block(const TallDot<T>& s, int64_t r0, int64_t r1, T* part) {
  constexpr int64_t L = at::vec::Vectorized<T>::size();
  for (int64_t j0 = 0; j0 < s.J; j0 += kWideMaxJV * L) {
    switch (std::min<int64_t>(kWideMaxJV, (s.J - j0) / L)) {
      case 1:
        wide_columns<T, 1>(s, r0, r1, j0, part);
        break;
      case 2:
        wide_columns<T, 2>(s, r0, r1, j0, part);
        break;
      case 3:
        wide_columns<T, 3>(s, r0, r1, j0, part);
        break;
      default:
        wide_columns<T, 4>(s, r0, r1, j0, part);
    }
  }
}

// Blocks of rows: at least kTallRows rows each (fewer, longer blocks ran faster: 64-row blocks
// cost 1.3x at K = 1001), kWideBlocks at most (each holds M J partial sums), a function of K
// alone (the bits never depend on the thread count).
constexpr int64_t kWideBlocks = 16;

template <class T>
inline void tall_wide(const TallDot<T>& s) {
  const int64_t M = s.M, J = s.J;
  const int64_t rows = std::max(kTallRows, (s.K + kWideBlocks - 1) / kWideBlocks);
  const int64_t blocks = std::max<int64_t>(1, (s.K + rows - 1) / rows);
  std::unique_ptr<T[]> part(new T[size_t(blocks * M * J)]);  // every element is stored
  at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      wide_block<T>(s, std::min(s.K, k * rows), std::min(s.K, (k + 1) * rows),
                    part.get() + k * M * J);
  });
  add_blocks_to_out(s, J, part.get(), blocks, J, 1);  // part: [blocks][M][J]
}

struct TallDotPass {
  template <class T>
  static void run(const TallDot<T>& s) {
    if (s.y) return tall_dot_j<T, 1, true>(s);
    if (s.J > 4 && s.b && s.b_cs == 1 && s.out_j == 1) return tall_wide<T>(s);  // thin_mm's
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

// Rows of the outer product in parallel (over_rows: from 16K elements), each a vector pass.
template <class T>
inline void outer_product(const Outer<T>& s) {
  over_rows(s.M, s.N, [&](int64_t m) {
    const T am = s.a[m * s.as];
    T* o = s.out + m * s.ldo;
    over_columns<T>(s.N, [&]<class V>(int64_t n) { st<T, V>(o + n, V(am) * ld<T, V>(s.b + n)); });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
