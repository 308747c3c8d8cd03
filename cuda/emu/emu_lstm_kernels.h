// Host emulation of cuda/lstm_kernels.cuh: the LSTM kernel bodies (kernels/lstm.cuh) run over
// the CUDA grid on CPU tensors, registered by emu_register.cpp as torch.ops.fusedrnn_emu.lstm_*.
// Forward writes (=) ws [rows, 5H], out, c, h; backward writes (=) dgi [rows, 4H], dc, hraw.
#pragma once

#include "../kernels/lstm.cuh"
#include "emu_backend.h"

namespace fusedrnn::emu {

struct LstmKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    poison(s.out, s.rows, s.H, s.ld_out);
    poison(s.ws, s.rows, 5 * s.H, s.ld_ws);
    launch_pointwise<&kernels::lstm_forward_body<T>>(s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    poison(s.dgi, s.rows, 4 * s.H, 4 * s.H);
    poison(s.hraw, s.rows, s.H, s.H);
    launch_pointwise<&kernels::lstm_backward_body<T>>(s.rows * s.H, s);
  }
};

}  // namespace fusedrnn::emu
