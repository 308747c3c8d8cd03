// CUDA fused pointwise passes of the GRU (gate order r, z, n; reset applied to W_hn h + b_hn),
// registered by register.cu.
//
// Per step: hg [rows, 3H] from one cuBLAS GEMM; this kernel writes (=) ws [rows, 4H] =
// [r|z|n|hn], out and h (in place). Backward: writes (=) dgh = [dr, dz, dn r, dn] [rows, 4H]
// and dh_carry = z dh; the driver then adds (+=, beta = 1) dgh W_hh to dh_carry.
// Bodies in kernels/gru.cuh; 1-D grid-stride launch.
#pragma once

#include "cuda_backend.h"
#include "kernels/gru.cuh"

namespace fusedrnn::gpu {

struct GruKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    launch_pointwise<&kernels::gru_forward_body<T>>(s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    launch_pointwise<&kernels::gru_backward_body<T>>(s.rows * s.H, s);
  }
};

}  // namespace fusedrnn::gpu
