// Kernel bodies of the LSTM's fused pointwise passes (gate order i, f, g, o), one element
// (row b, unit j) per loop iteration, written once for the GPU and the host emulation.
//
// Layout: xg, hg [rows, 4H], b_hh [4H] (b_ih + b_hh folded by the driver, or b_hh alone when b_ih is in xg), h, c [rows, H],
// out [rows, ld_out] (the unprojected h buffer [rows, H] of a projected LSTM), ws [rows, ld_ws]
// = [i|f|g|o|c]. b_hh, c and dc are Carry<T> (float for half/bf16, see step_args.h); ws's c
// column is c rounded to T (what backward reads as c_prev).
// Forward : writes (=) ws (unless null), out, c (in place) and h (in place, unless write_h
//           is false).
// Backward: dh = dh_a + dh_b; reads ws and c_prev; writes (=) dgi [rows, 4H], dc <- dc_{t-1}
//           (in place, same element) and, for a projected LSTM, hraw (=) o tanh(c).
#pragma once

#include <ATen/OpMathType.h>

#include "fusedrnn/cell_math.h"
#include "fusedrnn/step_args.h"
#include "launch.cuh"

namespace fusedrnn::kernels {

template <class T>
FUSEDRNN_HD void lstm_forward_body(const FwdStep<T>& s, int64_t block, int64_t thread,
                                   const Launch& l) {
  using A = at::opmath_type<T>;
  const int64_t H = s.H, n = s.rows * H;
  for (int64_t e = first_element(block, thread, l); e < n; e += l.stride()) {
    const int64_t b = e / H, j = e - b * H;
    const T* xg = s.xg + b * 4 * H;
    const T* hg = s.hg + b * 4 * H;
    A a[4];
    for (int k = 0; k < 4; ++k) {
      const int64_t q = k * H + j;
      a[k] = A(xg[q]) + A(hg[q]) + (s.b_hh ? A(s.b_hh[q]) : A(0));
    }
    const auto r = math::lstm_forward<A>(a[0], a[1], a[2], a[3], A(s.c[e]));
    if (s.ws) {  // null: inference, nobody runs backward
      T* ws = s.ws + b * s.ld_ws;
      ws[j] = T(r.i);
      ws[H + j] = T(r.f);
      ws[2 * H + j] = T(r.g);
      ws[3 * H + j] = T(r.o);
      ws[4 * H + j] = T(r.c);
    }
    s.c[e] = r.c;  // Carry<T>: float for half/bf16 (step_args.h)
    s.out[b * s.ld_out + j] = T(r.h);
    if (s.write_h) s.h[e] = T(r.h);
  }
}

template <class T>
FUSEDRNN_HD void lstm_backward_body(const BwdStep<T>& s, int64_t block, int64_t thread,
                                    const Launch& l) {
  using A = at::opmath_type<T>;
  const int64_t H = s.H, n = s.rows * H;
  for (int64_t e = first_element(block, thread, l); e < n; e += l.stride()) {
    const int64_t b = e / H, j = e - b * H;
    const A dh =
        (s.dh_a ? A(s.dh_a[b * s.ld_a + j]) : A(0)) + (s.dh_b ? A(s.dh_b[b * s.ld_b + j]) : A(0));
    const T* ws = s.ws + b * s.ld_ws;
    const auto r =
        math::lstm_backward<A>(dh, A(s.dc[e]), A(ws[j]), A(ws[H + j]), A(ws[2 * H + j]),
                               A(ws[3 * H + j]), A(ws[4 * H + j]), A(s.c_prev[b * s.ld_c + j]));
    T* dg = s.dgi + b * 4 * H;
    dg[j] = T(r.dai);
    dg[H + j] = T(r.daf);
    dg[2 * H + j] = T(r.dag);
    dg[3 * H + j] = T(r.dao);
    s.dc[e] = r.dc_prev;  // Carry<T>
    if (s.hraw) s.hraw[e] = T(r.h);
  }
}

}  // namespace fusedrnn::kernels
