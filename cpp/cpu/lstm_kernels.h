// CPU pointwise passes of the LSTM ops (gate order i, f, g, o; optional projection),
// registered by register.cpp.
//
// Forward step : a = xg + hg + b_hh [rows, 4H]; i,f,o = sigmoid, g = tanh; c = f c' + i g;
//                h = o tanh(c). Writes (=) out (or the unprojected h buffer), the running h/c
//                (in place) and ws [rows, 5H] = [i | f | g | o | c].
// Backward step: dh = dh_a + dh_b, dc (in/out); writes (=) dgi [rows, 4H], dc <- dc f, and
//                hraw = o tanh(c) for the projection's weight gradient.
// The pointwise passes live in pointwise.h (per-ISA tables). Small-H float32 layers fuse the
// recurrent GEMM into the forward pass (lstm_fused.h, FusedStepOf below): same writes.
#pragma once

#include "cpu_backend.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {

struct LstmKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    kernels_for<T>().lstm_forward(s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    kernels_for<T>().lstm_backward(s);
  }
};

// float32 LSTMs without projection and with H a multiple of the vector width, up to
// kLstmFusedMaxH, run the fused step (lstm_fused.h) on the AVX2 / AVX-512 tables; the weights
// are packed once per layer call, so single steps (the cell ops) keep the BLAS path.
// tuning().fuse = false (fusedrnn.tuning, or FUSEDRNN_NO_FUSE=1) turns it off.
template <>
struct FusedStepOf<LstmKernels, float> {
  static bool applies(const LayerPlan& p) {
    const cpu::LstmFused& f = cpu::kernels().lstm_fused;
    return cpu::tuning().fuse && f.step && !p.proj && p.T >= 2 && p.H <= cpu::kLstmFusedMaxH &&
           p.H % f.lanes == 0;
  }
  // The input projection of a stacked layer (I = H or 2H) in registers with the recurrent
  // one: no [N, 4H] buffer written by a GEMM and read back per step.
  static bool takes_wide_input(const LayerPlan& p) {
    return applies(p) && p.I <= 2 * cpu::kLstmFusedMaxH;
  }
  FusedStepOf(const LayerPlan& p, const float* w_in, int64_t KI, bool per_step) {
    if (!applies(p)) return;
    const cpu::LstmFused& f = cpu::kernels().lstm_fused;
    s_.H = p.H;
    s_.P = p.P;
    s_.I = per_step ? KI : 0;
    wp_ = at::empty({4 * p.H * (p.P + s_.I)}, at::kFloat);
    f.pack(ptr<float>(p.w_hh), p.P, w_in, s_.I, p.H, wp_.data_ptr<float>());
    s_.wp = wp_.data_ptr<float>();
    s_.ldx = KI;
    step_ = f.step;
  }
  bool active() const { return step_ != nullptr; }
  void operator()(const FwdStep<float>& st, const float* x_t) const {
    cpu::LstmFusedStep s = s_;
    s.rows = st.rows;
    s.xg = st.xg;
    s.x = x_t;
    s.b = st.b_hh;
    s.h = st.h;
    s.c = st.c;
    s.out = st.out;
    s.ld_out = st.ld_out;
    s.ws = st.ws;
    s.ld_ws = st.ld_ws;
    step_(s);
  }

 private:
  cpu::LstmFusedStep s_;
  at::Tensor wp_;
  void (*step_)(const cpu::LstmFusedStep&) = nullptr;
};

}  // namespace fusedrnn::cpu
