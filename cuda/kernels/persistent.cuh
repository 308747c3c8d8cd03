// Phased bodies of the persistent small-H forward kernel (LSTM, GRU; inference), written once
// for the GPU (cuda/persistent.cu: one cooperative launch for the whole time loop) and the host
// emulation (cuda/emu/emu_persistent.cpp: each phase for every block and thread before the
// next). Design, barriers and the emulation's race checks: cuda/PERSISTENT.md.
//
// Block k owns hidden units [j0, j1) (persist_units) and every gate of them, so the cell state
// of (b, j) is only touched by block k. Per block, shared memory holds its W_hh slice
// [G * nj, H] (loaded once, phase load_slice) and the previous hidden state [B, H] (phase
// load_h, every step). Phase step_cell computes the G dot products in float (k order), adds
// xg and the bias, applies the cell (cell_math.h) and writes h_t to hbuf[write] and out.
// Sequence of one launch: load_slice; __syncthreads; for each step: load_h; __syncthreads;
// step_cell; grid barrier. hbuf is double-buffered: step s reads hbuf[(s + 1) % 2] and
// writes hbuf[s % 2] (h0 starts in hbuf[1]), so one grid barrier per step suffices.
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>

#include "fusedrnn/cell_math.h"
#include "fusedrnn/step_args.h"

namespace fusedrnn::kernels {

template <class T>
struct PersistArgs {
  int64_t T_steps = 0, B = 0, H = 0, G = 0;  // G = 4 (LSTM) or 3 (GRU)
  bool reverse = false;
  const T* xg = nullptr;            // [T, B, G*H]: x W_ih^T (GRU: + b_ih)
  const Carry<T>* bias = nullptr;   // [G*H] LSTM: b_ih + b_hh; GRU: b_hh; may be null
  const T* w_hh = nullptr;          // [G*H, H]
  T* hbuf = nullptr;                // [2, B, H]
  Carry<T>* c = nullptr;            // [B, H] LSTM cell state (in: c0, out: c_n), float carry
  T* out = nullptr;                 // [T, B, H]
  int64_t blocks = 1, threads = 1;  // launch geometry
};

// Hidden units [j0, j1) of block k: ceil(H / blocks) each, the last ones possibly fewer/none.
struct UnitRange {
  int64_t j0, j1;
  FUSEDRNN_HD int64_t size() const { return j1 > j0 ? j1 - j0 : 0; }
};

FUSEDRNN_HD UnitRange persist_units(int64_t H, int64_t blocks, int64_t block) {
  const int64_t u = (H + blocks - 1) / blocks;
  const int64_t j0 = block * u < H ? block * u : H;
  const int64_t j1 = j0 + u < H ? j0 + u : H;
  return {j0, j1};
}

// Shared-memory elements (of T) one block needs: W slice [G * u, H] + h tile [B, H].
FUSEDRNN_HD int64_t persist_smem_elems(int64_t B, int64_t H, int64_t G, int64_t blocks) {
  const int64_t u = (H + blocks - 1) / blocks;
  return G * u * H + B * H;
}

// Phase 0 (once): the block's W_hh slice into smem_w [G * nj, H] (row g * nj + jj).
template <class T>
FUSEDRNN_HD void persist_load_slice(const PersistArgs<T>& a, int64_t block, int64_t thread,
                                    T* smem_w) {
  const UnitRange u = persist_units(a.H, a.blocks, block);
  const int64_t nj = u.size(), n = a.G * nj * a.H;
  for (int64_t e = thread; e < n; e += a.threads) {
    const int64_t r = e / a.H, k = e - r * a.H;
    const int64_t g = r / nj, jj = r - g * nj;
    smem_w[e] = a.w_hh[(g * a.H + u.j0 + jj) * a.H + k];
  }
}

// Phase 1 (step s): h_{prev} [B, H] from hbuf[(s + 1) % 2] into smem_h.
template <class T>
FUSEDRNN_HD void persist_load_h(const PersistArgs<T>& a, int64_t s, int64_t thread, T* smem_h) {
  const T* src = a.hbuf + ((s + 1) % 2) * a.B * a.H;
  for (int64_t e = thread; e < a.B * a.H; e += a.threads) smem_h[e] = src[e];
}

// Phase 2 (step s): gates, cell, h_t of the block's (b, j) items.
template <class T>
FUSEDRNN_HD void persist_step(const PersistArgs<T>& a, int64_t s, int64_t block, int64_t thread,
                              const T* smem_w, const T* smem_h) {
  using A = at::opmath_type<T>;
  const UnitRange u = persist_units(a.H, a.blocks, block);
  const int64_t nj = u.size(), H = a.H, GH = a.G * H;
  const int64_t t = a.reverse ? a.T_steps - 1 - s : s;
  T* dst = a.hbuf + (s % 2) * a.B * H;
  for (int64_t e = thread; e < a.B * nj; e += a.threads) {
    const int64_t b = e / nj, jj = e - b * nj, j = u.j0 + jj;
    const T* hp = smem_h + b * H;
    const T* xg = a.xg + (t * a.B + b) * GH;
    A pre[4];
    for (int64_t g = 0; g < a.G; ++g) {
      const T* w = smem_w + (g * nj + jj) * H;
      A acc = A(0);
      for (int64_t k = 0; k < H; ++k) acc += A(hp[k]) * A(w[k]);
      pre[g] = acc + (a.bias ? A(a.bias[g * H + j]) : A(0));
    }
    A h;
    if (a.G == 4) {
      const auto r =
          math::lstm_forward<A>(A(xg[j]) + pre[0], A(xg[H + j]) + pre[1], A(xg[2 * H + j]) + pre[2],
                                A(xg[3 * H + j]) + pre[3], a.c[b * H + j]);
      a.c[b * H + j] = r.c;
      h = r.h;
    } else {
      const auto r = math::gru_forward<A>(A(xg[j]), A(xg[H + j]), A(xg[2 * H + j]), pre[0], pre[1],
                                          pre[2], A(hp[j]));
      h = r.h;
    }
    dst[b * H + j] = T(h);
    a.out[(t * a.B + b) * H + j] = T(h);
  }
}

}  // namespace fusedrnn::kernels
