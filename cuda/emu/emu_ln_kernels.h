// Host emulation of cuda/ln_kernels.cuh, registered by emu_register.cpp: the LayerNorm
// programs of kernels/ln.cuh run on CPU tensors as a legal schedule of the GPU's, as
// torch.ops.fusedrnn_emu.ln_lstm_stack, ln_gru_stack and their backward ops.
//
// The grid is the GPU's (ln_launch: one block per row, grid-stride over rows), with the block
// size capped by set_launch's threads instead of kLnThreads and the blocks capped by its
// max_blocks. For each row of each block, each phase runs for every thread of the block (each
// with its own per-thread state) before the next phase starts; between phases the block
// reduction is done on the host in the GPU's order of additions (ln_host_block_sum). Under
// set_launch(..., reverse=True) blocks and threads run in reverse order. Outputs are poisoned
// with NaN first (not those that alias an input: in-place rows, running states, dh_carry), so
// an element no thread writes shows up in the comparison.
#pragma once

#include <vector>

#include "../kernels/ln.cuh"
#include "emu_backend.h"
#include "fusedrnn/stack_entries.h"

namespace fusedrnn::emu {

template <class P>
void run_program(const typename P::Args& s, int64_t width) {
  using A = typename P::A;
  const int64_t rows = P::rows(s);
  if (rows <= 0) return;
  note('K');
  const LaunchLimits& lim = limits();
  const kernels::LnLaunch l = kernels::ln_launch(rows, width, lim.threads, lim.max_blocks);
  std::vector<typename P::State> st(size_t(l.threads));
  std::vector<kernels::LnSums<A>> part(size_t(l.threads));
  for (int64_t bi = 0; bi < l.blocks; ++bi) {
    const int64_t blk = lim.reverse ? l.blocks - 1 - bi : bi;
    for (int64_t b = blk; b < rows; b += l.blocks) {
      for (auto& x : st) x = typename P::State{};
      kernels::LnSums<A> in{A(0), A(0)};
      for (int p = 0; p < P::kPhases; ++p) {
        for (int64_t ti = 0; ti < l.threads; ++ti) {
          const int64_t t = lim.reverse ? l.threads - 1 - ti : ti;
          part[size_t(t)] = P::phase(p, s, b, t, l.threads, in, st[size_t(t)]);
        }
        // __syncthreads inside the block reduction
        if (p + 1 < P::kPhases) in = kernels::ln_host_block_sum(part.data(), l.threads);
      }
    }
  }
}

template <bool kLstm>
struct LnKernels {
  static constexpr bool kScalarInput = false;  // the input side comes as xg (as on the GPU)
  static constexpr int G = kLstm ? 4 : 3;
  // A LayerNorm weight's gradient (column sums of dy * xhat) with ATen ops (ln_driver.h).
  template <class T>
  static at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& xhat) {
    return ln_weight_grad(dy, xhat);
  }

  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    // Not the input side's columns of ws (xhat, rstd_ih): rows_forward wrote them before.
    const LnWs L{G, s.H};
    poison(s.out, s.rows, s.H, s.ld_out);
    poison(s.ws, s.rows, L.xhat(), s.ld_ws);
    poison(s.ws ? s.ws + L.rstd_hh() : nullptr, s.rows, kLstm ? 2 : 1, s.ld_ws);
    if constexpr (kLstm) {
      run_program<kernels::LnLstmForward<T>>(s, s.H);
    } else {
      run_program<kernels::LnGruForward<T>>(s, s.H);
    }
  }
  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    const int64_t GH = G * s.H;
    poison(s.dgi, s.rows, GH, GH);
    poison(s.dgh, s.rows, GH, GH);
    poison(s.dgn, s.rows, GH, GH);
    poison(s.dcn, s.rows, s.H, s.H);
    if constexpr (kLstm) {
      run_program<kernels::LnLstmBackward<T>>(s, s.H);
    } else {
      run_program<kernels::LnGruBackward<T>>(s, s.H);
    }
  }
  template <class T>
  static void rows_forward(const LnRows<T>& s) {
    if (s.y != s.v) poison(s.y, s.rows, s.n, s.ld_y);
    poison(s.xhat, s.rows, s.n, s.ld_ws);
    poison(s.rstd, s.rows, 1, s.ld_ws);
    run_program<kernels::LnRowsForward<T>>(s, s.n);
  }
  template <class T>
  static void rows_backward(const LnRowsBwd<T>& s) {
    if (s.dv != s.dy) poison(s.dv, s.rows, s.n, s.ld_dv);
    run_program<kernels::LnRowsBackward<T>>(s, s.n);
  }
};

}  // namespace fusedrnn::emu
