// Plain-pointer arguments of one time step's fused pointwise pass (CPU and CUDA).
//
// Layout letters: B batch rows active at this step ("rows"), H hidden, G gates, P output
// width (H, or proj_size for a projected LSTM). All row-major; ld_* are row strides.
// Forward step:  reads xg [rows, GH] (x W_ih^T; + b_ih for GRU), hg [rows, GH] (h W_hh^T),
//                b_hh [GH] (layers, RNN/LSTM: b_ih + b_hh summed once by the driver;
//                single steps and GRU: b_hh alone, b_ih being in xg),
//                the running states h [rows, P] / c [rows, H];
//                writes (=) out [rows, ld_out], the states (in place), ws [rows, ld_ws].
// Backward step: reads dh_a + dh_b (either may be null), ws, h_prev, c_prev;
//                writes (=) dgi [rows, GH] (RNN/LSTM) or dgh [rows, 4H] (GRU), dh_carry (GRU:
//                z*dh), hraw (projected LSTM: o*tanh(c)); updates (=) dc (LSTM: dc_{t-1}).
//
// Carries (Carry<T>): the values that live across steps without passing through a GEMM (the
// cell state c, its gradient dc, the GRU's direct-path gradient dh_f, and the per-step bias)
// are held in at::opmath_type<T>: float for half/bf16 (as ATen's RNN.cu and cuDNN keep them,
// so a T=1000 sequence does not round c to 8/11 bits a thousand times), T itself for
// float/double, where these structs are unchanged (the CPU backend only sees those).
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>
#include <type_traits>

namespace fusedrnn {

template <class T>
using Carry = at::opmath_type<T>;

// Whether T's carries are wider than T (half/bf16): the driver then keeps them in buffers of
// Carry<T> and converts at the op boundary (c0/c_n, grad_cn/grad_c0, grad_hn/grad_h0).
template <class T>
constexpr bool kWideCarry = !std::is_same_v<Carry<T>, T>;

// A single step below this many multiply-adds is not worth other threads: neither a fork of its
// row blocks (one_row_step.h) nor a GIL release (module_fast_path.cpp). Releasing the GIL and
// taking it back cost ~0.2 us of a ~2.6 us B = 1, H = 64 call; at B = 1 an LSTM step reaches it
// from H = 128, a GRU or Elman step from H = 256.
constexpr int64_t kSmallStepMacs = int64_t(1) << 16;

template <class T>
struct FwdStep {
  int64_t rows = 0, H = 0;
  const T* xg = nullptr;
  const T* hg = nullptr;
  const Carry<T>* b_hh = nullptr;  // may be null (bias=False)
  T* h = nullptr;                  // running hidden state, ld = H (unprojected cells only)
  Carry<T>* c = nullptr;           // running cell state (LSTM), ld = H
  T* out = nullptr;  // output rows (or the unprojected h buffer of a projected LSTM); may be h
                     // itself (the cell ops): an element of h is read before it is written
  int64_t ld_out = 0;
  bool write_h = true;  // false for a projected LSTM: h is written after the projection GEMM
  T* ws = nullptr;      // saved-for-backward rows (LSTM, GRU); null: not needed, skip
  int64_t ld_ws = 0;
};

template <class T>
struct BwdStep {
  int64_t rows = 0, H = 0;
  const T* dh_a = nullptr;  // gradient of this step's output rows (may be null)
  int64_t ld_a = 0;
  const T* dh_b = nullptr;  // gradient carried from the next step (may be null)
  int64_t ld_b = 0;
  const T* ws = nullptr;  // RNN: h_t rows; LSTM: [i f g o c]; GRU: [r z n hn]
  int64_t ld_ws = 0;
  const T* h_prev = nullptr;  // ld = H (GRU)
  const T* c_prev = nullptr;  // LSTM; ld = ld_c (H, or the workspace's row stride)
  int64_t ld_c = 0;
  Carry<T>* dc = nullptr;  // LSTM: in dc_t, out dc_{t-1}; ld = H
  T* dgi = nullptr;        // RNN/LSTM: d(pre-activations) [rows, GH], ld = ld_dg
  T* dgh = nullptr;        // GRU only: [rows, 4H] = [dr | dz | dhn | dn], ld = ld_dg
  int64_t ld_dg = 0;
  T* dh_carry = nullptr;  // GRU only: z * dh; ld = H (may alias dh_b)
  // GRU with wide carries only (else null): the direct path z * dh in Carry<T>, ld = H. Read
  // and added to dh, then overwritten (=) with this step's z * dh; dh_carry is then unused
  // and dh_b holds only the GEMM part dG W_hh (written with beta = 0).
  Carry<T>* dh_f = nullptr;
  T* hraw = nullptr;  // projected LSTM only; ld = H
};

}  // namespace fusedrnn
