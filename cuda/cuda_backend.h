// CUDA backend of the layer driver: row-major GEMMs through cuBLAS (torch's handle), row
// copies/sums, dtype dispatch, and the launcher of the fused pointwise kernels.
//
// Everything runs on at::cuda::getCurrentCUDAStream() of the current device (the ops set it
// from the input with a device guard): no private streams or events, so CUDA-graph capture
// works. Row-major C[M,N] = alpha op(A) op(B) + beta C maps to the column-major call
// C^T = op(B)^T op(A)^T (kernels/cublas_args.h). half/bf16 GEMMs accumulate in float
// (cublasGemmEx, compute 32F); the pointwise kernels compute in at::opmath_type<T> (float for
// half/bf16, double for double), and carries across steps stay in it (step_args.h).
// Sizes are int64; every launch is checked with C10_CUDA_KERNEL_LAUNCH_CHECK.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/Exceptions.h>
#include <c10/cuda/CUDAException.h>
#include <cublas_v2.h>

#include <limits>
#include <type_traits>

#include "fusedrnn/dtype_dispatch.h"
#include "fusedrnn/layer_driver.h"
#include "kernels/cublas_args.h"
#include "kernels/launch.cuh"

namespace fusedrnn::gpu {

// Most blocks a pointwise grid gets: enough to fill every SM; larger problems grid-stride.
inline int64_t max_pointwise_blocks() {
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t per_sm = prop->maxThreadsPerMultiProcessor / kernels::kThreads;
  return int64_t(prop->multiProcessorCount) * (per_sm > 0 ? per_sm : 1);
}

// The one __global__ of the fused pointwise passes: Body, a kernel body of kernels/*.cuh
// (also run by the host emulation), over the grid on its argument struct (FwdStep, BwdStep,
// AddRows), e.g. pointwise_kernel<&kernels::lstm_forward_body<float>, FwdStep<float>>.
template <auto Body, class Args>
__global__ void __launch_bounds__(kernels::kThreads)
    pointwise_kernel(Args args, kernels::Launch l) {
  Body(args, blockIdx.x, threadIdx.x, l);
}

// Launches Body over n elements on the current stream (nothing if n = 0).
template <auto Body, class Args>
void launch_pointwise(int64_t n, const Args& args) {
  if (n <= 0) return;
  const kernels::Launch l = kernels::pointwise_launch(n, kernels::kThreads, max_pointwise_blocks());
  pointwise_kernel<Body, Args><<<dim3(unsigned(l.blocks)), dim3(unsigned(l.threads)), 0,
                                 at::cuda::getCurrentCUDAStream()>>>(args, l);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// torch's cuBLAS handle for the current stream, fetched once per layer call (not per GEMM:
// getCurrentCUDABlasHandle looks up the handle pool and resets stream, workspace and math mode
// on every call), and the GEMM of one dtype on it. half/bf16 run cublasGemmEx with float
// accumulation and honour torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction /
// allow_bf16_reduced_precision_reduction as ATen's at::cuda::blas::gemm does (the math mode is
// set around each call and restored). float keeps the handle's math mode (torch's TF32 flag).
template <class T>
class CublasGemm {
 public:
  CublasGemm() : h_(at::cuda::getCurrentCUDABlasHandle()) {
    if constexpr (kHalfLike) {
      TORCH_CUDABLAS_CHECK(cublasGetMathMode(h_, &restore_));
      const auto opt = std::is_same_v<T, at::Half> ? at::globalContext().allowFP16ReductionCuBLAS()
                                                   : at::globalContext().allowBF16ReductionCuBLAS();
      mode_ = opt == at::CuBLASReductionOption::AllowReducedPrecisionWithSplitK
                  ? CUBLAS_DEFAULT_MATH
                  : cublasMath_t(CUBLAS_DEFAULT_MATH |
                                 CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    }
  }

  void operator()(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                  int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) const {
    if (M == 0 || N == 0) return;
    if (K == 0) {  // C = beta C; cuBLAS would reject the ld 0 of the [rows, 0] operands
      const float b = float(beta);  // (at::Half == at::Half is ambiguous under nvcc)
      TORCH_INTERNAL_ASSERT(b == 0.f || b == 1.f, "fusedrnn (CUDA): K = 0 GEMM with beta ", b);
      if (b == 0.f)
        C10_CUDA_CHECK(cudaMemset2DAsync(C, size_t(ldc) * sizeof(T), 0, size_t(N) * sizeof(T),
                                         size_t(M), at::cuda::getCurrentCUDAStream()));
      return;
    }
    constexpr int64_t kMax = std::numeric_limits<int>::max();
    TORCH_CHECK(M <= kMax && N <= kMax && K <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax,
                "fusedrnn (CUDA): GEMM size exceeds cuBLAS's int range: M=", M, " N=", N, " K=", K);
    const kernels::CublasGemmArgs g = kernels::cublas_args(ta, tb, M, N, K, lda, ldb, ldc);
    const cublasOperation_t opa = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int m = int(g.m), n = int(g.n), k = int(g.k);
    const int la = int(g.lda), lb = int(g.ldb), lc = int(g.ldc);
    if constexpr (std::is_same_v<T, float>) {
      TORCH_CUDABLAS_CHECK(cublasSgemm(h_, opa, opb, m, n, k, &alpha, B, la, A, lb, &beta, C, lc));
    } else if constexpr (std::is_same_v<T, double>) {
      TORCH_CUDABLAS_CHECK(cublasDgemm(h_, opa, opb, m, n, k, &alpha, B, la, A, lb, &beta, C, lc));
    } else {
      constexpr cudaDataType_t dt = std::is_same_v<T, at::Half> ? CUDA_R_16F : CUDA_R_16BF;
      const float fa = float(alpha), fb = float(beta);  // accumulate in float
      TORCH_CUDABLAS_CHECK(cublasSetMathMode(h_, mode_));
      const cublasStatus_t st = cublasGemmEx(h_, opa, opb, m, n, k, &fa, B, dt, la, A, dt, lb, &fb,
                                             C, dt, lc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      TORCH_CUDABLAS_CHECK(cublasSetMathMode(h_, restore_));
      TORCH_CUDABLAS_CHECK(st);
    }
  }

 private:
  static constexpr bool kHalfLike = std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>;
  static_assert(kHalfLike || std::is_same_v<T, float> || std::is_same_v<T, double>);
  cublasHandle_t h_;
  cublasMath_t mode_ = CUBLAS_DEFAULT_MATH, restore_ = CUBLAS_DEFAULT_MATH;
};

struct Blas {
  // Row-major GEMMs (see the header comment); one-off calls fetch the handle themselves, the
  // time loop's per-step GEMMs go through CublasWeightGemm<T> below (handle held).
  template <class T>
  static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    CublasGemm<T>()(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  // out[rows, cols] = a + b (a may be null); all contiguous.
  template <class T>
  static void add_rows(int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
    using A = at::opmath_type<T>;  // (no `>>>` after a template argument list in CUDA code)
    launch_pointwise<&kernels::add_rows_body<T, A>>(rows * cols,
                                                    kernels::AddRows<T>{rows * cols, a, b, out});
  }

  template <class T>
  static void copy_rows(int64_t rows, int64_t cols, const T* src, T* dst) {
    if (rows * cols == 0 || src == dst) return;
    C10_CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(rows * cols) * sizeof(T),
                                   cudaMemcpyDeviceToDevice, at::cuda::getCurrentCUDAStream()));
  }
};

// The per-step GEMM against a fixed weight (layer_driver.h) with the cuBLAS handle fetched
// once, when the driver builds it at the start of a layer call.
template <class T>
struct CublasWeightGemm {
  CublasWeightGemm(bool transW, int64_t N, int64_t K, const T* W, int64_t ldw, int64_t = 0)
      : transW_(transW), N_(N), K_(K), W_(W), ldw_(ldw) {}
  void operator()(int64_t rows, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    gemm_(false, transW_, rows, N_, K_, T(1), A, lda, W_, ldw_, beta, C, ldc);
  }

 private:
  bool transW_;
  int64_t N_, K_;
  const T* W_;
  int64_t ldw_;
  CublasGemm<T> gemm_;
};

// The GPU's policy for the layer drivers (layer_driver.h): cuBLAS on the current stream, one
// row range (the GPU parallelises inside each step), no fused step.
struct Backend {
  using Blas = fusedrnn::gpu::Blas;
  template <class T>
  using WeightGemm = CublasWeightGemm<T>;
  using RowChunks = OneRange;
  template <class Kern, class T>
  using FusedStep = NoFusedStep<Kern, T>;
  template <class F>
  static void dispatch(at::ScalarType st, const char* op, F&& f) {
    dispatch_dtype<float, double, at::Half, at::BFloat16>(
        st, op, "float32, float64, float16 or bfloat16 on CUDA", f);
  }
};

}  // namespace fusedrnn::gpu
