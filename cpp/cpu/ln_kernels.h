// CPU passes of the LayerNorm LSTM / GRU stack ops (ln_lstm_stack, ln_gru_stack and their
// backward ops), registered by register.cpp. Equations, saved values and the time loop:
// ln_driver.h; workspace layout: ln_step_args.h; the passes (row statistics inside the fused
// pointwise pass, SIMD): ln_pointwise.h through the per-ISA tables (kernel_table.h).
#pragma once

#include "cpu_backend.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {

template <bool kLstm>
struct LnKernels {
  // A one-feature input's side is computed inside the step (LnFwdStep::xs): no [N, G*H] xg.
  static constexpr bool kScalarInput = true;
  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    kLstm ? kernels_for<T>().ln_lstm_forward(s) : kernels_for<T>().ln_gru_forward(s);
  }
  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    kLstm ? kernels_for<T>().ln_lstm_backward(s) : kernels_for<T>().ln_gru_backward(s);
  }
  template <class T>
  static void rows_forward(const LnRows<T>& s) {
    kernels_for<T>().ln_rows_forward(s);
  }
  template <class T>
  static void rows_backward(const LnRowsBwd<T>& s) {
    kernels_for<T>().ln_rows_backward(s);
  }
  // A LayerNorm weight's gradient: column sums of dy * xhat in one pass (ln_pointwise.h).
  template <class T>
  static at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& xhat) {
    at::Tensor out = at::empty({dy.size(1)}, dy.options());
    LnColDot<T> s;
    s.rows = dy.size(0);
    s.n = dy.size(1);
    s.a = dy.data_ptr<T>();
    s.lda = dy.stride(0);
    s.b = xhat.data_ptr<T>();
    s.ldb = xhat.stride(0);
    s.out = out.data_ptr<T>();
    kernels_for<T>().ln_col_dot(s);
    return out;
  }
};

}  // namespace fusedrnn::cpu
