// CPU pointwise passes of the Elman RNN ops (tanh and relu), registered by register.cpp.
//
// Forward step : h = act(xg + hg + b_hh), written (=) to out and the running state.
// Backward step: dgi = act'(h) * (dh_a + dh_b); h_t is read from the saved output.
// Nothing else is saved. The pointwise passes live in pointwise.h (per-ISA tables). Small-H
// float32 layers fuse the recurrent GEMM into the forward pass (rnn_fused.h, FusedStepOf
// below): same writes.
#pragma once

#include "cpu_backend.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {

template <bool kRelu>
struct RnnKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    (kRelu ? kernels_for<T>().rnn_relu_forward : kernels_for<T>().rnn_tanh_forward)(s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    (kRelu ? kernels_for<T>().rnn_relu_backward : kernels_for<T>().rnn_tanh_backward)(s);
  }
};

// float32 layers with H a multiple of the vector width, up to kFusedMaxH, run the fused step
// (rnn_fused.h) on the AVX2 / AVX-512 tables (FusedLayerStep).
template <bool kRelu>
struct FusedStepOf<RnnKernels<kRelu>, float> : FusedLayerStep<cpu::RnnFusedStep, 1> {
  static bool takes_wide_input(const LayerPlan& p) {
    return FusedStepOf::FusedLayerStep::takes_wide_input(p, cpu::kernels().rnn_fused);
  }
  FusedStepOf(const LayerPlan& p, const float* w_in, int64_t KI, bool per_step)
      : FusedStepOf::FusedLayerStep(p, w_in, KI, per_step, cpu::kernels().rnn_fused) {}
  void operator()(const FwdStep<float>& st, const float* x_t) const {
    cpu::RnnFusedStep s = this->args(st, x_t);
    s.relu = kRelu;
    this->step_(s);
  }
};

}  // namespace fusedrnn::cpu
