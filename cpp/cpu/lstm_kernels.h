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
// kFusedMaxH, run the fused step (lstm_fused.h) on the AVX2 / AVX-512 tables (FusedLayerStep).
template <>
struct FusedStepOf<LstmKernels, float> : FusedLayerStep<cpu::LstmFusedStep, 4> {
  static bool takes_wide_input(const LayerPlan& p) {
    return FusedLayerStep::takes_wide_input(p, cpu::kernels().lstm_fused);
  }
  FusedStepOf(const LayerPlan& p, const float* w_in, int64_t KI, bool per_step)
      : FusedLayerStep(p, w_in, KI, per_step, cpu::kernels().lstm_fused) {}
  void operator()(const FwdStep<float>& st, const float* x_t) const {
    cpu::LstmFusedStep s = args(st, x_t);
    s.c = st.c;
    s.ws = st.ws;
    s.ld_ws = st.ld_ws;
    step_(s);
  }
};

}  // namespace fusedrnn::cpu
