// CPU pointwise passes of the GRU ops (gate order r, z, n; torch.nn's reset-after form
// n = tanh(x_n + r (W_hn h + b_hn))), registered by register.cpp.
//
// Forward step : reads xg [rows, 3H] (with b_ih), hg [rows, 3H], b_hh, the running h;
//                writes (=) out, h (in place), ws [rows, 4H] = [r | z | n | hn].
// Backward step: dh = dh_a + dh_b; writes (=) one row block of dG [rows, 4H] =
//                [dr | dz | dn r | dn]: the hidden side is its first 3H columns, the input
//                side columns 0:2H and 3H:4H (layer_driver.h BwdBuffers); dh_carry = z dh
//                (the driver then adds dG_h W_hh to it). The pointwise passes live in
//                pointwise.h (per-ISA tables). Small-H float32 layers fuse the recurrent
//                GEMM into the forward pass (gru_fused.h, FusedStepOf below): same writes.
#pragma once

#include "cpu_backend.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {

struct GruKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    kernels_for<T>().gru_forward(s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    kernels_for<T>().gru_backward(s);
  }
};

// float32 layers with H a multiple of the vector width, up to kFusedMaxH, run the fused step
// (gru_fused.h) on the AVX2 / AVX-512 tables (FusedLayerStep).
template <>
struct FusedStepOf<GruKernels, float> : FusedLayerStep<cpu::GruFusedStep, 3> {
  static bool takes_wide_input(const LayerPlan& p) {
    return FusedLayerStep::takes_wide_input(p, cpu::kernels().gru_fused);
  }
  FusedStepOf(const LayerPlan& p, const float* w_in, int64_t KI, bool per_step)
      : FusedLayerStep(p, w_in, KI, per_step, cpu::kernels().gru_fused) {}
  void operator()(const FwdStep<float>& st, const float* x_t) const {
    cpu::GruFusedStep s = args(st, x_t);
    s.ws = st.ws;
    s.ld_ws = st.ld_ws;
    step_(s);
  }
};

}  // namespace fusedrnn::cpu
