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
    poison(s.out, s.rows, s.H, s.ld_out);
    poison(s.ws, s.rows, 4 * s.H, s.ld_ws);
    run_grid(s.rows * s.H, [&](int64_t blk, int64_t thr, const kernels::Launch& l) {
      kernels::gru_forward_body(s, blk, thr, l);
    });
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    poison(s.dgh, s.rows, 4 * s.H, s.ld_dg);
    run_grid(s.rows * s.H, [&](int64_t blk, int64_t thr, const kernels::Launch& l) {
      kernels::gru_backward_body(s, blk, thr, l);
    });
  }
};

}  // namespace fusedrnn::emu
