// Host emulation of cuda/gru_kernels.cuh: the GRU kernel bodies (kernels/gru.cuh) run over the
// CUDA grid on CPU tensors, registered by emu_register.cpp as torch.ops.fusedrnn_emu.gru_*.
// Forward writes (=) ws [rows, 4H], out, h; backward writes (=) dgh [rows, 4H] and
// dh_carry (in place over dh_b).
#pragma once

#include "../kernels/gru.cuh"
#include "emu_backend.h"

namespace fusedrnn::emu {

struct GruKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    if (s.out != s.h) poison(s.out, s.rows, s.H, s.ld_out);  // the cell ops: h' over h
    poison(s.ws, s.rows, 4 * s.H, s.ld_ws);
    launch_pointwise<&kernels::gru_forward_body<T>>(s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    poison(s.dgh, s.rows, 4 * s.H, s.ld_dg);
    launch_pointwise<&kernels::gru_backward_body<T>>(s.rows * s.H, s);
  }
};

}  // namespace fusedrnn::emu
