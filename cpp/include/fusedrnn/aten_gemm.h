// Row-major C[M, N] = alpha op(A) op(B) + beta C on raw host pointers through ATen (at::mm_out /
// addmm_ on borrowed blobs). Used where no direct BLAS call applies: the CPU backend's
// fallback (no sgemm_/dgemm_ exported, or sizes beyond int) and the CUDA host emulation.
#pragma once

#include <ATen/ATen.h>

namespace fusedrnn {

template <class T>
void aten_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
               const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto mat = [&](const T* p, int64_t r, int64_t c, int64_t ld, bool t) {
    auto m = at::from_blob(const_cast<T*>(p), {t ? c : r, t ? r : c}, {ld, 1}, opts);
    return t ? m.t() : m;
  };
  at::Tensor a = mat(A, M, K, lda, ta), b = mat(B, K, N, ldb, tb);
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  if (beta == T(0)) {
    at::mm_out(c, a, b);
    if (alpha != T(1)) c.mul_(alpha);
  } else {
    c.addmm_(a, b, beta, alpha);
  }
}

}  // namespace fusedrnn
