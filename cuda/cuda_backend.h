// CUDA backend of the layer driver: row-major GEMMs through cuBLAS (torch's handle), row
// copies/sums, dtype dispatch, and the launcher of the fused pointwise kernels.
//
// Everything runs on at::cuda::getCurrentCUDAStream() of the current device (the ops set it
// from the input with a device guard): no private streams or events, so CUDA-graph capture
// works. Row-major C[M,N] = alpha op(A) op(B) + beta C maps to the column-major call
// C^T = op(B)^T op(A)^T. half/bf16 GEMMs accumulate in float (cublasGemmEx, compute 32F), the
// pointwise kernels compute in at::opmath_type<T> (float for half/bf16, double for double).
// Sizes are int64; every launch is checked with C10_CUDA_KERNEL_LAUNCH_CHECK.
#pragma once

#include "fusedrnn/dtype_dispatch.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <cublas_v2.h>

#include <limits>
#include <type_traits>

#include "kernels/launch.cuh"

namespace fusedrnn::gpu {

// Most blocks a pointwise grid gets: enough to fill every SM; larger problems grid-stride.
inline int64_t max_pointwise_blocks() {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t per_sm = prop->maxThreadsPerMultiProcessor / kernels::kThreads;
  return int64_t(prop->multiProcessorCount) * (per_sm > 0 ? per_sm : 1);
}

// Launches `kernel(args..., launch)` over n elements on the current stream (nothing if n = 0).
template <class... KArgs, class... Args>
void launch_pointwise(void (*kernel)(KArgs...), int64_t n, Args&&... args) {
  if (n <= 0) return;
  const kernels::Launch l = kernels::pointwise_launch(n, kernels::kThreads, max_pointwise_blocks());
  kernel<<<dim3(unsigned(l.blocks)), dim3(unsigned(l.threads)), 0,
           at::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)..., l);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <class T>
__global__ void __launch_bounds__(kernels::kThreads)
    add_rows_kernel(int64_t n, const T* a, const T* b, T* out, kernels::Launch l) {
  kernels::add_rows_body<T, at::opmath_type<T>>(n, a, b, out, blockIdx.x, threadIdx.x, l);
}

struct Blas {
  // cuBLAS on torch's handle for the current stream (it carries torch's workspace and TF32
  // math mode). ATen's at::cuda::blas::gemm is not exported by libtorch_cuda, hence direct calls.
  template <class T>
  static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    constexpr int64_t kMax = std::numeric_limits<int>::max();
    TORCH_CHECK(M <= kMax && N <= kMax && K <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
                "fusedrnn (CUDA): GEMM size exceeds cuBLAS's int range: M=", M, " N=", N, " K=", K);
    const cublasHandle_t h = at::cuda::getCurrentCUDABlasHandle();
    const cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // column-major: swap A, B
    const cublasOperation_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int m = int(N), n = int(M), k = int(K), la = int(ldb), lb = int(lda), lc = int(ldc);
    if constexpr (std::is_same_v<T, float>) {
      TORCH_CUDABLAS_CHECK(cublasSgemm(h, opa, opb, m, n, k, &alpha, B, la, A, lb, &beta, C, lc));
    } else if constexpr (std::is_same_v<T, double>) {
      TORCH_CUDABLAS_CHECK(cublasDgemm(h, opa, opb, m, n, k, &alpha, B, la, A, lb, &beta, C, lc));
    } else {
      static_assert(std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>);
      constexpr cudaDataType_t dt = std::is_same_v<T, at::Half> ? CUDA_R_16F : CUDA_R_16BF;
      const float fa = float(alpha), fb = float(beta);  // accumulate in float
      TORCH_CUDABLAS_CHECK(cublasGemmEx(h, opa, opb, m, n, k, &fa, B, dt, la, A, dt, lb, &fb, C,
                                        dt, lc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }

  // out[rows, cols] = a + b (a may be null); all contiguous.
  template <class T>
  static void add_rows(int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
    launch_pointwise(&add_rows_kernel<T>, rows * cols, rows * cols, a, b, out);
  }

  template <class T>
  static void copy_rows(int64_t rows, int64_t cols, const T* src, T* dst) {
    if (rows * cols == 0 || src == dst) return;
    C10_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(rows * cols) * sizeof(T),
                                   cudaMemcpyDeviceToDevice, at::cuda::getCurrentCUDAStream()));
  }
};

struct Backend {
  using Blas = fusedrnn::gpu::Blas;
  template <class F>
  static void dispatch(at::ScalarType st, const char* op, F&& f) {
    dispatch_dtype<float, double, at::Half, at::BFloat16>(st, op, "float32, float64, float16 or bfloat16 on CUDA", f);
  }
};

}  // namespace fusedrnn::gpu
