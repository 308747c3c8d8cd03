// Host emulation of the CUDA backend: the CUDA kernel bodies (cuda/kernels/*.cuh) compiled
// for the CPU and run over the grid/block decomposition that the CUDA launcher uses.
//
// Ops are registered in their own namespace, torch.ops.fusedrnn_emu (same schemas as
// torch.ops.fusedrnn, CPU tensors, float32/float64/float16/bfloat16), so tests can compare every op
// with the CPU backend. GEMMs use at::mm on the borrowed rows; add_rows runs its kernel body;
// copy_rows is a memcpy (cudaMemcpyAsync on the GPU). Every call is traced (emu_launch.h). Before
// every emulated kernel the rows it must write are poisoned with NaN, so an element the grid skips
// shows up in the comparison. Launch geometry: kThreads per block and a grid capped like on an H100
// (132 SMs x 8 blocks) by default; fusedrnn_emu::set_launch(threads, max_blocks, reverse) changes
// it (small caps exercise the grid-stride loops; reverse runs blocks and threads in reverse order).
// No kernel uses shared memory or __syncthreads, so the threads of a block run one by one.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cstring>
#include <limits>
#include <string>

#include "../kernels/cublas_args.h"
#include "../kernels/launch.cuh"
#include "emu_launch.h"
#include "fusedrnn/aten_gemm.h"
#include "fusedrnn/dtype_dispatch.h"
#include "fusedrnn/layer_driver.h"
#include "fusedrnn/step_args.h"

namespace fusedrnn::emu {

// Runs body(blockIdx, threadIdx, launch) for every thread of the grid that covers n elements.
template <class Body>
void run_grid(int64_t n, Body&& body) {
  if (n <= 0) return;
  note('K');
  const LaunchLimits& lim = limits();
  const kernels::Launch l = kernels::pointwise_launch(n, lim.threads, lim.max_blocks);
  for (int64_t bi = 0; bi < l.blocks; ++bi) {
    const int64_t blk = lim.reverse ? l.blocks - 1 - bi : bi;
    for (int64_t ti = 0; ti < l.threads; ++ti) {
      body(blk, lim.reverse ? l.threads - 1 - ti : ti, l);
    }
  }
}

// cuda_backend.h's launch_pointwise on the host: Body (a kernel body of kernels/*.cuh) over
// the grid that covers n elements, on one argument struct.
template <auto Body, class Args>
void launch_pointwise(int64_t n, const Args& args) {
  run_grid(n, [&](int64_t blk, int64_t thr, const kernels::Launch& l) { Body(args, blk, thr, l); });
}

// Fills rows [0, rows) x cols [0, cols) of a row-major matrix with leading dimension ld.
template <class T>
void poison(T* p, int64_t rows, int64_t cols, int64_t ld) {
  if (!p) return;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) p[r * ld + c] = std::numeric_limits<T>::quiet_NaN();
}

struct Blas {
  // What cuda_backend.h's CublasGemm does, with cuBLAS's argument rules checked on the
  // arguments it would pass (kernels/cublas_args.h), then the GEMM on the host.
  template <class T>
  static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {  // no cuBLAS call on the GPU either: a zero-fill (cudaMemset2DAsync) or nothing
      TORCH_INTERNAL_ASSERT(beta == T(0) || beta == T(1));
      if (beta == T(0)) {
        note('K');
        for (int64_t r = 0; r < M; ++r) std::memset(C + r * ldc, 0, size_t(N) * sizeof(T));
      }
      return;
    }
    note('G');
    const std::string err =
        kernels::cublas_args_error(kernels::cublas_args(ta, tb, M, N, K, lda, ldb, ldc));
    TORCH_CHECK(err.empty(), "fusedrnn_emu: cuBLAS would reject this GEMM (M=", M, " N=", N,
                " K=", K, "): ", err);
    ++trace().gemm_depth;
    try {
      aten_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } catch (...) {
      --trace().gemm_depth;
      throw;
    }
    --trace().gemm_depth;
  }
  template <class T>
  static void add_rows(int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
    const int64_t n = rows * cols;
    if (out != a && out != b) poison(out, rows, cols, cols);
    using A = at::opmath_type<T>;
    launch_pointwise<&kernels::add_rows_body<T, A>>(n, kernels::AddRows<T>{n, a, b, out});
  }
  template <class T>
  static void copy_rows(int64_t rows, int64_t cols, const T* src, T* dst) {
    if (rows * cols == 0 || src == dst) return;
    note('C');
    std::memcpy(dst, src, size_t(rows * cols) * sizeof(T));
  }
};

// The emulation's policy for the layer drivers (layer_driver.h): the GPU's (one row range, no
// fused step), with host GEMMs.
struct Backend {
  using Blas = fusedrnn::emu::Blas;
  template <class T>
  using WeightGemm = PlainWeightGemm<Blas, T>;
  using RowChunks = OneRange;
  template <class Kern, class T>
  using FusedStep = NoFusedStep<Kern, T>;
  template <class F>
  static void dispatch(at::ScalarType st, const char* op, F&& f) {
    dispatch_dtype<float, double, at::Half, at::BFloat16>(
        st, op, "float32, float64, float16 or bfloat16 (host emulation)", f);
  }
};

}  // namespace fusedrnn::emu
