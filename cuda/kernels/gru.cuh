// Kernel bodies of the GRU's fused pointwise passes (gate order r, z, n; torch.nn's
// reset-after form n = tanh(x_n + r (W_hn h + b_hn))), one element (row b, unit j) per loop
// iteration, written once for the GPU and the host emulation.
//
// Layout: xg, hg [rows, 3H] (xg includes b_ih), b_hh [3H], h [rows, H], out [rows, ld_out],
// ws [rows, ld_ws] = [r | z | n | hn].
// Forward : writes (=) ws (unless null), out and h (in place).
// Backward: dh = dh_a + dh_b; writes (=) dgh = [dr, dz, dn r, dn] [rows, 4H] (ld_dg): the
//           hidden side is its first 3H columns, the input side columns (0:2H, 3H:4H)
//           and dh_carry (=) z dh (may alias dh_b: same element, same thread); the driver
//           then adds dgh W_hh to dh_carry. Half/bf16 (dh_f set): dh also adds dh_f, and
//           z dh goes (=) to dh_f in float; dh_b then holds only dgh W_hh (step_args.h).
//           b_hh is Carry<T>.
#pragma once

#include <ATen/OpMathType.h>

#include "fusedrnn/cell_math.h"
#include "fusedrnn/step_args.h"
#include "launch.cuh"

namespace fusedrnn::kernels {

template <class T>
FUSEDRNN_HD void gru_forward_body(const FwdStep<T>& s, int64_t block, int64_t thread,
                                  const Launch& l) {
  using A = at::opmath_type<T>;
  const int64_t H = s.H, n = s.rows * H;
  for (int64_t e = first_element(block, thread, l); e < n; e += l.stride()) {
    const int64_t b = e / H, j = e - b * H;
    const T* xg = s.xg + b * 3 * H;
    const T* hg = s.hg + b * 3 * H;
    const Carry<T>* bh = s.b_hh;
    const A hr = A(hg[j]) + (bh ? A(bh[j]) : A(0));
    const A hz = A(hg[H + j]) + (bh ? A(bh[H + j]) : A(0));
    const A hn = A(hg[2 * H + j]) + (bh ? A(bh[2 * H + j]) : A(0));
    const auto r =
        math::gru_forward<A>(A(xg[j]), A(xg[H + j]), A(xg[2 * H + j]), hr, hz, hn, A(s.h[e]));
    if (s.ws) {  // null: inference, nobody runs backward
      T* ws = s.ws + b * s.ld_ws;
      ws[j] = T(r.r);
      ws[H + j] = T(r.z);
      ws[2 * H + j] = T(r.n);
      ws[3 * H + j] = T(r.hn);
    }
    s.out[b * s.ld_out + j] = T(r.h);
    s.h[e] = T(r.h);
  }
}

template <class T>
FUSEDRNN_HD void gru_backward_body(const BwdStep<T>& s, int64_t block, int64_t thread,
                                   const Launch& l) {
  using A = at::opmath_type<T>;
  const int64_t H = s.H, n = s.rows * H;
  for (int64_t e = first_element(block, thread, l); e < n; e += l.stride()) {
    const int64_t b = e / H, j = e - b * H;
    const A dh = (s.dh_a ? A(s.dh_a[b * s.ld_a + j]) : A(0)) +
                 (s.dh_b ? A(s.dh_b[b * s.ld_b + j]) : A(0)) + (s.dh_f ? A(s.dh_f[e]) : A(0));
    const T* ws = s.ws + b * s.ld_ws;
    const auto r = math::gru_backward<A>(dh, A(ws[j]), A(ws[H + j]), A(ws[2 * H + j]),
                                         A(ws[3 * H + j]), A(s.h_prev[e]));
    T* g = s.dgh + b * s.ld_dg;
    g[j] = T(r.dr);
    g[H + j] = T(r.dz);
    g[2 * H + j] = T(r.dhn);
    g[3 * H + j] = T(r.dn);
    if (s.dh_f) {  // wide carry (half/bf16): the direct path stays in float
      s.dh_f[e] = r.dh_prev;
    } else {
      s.dh_carry[e] = T(r.dh_prev);
    }
  }
}

}  // namespace fusedrnn::kernels
