// CUDA fused pointwise passes of the LSTM (gate order i, f, g, o), registered by register.cu.
//
// Per step: hg [rows, 4H] from one cuBLAS GEMM; this kernel computes the gates, writes (=)
// ws [rows, 5H] = [i|f|g|o|c], c (in place), out (or the unprojected h buffer) and h.
// Backward: dh = dh_a + dh_b; writes (=) dgi [rows, 4H], dc <- dc_{t-1} (in place) and, when
// projected, hraw = o tanh(c). Bodies in kernels/lstm.cuh; 1-D grid-stride launch.
#pragma once

#include "cuda_backend.h"
#include "kernels/lstm.cuh"

namespace fusedrnn::gpu {

struct LstmKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    launch_pointwise<&kernels::lstm_forward_body<T>>(s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    launch_pointwise<&kernels::lstm_backward_body<T>>(s.rows * s.H, s);
  }
};

}  // namespace fusedrnn::gpu
