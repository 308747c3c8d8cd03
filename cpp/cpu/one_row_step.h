// A one-row cell step (B = 1) without a workspace (inference; the Elman cell always) in one
// pass per block of hidden units: for units [j0, j0 + 32) the block's rows of every gate,
// x W_ih^T (+ b_ih) and h W_hh^T by the kernel table's row dots into stack buffers, then the
// family's pointwise kernel on the block. cell_forward's general path writes the [GH] input and
// hidden products to a scratch tensor, in two row-dot passes (two OpenMP regions once a step is
// worth threads), and reads them back in a third.
// Bits: each row's dot product is the same call as there (RowDot, per row, independent of the
// rows around it) and the pointwise kernel splits the units into whole vectors and a scalar
// tail at the same place (blocks are whole vectors of every table), so the results are those
// of the general path.
// Blocks run on threads from kSmallStepMacs multiply-adds a step (step_args.h), else on the
// caller.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>

#include "fusedrnn/layer_plan.h"
#include "fusedrnn/step_args.h"
#include "kernel_table.h"
#include "tuning.h"

namespace fusedrnn::cpu {

constexpr int64_t kOneRowUnits = 32;

// st: cell_forward's step (rows = 1, h / c / out at unit 0, no ws). False (nothing done) when
// the thin passes are off (tuning().thin): the general path then runs the GEMMs.
template <class Tr, class Kern, class T>
bool one_row_forward(const LayerPlan& p, const FwdStep<T>& st) {
  static_assert(std::is_same_v<Carry<T>, T>, "one_row_forward: float / double only");
  if (!tuning().thin || st.rows != 1 || st.ws) return false;
  constexpr int64_t G = Tr::kGates, U = kOneRowUnits;
  const int64_t H = p.H, I = p.I;
  const T *wih = p.w_ih.data_ptr<T>(), *whh = p.w_hh.data_ptr<T>();
  const T *x = p.x.data_ptr<T>(), *h0 = p.h0.data_ptr<T>();
  const T* bih = p.b_ih.defined() ? p.b_ih.data_ptr<T>() : nullptr;
  const T* bhh = st.b_hh;
  auto blocks = [&](int64_t k0, int64_t k1) {
    T xg[G * U], hg[G * U], b[G * U];  // the block's gates, gate-major as a row of H = n
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t j0 = k * U, n = std::min(U, H - j0);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t r0 = g * H + j0;
        if (bih) std::copy(bih + r0, bih + r0 + n, xg + g * n);
        if (bhh) std::copy(bhh + r0, bhh + r0 + n, b + g * n);
        row_dots(wih + r0 * I, I, n, I, x, xg + g * n, bih != nullptr);
        row_dots(whh + r0 * H, H, n, H, h0, hg + g * n, false);
      }
      FwdStep<T> s = st;
      s.H = n;
      s.xg = xg;
      s.hg = hg;
      s.b_hh = bhh ? b : nullptr;
      s.h = st.h + j0;
      s.c = st.c ? st.c + j0 : nullptr;
      s.out = st.out + j0;
      s.ld_out = n;
      Kern::template forward<T>(s);
    }
  };
  const int64_t n_blocks = (H + U - 1) / U;
  if (G * H * (I + H) < kSmallStepMacs || at::in_parallel_region()) {
    blocks(0, n_blocks);
  } else {
    at::parallel_for(0, n_blocks, 1, blocks);
  }
  return true;
}

}  // namespace fusedrnn::cpu
