// Host emulation of cuda/rnn_kernels.cuh: the Elman RNN kernel bodies (kernels/rnn.cuh) run
// over the CUDA grid on CPU tensors, registered by emu_register.cpp as
// torch.ops.fusedrnn_emu.rnn_{tanh,relu}_*.
// Forward writes (=) out rows and h; backward writes (=) dgi (see kernels/rnn.cuh).
#pragma once

#include "../kernels/rnn.cuh"
#include "emu_backend.h"

namespace fusedrnn::emu {

template <bool kRelu>
struct RnnKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    poison(s.out, s.rows, s.H, s.ld_out);
    launch_pointwise<&kernels::rnn_forward_body<kRelu, T>>(s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    poison(s.dgi, s.rows, s.H, s.H);
    launch_pointwise<&kernels::rnn_backward_body<kRelu, T>>(s.rows * s.H, s);
  }
};

}  // namespace fusedrnn::emu
