// CPU backend: BLAS for the per-step GEMMs, row copies, dtype dispatch, and the threading
// rule of the pointwise passes.
//
// Per-step GEMMs call the BLAS that libtorch_cpu exports (sgemm_/dgemm_, LP64) directly,
// skipping the dispatcher; they are weak symbols, and a torch without them falls back to
// at::mm_out on borrowed pointers. Row-major C[M,N] = alpha op(A) op(B) + beta C maps to the
// column-major call C^T = op(B)^T op(A)^T.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "fusedrnn/aten_gemm.h"
#include "fusedrnn/dtype_dispatch.h"
#include "fusedrnn/layer_driver.h"
#include "kernel_table.h"
#include "one_row_step.h"
#include "tuning.h"

extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
// MKL's packed GEMM (float): pack the weight once per layer call, not once per step.
size_t sgemm_pack_get_size(const char* id, const int* m, const int* n, const int* k)
    __attribute__((weak));
void sgemm_pack(const char* id, const char* trans, const int* m, const int* n, const int* k,
                const float* alpha, const float* src, const int* ld, float* dest)
    __attribute__((weak));
void sgemm_compute(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                   const float* a, const int* lda, const float* b, const int* ldb,
                   const float* beta, float* c, const int* ldc) __attribute__((weak));
// MKL's per-thread thread count (0: back to the global one); returns the previous value.
// The C entry point: the lower-case names are the Fortran ones (int* argument).
int MKL_Set_Num_Threads_Local(int nt) __attribute__((weak));
}

