// The arguments the CUDA backend passes to cuBLAS for one row-major GEMM, computed once for the
// GPU (cuda_backend.h) and the host emulation (emu/emu_backend.h), which checks them against
// cuBLAS's own argument rules before running the GEMM on the host: an argument that cuBLAS
// would reject with CUBLAS_STATUS_INVALID_VALUE (e.g. lda = 0 from an input of width I = 0)
// fails the emulated op instead of passing unnoticed through at::mm.
//
// Row-major C[M, N] = op(A) op(B) is the column-major C^T = op(B)^T op(A)^T: A and B swap.
// K = 0 never reaches cuBLAS (a [rows, 0] operand has ld 0): C = beta C is done by the caller
// (zero-fill for beta = 0, nothing for beta = 1; no other beta occurs in the driver).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

namespace fusedrnn::kernels {

struct CublasGemmArgs {
  bool trans_a = false, trans_b = false;  // column-major op(A), op(B) (A = row-major B)
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
};

inline CublasGemmArgs cublas_args(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda,
                                  int64_t ldb, int64_t ldc) {
  CublasGemmArgs g;
  g.trans_a = tb;
  g.trans_b = ta;
  g.m = N;
  g.n = M;
  g.k = K;
  g.lda = ldb;
  g.ldb = lda;
  g.ldc = ldc;
  return g;
}

// Empty when cuBLAS accepts the call (cublas<t>gemm / cublasGemmEx argument rules), else why not.
inline std::string cublas_args_error(const CublasGemmArgs& g) {
  auto need = [](int64_t v) { return std::max<int64_t>(1, v); };
  if (g.m < 0 || g.n < 0 || g.k < 0) return "negative m, n or k";
  if (g.lda < need(g.trans_a ? g.k : g.m))
    return "lda = " + std::to_string(g.lda) + " < max(1, " + (g.trans_a ? "k" : "m") + ")";
  if (g.ldb < need(g.trans_b ? g.n : g.k))
    return "ldb = " + std::to_string(g.ldb) + " < max(1, " + (g.trans_b ? "n" : "k") + ")";
  if (g.ldc < need(g.m)) return "ldc = " + std::to_string(g.ldc) + " < max(1, m)";
  return {};
}

}  // namespace fusedrnn::kernels
