// The CPU pointwise kernels of every family (and the dropout mask sampler), as one table of
// function pointers per scalar type. capability.cpp is compiled once per instruction set (DEFAULT,
// and AVX2 / AVX512 on x86-64) and defines one table each; kernels() picks the table for this
// machine at run time (at::get_cpu_capability(), so ATEN_CPU_CAPABILITY=default forces the portable
// one).
#pragma once

#include <ATen/core/MT19937RNGEngine.h>

#include <cstdint>
#include <type_traits>

#include "fusedrnn/ln_step_args.h"
#include "fusedrnn/step_args.h"

namespace fusedrnn::cpu {

// out = X^T B (thin_products.h): X [K, M] rows (ldx), B [K, J] (element (k, j) at
// b[k b_rs + j b_cs]; null: ones, the column sums), J <= 4, or J > 4 whole vectors with
// b_cs = out_j = 1 (the wide pass); out (=) [M, J] at
// out[m out_m + j out_j] (+= with accumulate). With y (rows ldy, J = 1, b null): the column sums
// of X * Y.
template <class T>
struct TallDot {
  int64_t K = 0, M = 0, J = 0;
  const T* x = nullptr;
  int64_t ldx = 0;
  const T* y = nullptr;
  int64_t ldy = 0;
  const T* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  T* out = nullptr;
  int64_t out_m = 0, out_j = 0;
  bool accumulate = false;
};

// out = X R (thin_products.h): X [K, M] rows (ldx), R given transposed as rt [J, M]
// (contiguous), J <= 8; out (=, or += with accumulate) [K, J] rows (ldo).
template <class T>
struct RowDot {
  int64_t K = 0, M = 0, J = 0;
  const T* x = nullptr;
  int64_t ldx = 0;
  const T* rt = nullptr;
  T* out = nullptr;
  int64_t ldo = 0;
  bool accumulate = false;
};

// out = a b^T (thin_products.h): a [M] (stride as), b [N] contiguous, out [M, N] rows (ldo);
// each element the one product a_m b_n, as a GEMM with K = 1 gives it.
template <class T>
struct Outer {
  int64_t M = 0, N = 0;
  const T* a = nullptr;
  int64_t as = 1;
  const T* b = nullptr;
  T* out = nullptr;
  int64_t ldo = 0;
};

template <class T>
struct KernelTable {
  void (*rnn_tanh_forward)(const FwdStep<T>&);
  void (*rnn_tanh_backward)(const BwdStep<T>&);
  void (*rnn_relu_forward)(const FwdStep<T>&);
  void (*rnn_relu_backward)(const BwdStep<T>&);
  void (*lstm_forward)(const FwdStep<T>&);
  void (*lstm_backward)(const BwdStep<T>&);
  void (*gru_forward)(const FwdStep<T>&);
  void (*gru_backward)(const BwdStep<T>&);
  void (*ln_lstm_forward)(const LnFwdStep<T>&);
  void (*ln_lstm_backward)(const LnBwdStep<T>&);
  void (*ln_gru_forward)(const LnFwdStep<T>&);
  void (*ln_gru_backward)(const LnBwdStep<T>&);
  void (*ln_rows_forward)(const LnRows<T>&);
  void (*ln_rows_backward)(const LnRowsBwd<T>&);
  void (*tall_dot)(const TallDot<T>&);
  void (*row_dot)(const RowDot<T>&);
  void (*outer)(const Outer<T>&);
  // n draws of at::bernoulli_(p) from the engine state `mt`, advanced, ones written as `keep`
  // (mask_sampler.h).
  void (*bernoulli_mask)(at::mt19937_data_pod& mt, double p, T keep, T* out, int64_t n);
};

// One step of a fused small-H layer (lstm_fused.h, gru_fused.h, rnn_fused.h), what every
// family reads:
// rows of the running h [rows, P] (read as the GEMM input, then overwritten); xg [rows, G H]
// or null; x [rows, ldx] with I in-loop input columns (I = 0: none); b [G H] or null; out
// rows (ld_out); wp the packed [W_hh | W_ih]. No projection: P == H.
struct FusedStepRows {
  int64_t rows = 0, H = 0, P = 0, I = 0;
  const float* wp = nullptr;
  const float* xg = nullptr;
  const float* x = nullptr;
  int64_t ldx = 0;
  const float* b = nullptr;
  float* h = nullptr;
  float* out = nullptr;
  int64_t ld_out = 0;
};

// The LSTM's (G = 4): c [rows, H] in place; ws rows (ld_ws) or null.
struct LstmFusedStep : FusedStepRows {
  float* c = nullptr;
  float* ws = nullptr;
  int64_t ld_ws = 0;
};

// The GRU's (G = 3): ws rows (ld_ws) or null.
struct GruFusedStep : FusedStepRows {
  float* ws = nullptr;
  int64_t ld_ws = 0;
};

// The Elman RNN's (G = 1): relu, the activation (else tanh).
struct RnnFusedStep : FusedStepRows {
  bool relu = false;
};

// The LayerNorm LSTM's / GRU's (ln_fused.h): the driver's step arguments (hg
// unused: the step computes it) and the packed W_hh.
struct LnFusedStep {
  LnFwdStep<float> st;
  const float* wp = nullptr;
};

// Largest H of the fused steps: [W_hh | W_ih] stays in L2 and a row group's h on the stack.
constexpr int64_t kFusedMaxH = 128;

// C [rows, N] (=, or += with accumulate) A [rows, K] (lda) W [K, N] (ldw): a product with a
// narrow row-major weight (narrow_gemm.h: N a multiple of `lanes`, at most kNarrowMaxN).
struct NarrowGemm {
  int64_t rows = 0, K = 0, N = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const float* w = nullptr;
  int64_t ldw = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};
struct NarrowGemmKernel {
  int64_t lanes = 0;  // 0: this table has none
  void (*run)(const NarrowGemm&) = nullptr;
};
constexpr int64_t kNarrowMaxN = 128;

// A fused step's entry points in one table: pack [W_hh | W_ih] (into the size the step's
// header names), then one call per time step.
template <class Step>
struct FusedKernels {
  int64_t lanes = 0;  // H must be a multiple; 0: this table has no fused step
  void (*pack)(const float* whh, int64_t P, const float* wih, int64_t I, int64_t H, float* dst);
  void (*step)(const Step&);
};
using LstmFused = FusedKernels<LstmFusedStep>;
using RnnFused = FusedKernels<RnnFusedStep>;
using GruFused = FusedKernels<GruFusedStep>;
using LnFused = FusedKernels<LnFusedStep>;

struct KernelTables {
  const char* isa;
  KernelTable<float> f32;
  KernelTable<double> f64;
  LstmFused lstm_fused;
  RnnFused rnn_fused;
  GruFused gru_fused;
  LnFused ln_lstm_fused, ln_gru_fused;
  NarrowGemmKernel narrow_gemm;
};

extern const KernelTables kernels_DEFAULT;
#if defined(FUSEDRNN_X86_DISPATCH)
extern const KernelTables kernels_AVX2;
extern const KernelTables kernels_AVX512;
#endif

// The table for this machine (chosen once).
const KernelTables& kernels();

template <class T>
const KernelTable<T>& kernels_for() {
  if constexpr (std::is_same_v<T, float>) {
    return kernels().f32;
  } else {
    return kernels().f64;
  }
}

// out[r] (=, or += with accumulate) W[r, :M] . v for r < rows: the row-dot pass, one column.
template <class T>
void row_dots(const T* W, int64_t ldw, int64_t rows, int64_t M, const T* v, T* out,
              bool accumulate) {
  RowDot<T> s;
  s.K = rows;
  s.M = M;
  s.J = 1;
  s.x = W;
  s.ldx = ldw;
  s.rt = v;
  s.out = out;
  s.ldo = 1;
  s.accumulate = accumulate;
  kernels_for<T>().row_dot(s);
}

// out [M, N] (rows ldo) = a b^T, a [M] with stride as, b [N] contiguous: the outer pass.
template <class T>
void outer(int64_t M, int64_t N, const T* a, int64_t as, const T* b, T* out, int64_t ldo) {
  Outer<T> s;
  s.M = M;
  s.N = N;
  s.a = a;
  s.as = as;
  s.b = b;
  s.out = out;
  s.ldo = ldo;
  kernels_for<T>().outer(s);
}

}  // namespace fusedrnn::cpu