namespace fusedrnn::cpu {

struct Blas {
  template <class T>
  static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (M == 1 && !ta && alpha == T(1) && thin_row(tb, N, K, B, ldb, A, beta, C)) return;
    if (K == 1 && !tb && alpha == T(1) && beta == T(0) && thin_outer(ta, M, N, A, lda, B, C, ldc))
      return;
    constexpr int64_t kMax = std::numeric_limits<int>::max();
    const bool fits = M < kMax && N < kMax && K < kMax && lda < kMax && ldb < kMax && ldc < kMax;
    const char opa = ta ? 'T' : 'N', opb = tb ? 'T' : 'N';
    const int m = int(N), n = int(M), k = int(K), la = int(ldb), lb = int(lda), lc = int(ldc);
    if constexpr (std::is_same_v<T, float>) {
      if (sgemm_ && fits && K > 0) {
        sgemm_(&opb, &opa, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
        return;
      }
    } else if constexpr (std::is_same_v<T, double>) {
      if (dgemm_ && fits && K > 0) {
        dgemm_(&opb, &opa, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
        return;
      }
    }
    aten_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  // C [1, N] (=, or += when beta is 1) a [1, K] op(W) on the kernel table's thin passes (a cell
  // step at B = 1, the last rows of a packed batch, dh_prev = dG W_hh at B = 1): op(W) = W^T for
  // W [N, K] is N row dot products (RowDot), W [K, N] the column sums of W's rows weighted by a
  // (TallDot). MKL's GEMV (mkl_blas_def_xsgemv) took 28 us for [1, 256] x [256, 1024] on an AMD
  // EPYC (2 threads), RowDot 10 us. False (nothing done) unless tuning().thin and beta is 0 or 1.
  template <class T>
  static bool thin_row(bool transW, int64_t N, int64_t K, const T* W, int64_t ldw, const T* a,
                       T beta, T* c) {
    if (!cpu::tuning().thin || (beta != T(0) && beta != T(1))) return false;
    if (transW) {
      row_dots(W, ldw, N, K, a, c, beta == T(1));
    } else {
      TallDot<T> s;
      s.K = K;
      s.M = N;
      s.J = 1;
      s.x = W;
      s.ldx = ldw;
      s.b = a;
      s.b_rs = 1;
      s.out = c;
      s.out_m = 1;
      s.accumulate = beta == T(1);
      kernels_for<T>().tall_dot(s);
    }
    return true;
  }

  // C [M, N] = op(A) [M, 1] B [1, N] (a GEMM with K = 1, beta 0) on the kernel table's outer
  // pass: every element the one product, as MKL's. False (nothing done) unless tuning().thin.
  template <class T>
  static bool thin_outer(bool transA, int64_t M, int64_t N, const T* A, int64_t lda, const T* B,
                         T* C, int64_t ldc) {
    if (!cpu::tuning().thin) return false;
    // A [1, M] read along its row, or A [M, 1] down its column.
    outer(M, N, A, transA ? 1 : lda, B, C, ldc);
    return true;
  }

  template <class T>
  static void add_rows(int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
    for (int64_t i = 0; i < rows * cols; ++i) out[i] = (a ? a[i] : T(0)) + b[i];
  }

  template <class T>
  static void copy_rows(int64_t rows, int64_t cols, const T* src, T* dst) {
    std::memcpy(dst, src, sizeof(T) * rows * cols);
  }
};

// float on MKL: the recurrent weight is packed once per layer call (sgemm_pack) and each step
// runs sgemm_compute on it, which skips re-packing W every step (about 7% of a mid-size LSTM
// forward in perf). Col-major view as in Blas::gemm: C^T = op(W)^T A^T, W is operand "A".
struct PackedWeightGemm {
  // Packing costs about one GEMM and MKL pads the buffer generously (MiBs for a 256 x 64
  // weight), so it needs a few steps to pay off (tuning().pack_min_steps, 8: stock LSTM
  // inference, T = 30, runs ~7% faster than unpacked in alternating A/B runs) and a buffer
  // that stays small next to the weight; tuning().pack turns it off (for A/B timing).
  PackedWeightGemm(bool transW, int64_t N, int64_t K, const float* W, int64_t ldw, int64_t steps)
      : plain_(transW, N, K, W, ldw), N_(int(N)), K_(int(K)) {
    constexpr int64_t kMax = std::numeric_limits<int>::max() / 4;
    if (!W || N == 0 || K == 0 || N > kMax || K > kMax || ldw > kMax) return;
    const cpu::Tuning& tune = cpu::tuning();
    // A narrow W (the backward's dh = dG W_hh at small H): the register kernel, no packing.
    const NarrowGemmKernel& nk = kernels().narrow_gemm;
    if (!transW && tune.fuse && nk.run && N % nk.lanes == 0 && N <= kNarrowMaxN) {
      narrow_.K = K;
      narrow_.N = N;
      narrow_.w = W;
      narrow_.ldw = ldw;
      narrow_run_ = nk.run;
      return;
    }
    if (!tune.pack || steps < tune.pack_min_steps) return;
    if (!sgemm_pack_get_size || !sgemm_pack || !sgemm_compute) return;
    const char id = 'A', tr = transW ? 'T' : 'N';
    const int n = 1, ld = int(ldw);
    const float one = 1.f;
    const size_t bytes = sgemm_pack_get_size(&id, &N_, &n, &K_);
    if (bytes > 2 * sizeof(float) * size_t(N * K) + (size_t(1) << 20)) return;
    packed_ = at::empty({int64_t(bytes / sizeof(float)) + 16}, at::kFloat);
    sgemm_pack(&id, &tr, &N_, &n, &K_, &one, W, &ld, packed_.data_ptr<float>());
  }

  void operator()(int64_t rows, const float* A, int64_t lda, float beta, float* C,
                  int64_t ldc) const {
    if (narrow_run_ && rows >= 2) {
      NarrowGemm g = narrow_;
      g.rows = rows;
      g.a = A;
      g.lda = lda;
      g.c = C;
      g.ldc = ldc;
      g.accumulate = beta != 0.f;
      if (beta == 0.f || beta == 1.f) {
        narrow_run_(g);
        return;
      }
    }
    // One row: Blas::gemm's thin pass (thin_row) beats the packed GEMM too.
    if (!packed_.defined() || rows > std::numeric_limits<int>::max() / 4 ||
        (rows == 1 && cpu::tuning().thin)) {
      plain_(rows, A, lda, beta, C, ldc);
      return;
    }
    if (rows == 0) return;
    const char ta = 'P', tb = 'N';
    const int n = int(rows), la = N_, lb = int(lda), lc = int(ldc);
    sgemm_compute(&ta, &tb, &N_, &n, &K_, packed_.data_ptr<float>(), &la, A, &lb, &beta, C, &lc);
  }

 private:
  PlainWeightGemm<Blas, float> plain_;
  int N_, K_;
  at::Tensor packed_;
  NarrowGemm narrow_;
  void (*narrow_run_)(const NarrowGemm&) = nullptr;
};

// Row-parallel time loops. Small per-step GEMMs (stock: [32 x 64] x [64 x 256]) gain nothing
// from MKL's threads, and the pointwise pass would pay an OpenMP fork per step, so each
// thread runs the whole time loop of its own batch rows with single-threaded GEMMs and no
// per-step synchronisation. Large steps keep MKL's threading, which splits the weight
// instead of streaming all of it through every thread. tuning().chunk_rows (fewest rows per
// thread) and chunk_max_mflop (largest step that is split) set the rule (tuning.h).
struct ThreadRowChunks {
  template <class F>
  static void run(int64_t B, double step_flops, F&& f) {
    const cpu::Tuning& tune = cpu::tuning();
    const int64_t min_rows = std::max<int64_t>(1, tune.chunk_rows);
    const double max_flops = 1e6 * double(tune.chunk_max_mflop);
    const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
    const int64_t chunks = std::min(threads, B / min_rows);
    if (chunks < 2 || step_flops > max_flops) {
      f(int64_t(0), B);
      return;
    }
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      // MKL would still fork inside this OpenMP region: one thread per chunk.
      const int prev = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
      for (int64_t c = c0; c < c1; ++c) f(B * c / chunks, B * (c + 1) / chunks);
      if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(prev);
    });
  }
};

// The fused step of a family (FusedStep in layer_driver.h): none, except where specialised
// (the float32 small-H LSTM, GRU and Elman RNN: lstm_kernels.h, gru_kernels.h, rnn_kernels.h).
template <class Kern, class T>
struct FusedStepOf : NoFusedStep<Kern, T> {
  using NoFusedStep<Kern, T>::NoFusedStep;
};

// What the fused small-H float32 steps (lstm_fused.h, gru_fused.h, rnn_fused.h) share as a
// layer driver's FusedStep: where they apply, and [W_hh | W_ih] packed once per layer call
// (kGates H rows), so single steps (the cell ops, T = 1) keep the BLAS path. tuning().fuse =
// false (fusedrnn.tuning, or FUSEDRNN_NO_FUSE=1) turns them off.
template <class Step, int kGates>
class FusedLayerStep {
 public:
  static bool applies(const LayerPlan& p, const cpu::FusedKernels<Step>& f) {
    return cpu::tuning().fuse && f.step && !p.proj && p.T >= 2 && p.H <= cpu::kFusedMaxH &&
           p.H % f.lanes == 0;
  }
  // The input projection of a stacked layer (I = H or 2H) in registers with the recurrent
  // one: no [N, kGates H] buffer written by a GEMM and read back per step.
  static bool takes_wide_input(const LayerPlan& p, const cpu::FusedKernels<Step>& f) {
    return applies(p, f) && p.I <= 2 * cpu::kFusedMaxH;
  }
  FusedLayerStep(const LayerPlan& p, const float* w_in, int64_t KI, bool per_step,
                 const cpu::FusedKernels<Step>& f) {
    if (!applies(p, f)) return;
    s_.H = p.H;
    s_.P = p.P;
    s_.I = per_step ? KI : 0;
    wp_ = at::empty({kGates * p.H * (p.P + s_.I)}, at::kFloat);
    f.pack(p.w_hh.data_ptr<float>(), p.P, w_in, s_.I, p.H, wp_.data_ptr<float>());
    s_.wp = wp_.data_ptr<float>();
    s_.ldx = KI;
    step_ = f.step;
  }
  bool active() const { return step_ != nullptr; }

