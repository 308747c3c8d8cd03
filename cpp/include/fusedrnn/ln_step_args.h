// Plain-pointer arguments of the LayerNorm LSTM / GRU kernels (CPU and CUDA), one step or one
// block of rows. LN(v; w) = w (v - mean v) rstd, rstd = 1 / sqrt(var v + 1e-5), biased variance,
// over a row (ln_driver.h has the equations). Float and double only: no wide carries.
//
// Workspace row (saved for backward), ln_ws_cols(G, H) wide:
//   LSTM [i f g o c (5H) | chat (H) | hhat (4H) | xhat (4H) | rstd_hh, rstd_c, rstd_ih]
//   GRU  [r z n ghn (4H) | hhat (3H) | xhat (3H) | rstd_hh, rstd_ih]
// c is the un-normalised cell state (the carry), chat = (c - mean) rstd_c, hhat / xhat the
// normalised recurrent / input projections, ghn = LN(h W_hn^T)_n + b_hn (GRU).
#pragma once

#include <cstdint>

namespace fusedrnn {

constexpr double kLnEps = 1e-5;

// Rows padded to a multiple of 16 values (64 bytes in float): a row starts on a cache line, so
// the vector stores of a step do not split lines (the workspace is the largest write of a
// training step: 14H + 3 values per row for the LSTM).
constexpr int64_t ln_ws_cols(int64_t G, int64_t H) {
  return ((G == 4 ? 14 * H + 3 : 10 * H + 2) + 15) / 16 * 16;
}
// Column offsets in the workspace row (constexpr: device code calls them, cuda/kernels/ln.cuh).
struct LnWs {
  int64_t G, H;
  constexpr int64_t gates() const { return 0; }     // LSTM [i f g o c], GRU [r z n ghn]
  constexpr int64_t chat() const { return 5 * H; }  // LSTM only
  constexpr int64_t hhat() const { return G == 4 ? 6 * H : 4 * H; }
  constexpr int64_t xhat() const { return hhat() + G * H; }
  constexpr int64_t rstd_hh() const { return xhat() + G * H; }
  constexpr int64_t rstd_c() const { return rstd_hh() + 1; }  // LSTM only
  constexpr int64_t rstd_ih() const { return G == 4 ? rstd_hh() + 2 : rstd_hh() + 1; }
  constexpr int64_t used() const { return rstd_ih() + 1; }  // values of a row (then padding)
};

// Rows of LN(v; w) + b1 + b2 (either bias may be null): y (=) [rows, n]; xhat (=) and rstd
// (=) into the workspace unless null. v and y may alias (in place).
template <class T>
struct LnRows {
  int64_t rows = 0, n = 0;
  const T* v = nullptr;
  int64_t ld_v = 0;
  const T *w = nullptr, *b1 = nullptr, *b2 = nullptr;
  T* y = nullptr;
  int64_t ld_y = 0;
  T* xhat = nullptr;  // ld_ws
  T* rstd = nullptr;  // ld_ws
  int64_t ld_ws = 0;
};

// Rows of the LN backward: dv (=) rstd (dx - mean dx - xhat mean(dx xhat)), dx = dy w.
template <class T>
struct LnRowsBwd {
  int64_t rows = 0, n = 0;
  const T* dy = nullptr;
  int64_t ld_dy = 0;
  const T* w = nullptr;
  const T* xhat = nullptr;  // ld_ws
  const T* rstd = nullptr;  // ld_ws
  int64_t ld_ws = 0;
  T* dv = nullptr;
  int64_t ld_dv = 0;
};

// One forward step. xg [rows, GH]: the input side, LN(x W_ih^T; ln_ih) + b_ih (+ b_hh for the
// LSTM); hg [rows, GH] = h W_hh^T (raw). Writes (=) out, the running h / c (in place) and,
// unless null, ws.
template <class T>
struct LnFwdStep {
  int64_t rows = 0, H = 0;
  const T* xg = nullptr;
  const T* hg = nullptr;
  const T* ln_hh = nullptr;   // [GH]
  const T* b_hh = nullptr;    // GRU only (the LSTM's is in xg); may be null
  const T* ln_c = nullptr;    // LSTM [H]
  const T* ln_c_b = nullptr;  // LSTM [H]; may be null
  T* h = nullptr;             // [rows, H]
  T* c = nullptr;             // LSTM [rows, H]
  T* out = nullptr;
  int64_t ld_out = 0;
  T* ws = nullptr;
  int64_t ld_ws = 0;
  // A one-feature input (I = 1) in closed form, for kernels with kScalarInput (ln_driver.h):
  // xg is null and row b's input side is xs[b] xw + xb; with ws, its normalised values
  // xs[b] xu go to ws's xhat columns.
  const T* xs = nullptr;                                // [rows]
  const T *xw = nullptr, *xb = nullptr, *xu = nullptr;  // [GH]
};

// One backward step. dh = dh_a + dh_b (either may be null). Writes (=) dgi [rows, GH], the
// gradient of the input side's LN output (and of b_ih); dgn [rows, GH] (GRU), that of the
// hidden side's LN output (+ b_hh) (the LSTM's equals dgi); dgh [rows, GH], that of h W_hh^T;
// dcn [rows, H] (LSTM), that of LN(c; ln_c) + ln_c_b; dc (LSTM, in/out: dc_t -> dc_{t-1});
// dh_carry (=) z dh (GRU; the driver then adds dgh W_hh). All ld = GH or H.
template <class T>
struct LnBwdStep {
  int64_t rows = 0, H = 0;
  const T* dh_a = nullptr;
  int64_t ld_a = 0;
  const T* dh_b = nullptr;
  int64_t ld_b = 0;
  const T* ws = nullptr;
  int64_t ld_ws = 0;
  const T* h_prev = nullptr;  // GRU, ld = H
  const T* c_prev = nullptr;  // LSTM, ld = ld_c
  int64_t ld_c = 0;
  const T* ln_hh = nullptr;
  const T* ln_c = nullptr;
  const T* ln_c_b = nullptr;
  T* dc = nullptr;
  T* dgi = nullptr;
  T* dgn = nullptr;
  T* dgh = nullptr;
  T* dcn = nullptr;
  T* dh_carry = nullptr;
};

}  // namespace fusedrnn
