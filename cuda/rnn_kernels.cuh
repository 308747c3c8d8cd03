// CUDA fused pointwise passes of the Elman RNN (tanh and relu), registered by register.cu.
//
// Per step: hg [rows, H] comes from one cuBLAS GEMM (layer_driver.h); this kernel computes
// h = act(xg + hg + b_hh) and writes (=) it to the output rows and the running state.
// Backward: dgi [rows, H] (=) act'(h_t) (dh_a + dh_b), h_t read from the saved output.
// Bodies live in kernels/rnn.cuh (also run by the host emulation); 1-D grid-stride launch.
#pragma once

#include "cuda_backend.h"
#include "kernels/rnn.cuh"

namespace fusedrnn::gpu {

template <bool kRelu>
struct RnnKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    launch_pointwise<&kernels::rnn_forward_body<kRelu, T>>(s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    launch_pointwise<&kernels::rnn_backward_body<kRelu, T>>(s.rows * s.H, s);
  }
};

}  // namespace fusedrnn::gpu