 protected:
  // The step's arguments from the driver's: those of FusedStepRows (x_t: the step's input
  // rows when the step projects it, else null); the family sets its own.
  Step args(const FwdStep<float>& st, const float* x_t) const {
    Step s = s_;
    s.rows = st.rows;
    s.xg = st.xg;
    s.x = x_t;
    s.b = st.b_hh;
    s.h = st.h;
    s.out = st.out;
    s.ld_out = st.ld_out;
    return s;
  }

  Step s_;  // H, P, I, wp, ldx: fixed for the layer call
  at::Tensor wp_;
  void (*step_)(const Step&) = nullptr;
};

// The CPU's policy for the layer drivers (layer_driver.h): BLAS called directly, the float
// recurrent weight packed once per layer call, row-parallel time loops, the fused small-H
// LSTM, GRU and RNN steps, float and double.
struct Backend {
  using Blas = fusedrnn::cpu::Blas;
  template <class T>
  using WeightGemm =
      std::conditional_t<std::is_same_v<T, float>, PackedWeightGemm, PlainWeightGemm<Blas, T>>;
  using RowChunks = ThreadRowChunks;
  template <class Kern, class T>
  using FusedStep = FusedStepOf<Kern, T>;
  // cell_forward's one-row steps without a workspace (one_row_step.h); false: not taken.
  static constexpr bool kOneRowStep = true;
  template <class Tr, class Kern, class T>
  static bool one_row_forward(const LayerPlan& p, const FwdStep<T>& st) {
    return cpu::one_row_forward<Tr, Kern, T>(p, st);
  }
  template <class F>
  static void dispatch(at::ScalarType st, const char* op, F&& f) {
    dispatch_dtype<float, double>(st, op, "float32 or float64 on CPU", f);
  }
};

}  // namespace fusedrnn::cpu
