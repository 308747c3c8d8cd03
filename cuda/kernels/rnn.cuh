// Kernel bodies of the Elman RNN's fused pointwise passes (tanh or relu), one element
// (row b, unit j) per loop iteration, written once for the GPU and the host emulation.
//
// Layout: xg, hg [rows, H] (ld H), b_hh [H], h [rows, H], out [rows, ld_out].
// Forward : h = act(xg + hg + b_hh), written (=) to out and to the running h (in place).
// Backward: dgi [rows, H] (=) act'(h_t) * (dh_a + dh_b); h_t is the saved output (ws, ld_ws).
// Nothing else is saved; every element is read and written by the same thread.
#pragma once

#include <ATen/OpMathType.h>

#include "fusedrnn/cell_math.h"
#include "fusedrnn/step_args.h"
#include "launch.cuh"

namespace fusedrnn::kernels {

template <bool kRelu, class T>
FUSEDRNN_HD void rnn_forward_body(const FwdStep<T>& s, int64_t block, int64_t thread,
                                  const Launch& l) {
  using A = at::opmath_type<T>;
  const int64_t H = s.H, n = s.rows * H;
  for (int64_t e = first_element(block, thread, l); e < n; e += l.stride()) {
    const int64_t b = e / H, j = e - b * H;
    const A pre = A(s.xg[e]) + A(s.hg[e]) + (s.b_hh ? A(s.b_hh[j]) : A(0));
    const T v = T(math::rnn_act<kRelu>(pre));
    s.out[b * s.ld_out + j] = v;
    s.h[e] = v;
  }
}

template <bool kRelu, class T>
FUSEDRNN_HD void rnn_backward_body(const BwdStep<T>& s, int64_t block, int64_t thread,
                                   const Launch& l) {
  using A = at::opmath_type<T>;
  const int64_t H = s.H, n = s.rows * H;
  for (int64_t e = first_element(block, thread, l); e < n; e += l.stride()) {
    const int64_t b = e / H, j = e - b * H;
    const A dh = (s.dh_a ? A(s.dh_a[b * s.ld_a + j]) : A(0)) +
                 (s.dh_b ? A(s.dh_b[b * s.ld_b + j]) : A(0));
    s.dgi[e] = T(math::rnn_act_backward<kRelu>(dh, A(s.ws[b * s.ld_ws + j])));
  }
}

}  // namespace fusedrnn::kernels
