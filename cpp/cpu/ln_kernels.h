// CPU passes of the LayerNorm LSTM / GRU stack ops (ln_lstm_stack, ln_gru_stack and their
// backward ops), registered by register.cpp. Equations, saved values and the time loop:
// ln_driver.h; workspace layout: ln_step_args.h; the passes (row statistics inside the fused
// pointwise pass, SIMD): ln_pointwise.h through the per-ISA tables (kernel_table.h).
#pragma once

#include "cpu_backend.h"
#include "fusedrnn/ln_driver.h"
#include "fusedrnn/thin_products.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {

// The recurrent GEMM inside the forward pass (ln_fused.h), where it was measured faster than
// MKL's call: batches up to kLnFusedMaxBatch rows, float32, H a multiple of the vector width
// up to kFusedMaxH, T >= 2 (W_hh is packed once per layer call, so the cells' single steps
// keep the BLAS path), on the AVX-512 table (capability.cpp); tuning().fuse = false
// (FUSEDRNN_NO_FUSE=1) turns it off. Other types: never (ln_driver.h's LnFusedStepFor).
// Alternating runs, 2 threads, against the BLAS path:
//  - inference, B <= 64 (stock: H = 64, B = 32, 2 layers): LSTM 1.21x, GRU 1.16x (1 thread
//    1.12x, 1.10x); H = 32 to 128: 1.05-1.33x;
//  - larger batches, where MKL's blocking pays: B = 784 0.93-1.01x, B = 128 0.92-1.04x;
//  - training steps (forward and backward; the GEMM on row groups, the pass writing the
//    workspace one row at a time, ln_fused.h), 21 in-process rounds: stock LSTM 1.05-1.08x,
//    GRU 1.03-1.09x (1 thread 1.04-1.05x, 0.99-1.03x); H = 128 B = 32 GRU 1.08-1.12x,
//    B = 8 LSTM 1.08x, B = 2 LSTM 1.2-1.5x. (The pass on four rows' interleaved workspace
//    streams had made training 0.92-1.07x.)
constexpr int64_t kLnFusedMaxBatch = 64;

template <bool kLstm, class T>
struct LnFusedStepOf : NoLnFusedStep {
  using NoLnFusedStep::NoLnFusedStep;
};

template <bool kLstm>
class LnFusedStepOf<kLstm, float> {
 public:
  explicit LnFusedStepOf(const LayerPlan& p) {
    constexpr int G = kLstm ? 4 : 3;
    const LnFused& f = kLstm ? kernels().ln_lstm_fused : kernels().ln_gru_fused;
    // the plain steps' rule (switch, table, T, H), then the batch limit
    if (!FusedLayerStep<LnFusedStep, G>::applies(p, f) || p.B > kLnFusedMaxBatch) return;
    wp_ = at::empty({G * p.H * p.H}, at::kFloat);
    f.pack(p.w_hh.data_ptr<float>(), p.H, nullptr, 0, p.H, wp_.data_ptr<float>());
    step_ = f.step;
  }
  bool active() const { return step_ != nullptr; }
  void operator()(const LnFwdStep<float>& st) const {
    step_(LnFusedStep{st, wp_.data_ptr<float>()});
  }

 private:
  at::Tensor wp_;
  void (*step_)(const LnFusedStep&) = nullptr;
};

template <bool kLstm>
struct LnKernels {
  template <class T>
  using FusedStep = LnFusedStepOf<kLstm, T>;
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
  // A LayerNorm weight's gradient: column sums of dy * xhat in one pass (thin_products.h).
  template <class T>
  static at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& xhat) {
    return column_product_sums<T>(dy, xhat);
  }
};

}  // namespace fusedrnn::cpu
