// CPU pointwise passes of the Elman RNN ops (tanh and relu), registered by register.cpp.
//
// Forward step : h = act(xg + hg + b_hh), written (=) to out and the running state.
// Backward step: dgi = act'(h) * (dh_a + dh_b); h_t is read from the saved output.
// Nothing else is saved. The pointwise passes live in pointwise.h (per-ISA tables).
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

}  // namespace fusedrnn::cpu
