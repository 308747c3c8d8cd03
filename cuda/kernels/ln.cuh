// Kernel bodies of the LayerNorm LSTM / GRU passes (ln_step_args.h; semantics: the CPU's
// cpp/cpu/ln_pointwise.h), written once for the GPU and the host emulation.
//
// One thread block per row (grid-stride over rows when rows > blocks). A row's statistics
// need block-wide sums, so each pass is a short program of phases separated by block
// reductions: phase p of thread t (of nt) does its share of the row and returns its partial
// sums (LnSums); the block total of those sums is handed to every thread's phase p + 1. Two-
// pass statistics like the CPU's (mean, then the mean squared deviation), accumulated in
// at::opmath_type<T> (these passes run in float and double only, so that is T itself).
//
// Work split: the step passes give thread t the units j = t, t + nt, ... < H and every gate
// column k H + j of those units; the rows passes give it the columns q = t, t + nt, ... < n.
// A thread only ever reads back what it wrote itself (c in the LSTM forward, dG in the
// backward), so the reductions are the only communication between threads, and the only
// barriers: on the GPU (ln_run_program) a warp butterfly, one shared-memory slot per warp,
// __syncthreads, then every thread adds the warp totals in order; the host emulation
// (ln_host_block_sum) adds in exactly that order. Rows written per row by one thread (the
// 1/std columns of the workspace) are written by thread 0.
//
// Programs (rows, phases and what each phase writes):
//   LnRowsForward  (LnRows)   : mean | variance | xhat, y, rstd.
//   LnRowsBackward (LnRowsBwd): sums of dx, dx xhat | dv.
//   LnLstmForward  (LnFwdStep): mean(hg) | var(hg) | gates, c, o (in out), ws | var(c) | chat, out,
//   h. LnLstmBackward (LnBwdStep): dcn, d o, sums of LN(c')'s backward | dgi, dc, sums of
//                               LN(hg)'s backward | dgh.
//   LnGruForward   (LnFwdStep): mean(hg) | var(hg) | gates, h, ws.
//   LnGruBackward  (LnBwdStep): dgi, dgn, dh_carry, sums of LN(hg)'s backward | dgh.
#pragma once

#include <ATen/OpMathType.h>

#include <cmath>
#include <cstdint>

#include "fusedrnn/cell_math.h"
#include "fusedrnn/ln_step_args.h"

namespace fusedrnn::kernels {

// Most threads per block of the LayerNorm kernels on the GPU (their __launch_bounds__).
constexpr int64_t kLnThreads = 256;
constexpr int64_t kWarp = 32;

template <class A>
struct LnSums {
  A a, b;
};

struct LnLaunch {
  int64_t blocks = 1, threads = 1;
};

// Threads of a block: the row width rounded up to whole warps, at least one warp, at most
// max_threads (the GPU passes kLnThreads; the emulation's set_launch may pass any count).
inline int64_t ln_threads(int64_t width, int64_t max_threads) {
  const int64_t want = (width + kWarp - 1) / kWarp * kWarp;
  const int64_t t = want < kWarp ? kWarp : want;
  return t > max_threads ? max_threads : t;
}

// Blocks: one per row, at most max_blocks (then grid-stride over rows).
inline LnLaunch ln_launch(int64_t rows, int64_t width, int64_t max_threads, int64_t max_blocks) {
  LnLaunch l;
  l.threads = ln_threads(width, max_threads);
  l.blocks = rows < 1 ? 1 : (rows > max_blocks ? max_blocks : rows);
  return l;
}

template <class A>
FUSEDRNN_HD A ln_rstd(A sum_sq, int64_t n) {
#if defined(__CUDA_ARCH__)
  return A(1) / ::sqrt(sum_sq / A(n) + A(kLnEps));
#else
  return A(1) / std::sqrt(sum_sq / A(n) + A(kLnEps));
#endif
}

// Sums over the thread's gate columns k H + j (its units j) of LN(g)'s backward terms,
// dx = dg w and dx ghat.
template <class T, class A>
FUSEDRNN_HD void ln_bwd_sums(int G, int64_t H, int64_t j, const T* dg, const T* w, const T* ghat,
                             LnSums<A>& r) {
  for (int k = 0; k < G; ++k) {
    const int64_t q = k * H + j;
    const A dx = A(dg[q]) * A(w[q]);
    r.a += dx;
    r.b += dx * A(ghat[q]);
  }
}

// The last phase of LN(g)'s backward over the thread's gate columns: dv (=) rstd (dx - m1 -
// ghat m2), with the block totals of ln_bwd_sums in `in`.
template <class T, class A>
FUSEDRNN_HD void ln_bwd_write(int G, int64_t H, int64_t t, int64_t nt, const T* dg, const T* w,
                              const T* ghat, A rstd, LnSums<A> in, T* dv) {
  const A m1 = in.a / A(G * H), m2 = in.b / A(G * H);
  for (int64_t j = t; j < H; j += nt) {
    for (int k = 0; k < G; ++k) {
      const int64_t q = k * H + j;
      dv[q] = T(rstd * (A(dg[q]) * A(w[q]) - m1 - A(ghat[q]) * m2));
    }
  }
}

// Phases 0 and 1 of LN over a row of G H columns (the thread's gate columns k H + j): the
// sum, then the squared deviations from the mean (set from the sum's total in phase 1).
template <class T, class A>
FUSEDRNN_HD LnSums<A> ln_row_stats(int p, int G, int64_t H, int64_t t, int64_t nt, const T* v,
                                   LnSums<A> in, A& mean) {
  LnSums<A> r{A(0), A(0)};
  if (p == 1) mean = in.a / A(G * H);
  for (int64_t j = t; j < H; j += nt) {
    for (int k = 0; k < G; ++k) {
      const A x = A(v[k * H + j]);
      if (p == 0) {
        r.a += x;
      } else {
        const A d = x - mean;
        r.a += d * d;
      }
    }
  }
  return r;
}

// ---- input side: rows of LN(v; w) + b1 + b2 ----------------------------------------------
// (A row of n columns is a step's G = 1, H = n: the helpers above split it the same way.)
template <class T>
struct LnRowsForward {
  using A = at::opmath_type<T>;
  using Args = LnRows<T>;
  static constexpr int kPhases = 3;
  struct State {
    A mean;
  };
  static FUSEDRNN_HD int64_t rows(const Args& s) { return s.rows; }
  static FUSEDRNN_HD LnSums<A> phase(int p, const Args& s, int64_t b, int64_t t, int64_t nt,
                                     LnSums<A> in, State& st) {
    const T* v = s.v + b * s.ld_v;
    if (p < 2) return ln_row_stats<T, A>(p, 1, s.n, t, nt, v, in, st.mean);
    const A rstd = ln_rstd(in.a, s.n);
    if (s.rstd && t == 0) s.rstd[b * s.ld_ws] = T(rstd);
    T* y = s.y + b * s.ld_y;  // may be v itself: element q is read, then written, here only
    T* xh = s.xhat ? s.xhat + b * s.ld_ws : nullptr;
    for (int64_t q = t; q < s.n; q += nt) {
      const A x = (A(v[q]) - st.mean) * rstd;
      if (xh) xh[q] = T(x);
      y[q] = T(A(s.w[q]) * x + (s.b1 ? A(s.b1[q]) : A(0)) + (s.b2 ? A(s.b2[q]) : A(0)));
    }
    return LnSums<A>{A(0), A(0)};
  }
};

// dv (=) rstd (dx - mean dx - xhat mean(dx xhat)), dx = dy w; dv may be dy itself.
template <class T>
struct LnRowsBackward {
  using A = at::opmath_type<T>;
  using Args = LnRowsBwd<T>;
  static constexpr int kPhases = 2;
  struct State {};
  static FUSEDRNN_HD int64_t rows(const Args& s) { return s.rows; }
  static FUSEDRNN_HD LnSums<A> phase(int p, const Args& s, int64_t b, int64_t t, int64_t nt,
                                     LnSums<A> in, State&) {
    const T* dy = s.dy + b * s.ld_dy;
    const T* xh = s.xhat + b * s.ld_ws;
    LnSums<A> r{A(0), A(0)};
    if (p == 0) {
      for (int64_t q = t; q < s.n; q += nt) ln_bwd_sums<T, A>(1, s.n, q, dy, s.w, xh, r);
    } else {
      ln_bwd_write<T, A>(1, s.n, t, nt, dy, s.w, xh, A(s.rstd[b * s.ld_ws]), in,
                         s.dv + b * s.ld_dv);
    }
    return r;
  }
};

// ---- LSTM step ------------------------------------------------------------------------------
template <class T>
struct LnLstmForward {
  using A = at::opmath_type<T>;
  using Args = LnFwdStep<T>;
  static constexpr int kPhases = 5;
  struct State {
    A mean_h, rstd_h, mean_c;
  };
  static FUSEDRNN_HD int64_t rows(const Args& s) { return s.rows; }
  static FUSEDRNN_HD LnSums<A> phase(int p, const Args& s, int64_t b, int64_t t, int64_t nt,
                                     LnSums<A> in, State& st) {
    const int64_t H = s.H;
    const LnWs L{4, H};
    const T* hg = s.hg + b * 4 * H;
    T* ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
    T* c = s.c + b * H;
    T* out = s.out + b * s.ld_out;
    if (p < 2) return ln_row_stats<T, A>(p, 4, H, t, nt, hg, in, st.mean_h);
    LnSums<A> r{A(0), A(0)};
    if (p == 2) {  // gates and c'; o waits in out for LN(c')
      st.rstd_h = ln_rstd(in.a, 4 * H);
      const T* xg = s.xg + b * 4 * H;
      for (int64_t j = t; j < H; j += nt) {
        A a[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t q = k * H + j;
          const A hh = (A(hg[q]) - st.mean_h) * st.rstd_h;
          if (ws) ws[L.hhat() + q] = T(hh);
          a[k] = A(xg[q]) + A(s.ln_hh[q]) * hh;
        }
        const A i = math::sigmoid(a[0]), f = math::sigmoid(a[1]), g = math::tanh_(a[2]);
        const A o = math::sigmoid(a[3]);
        const A cn = f * A(c[j]) + i * g;
        if (ws) {
          ws[j] = T(i);
          ws[H + j] = T(f);
          ws[2 * H + j] = T(g);
          ws[3 * H + j] = T(o);
          ws[4 * H + j] = T(cn);
        }
        c[j] = T(cn);
        out[j] = T(o);
        r.a += A(c[j]);
      }
    } else if (p == 3) {
      st.mean_c = in.a / A(H);
      for (int64_t j = t; j < H; j += nt) {
        const A d = A(c[j]) - st.mean_c;
        r.a += d * d;
      }
    } else {
      const A rstd_c = ln_rstd(in.a, H);
      if (ws && t == 0) {
        ws[L.rstd_hh()] = T(st.rstd_h);
        ws[L.rstd_c()] = T(rstd_c);
      }
      T* h = s.h + b * H;
      for (int64_t j = t; j < H; j += nt) {
        const A ch = (A(c[j]) - st.mean_c) * rstd_c;
        if (ws) ws[L.chat() + j] = T(ch);
        const A hv =
            A(out[j]) * math::tanh_(A(s.ln_c[j]) * ch + (s.ln_c_b ? A(s.ln_c_b[j]) : A(0)));
        out[j] = T(hv);
        h[j] = T(hv);
      }
    }
    return r;
  }
};

template <class T>
struct LnLstmBackward {
  using A = at::opmath_type<T>;
  using Args = LnBwdStep<T>;
  static constexpr int kPhases = 3;
  struct State {};
  static FUSEDRNN_HD int64_t rows(const Args& s) { return s.rows; }
  static FUSEDRNN_HD LnSums<A> phase(int p, const Args& s, int64_t b, int64_t t, int64_t nt,
                                     LnSums<A> in, State&) {
    const int64_t H = s.H;
    const LnWs L{4, H};
    const T* ws = s.ws + b * s.ld_ws;
    const T* chat = ws + L.chat();
    T* dg = s.dgi + b * 4 * H;
    T* dcn = s.dcn + b * H;
    LnSums<A> r{A(0), A(0)};
    if (p == 0) {  // d(LN(c') + b) and the output gate; sums of LN(c')'s backward
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
      for (int64_t j = t; j < H; j += nt) {
        const A dh = (da ? A(da[j]) : A(0)) + (db ? A(db[j]) : A(0));
        const A o = A(ws[3 * H + j]), ch = A(chat[j]), w = A(s.ln_c[j]);
        const A th = math::tanh_(w * ch + (s.ln_c_b ? A(s.ln_c_b[j]) : A(0)));
        const A dn = dh * o * (A(1) - th * th);
        dcn[j] = T(dn);
        dg[3 * H + j] = T(dh * th * o * (A(1) - o));
        r.a += dn * w;
        r.b += dn * w * ch;
      }
    } else if (p == 1) {  // dc', the gates i f g, dc_{t-1}; sums of LN(hg)'s backward
      const A m1 = in.a / A(H), m2 = in.b / A(H), rc = A(ws[L.rstd_c()]);
      const T* cp = s.c_prev + b * s.ld_c;
      T* dc = s.dc + b * H;
      for (int64_t j = t; j < H; j += nt) {
        const A ch = A(chat[j]);
        const A dchat = A(dcn[j]) * A(s.ln_c[j]);
        const A dct = rc * (dchat - m1 - ch * m2) + A(dc[j]);
        const A i = A(ws[j]), f = A(ws[H + j]), g = A(ws[2 * H + j]);
        dg[j] = T(dct * g * i * (A(1) - i));
        dg[H + j] = T(dct * A(cp[j]) * f * (A(1) - f));
        dg[2 * H + j] = T(dct * i * (A(1) - g * g));
        dc[j] = T(dct * f);
        ln_bwd_sums<T, A>(4, H, j, dg, s.ln_hh, ws + L.hhat(), r);
      }
    } else {
      ln_bwd_write<T, A>(4, H, t, nt, dg, s.ln_hh, ws + L.hhat(), A(ws[L.rstd_hh()]), in,
                         s.dgh + b * 4 * H);
    }
    return r;
  }
};

// ---- GRU step -------------------------------------------------------------------------------
template <class T>
struct LnGruForward {
  using A = at::opmath_type<T>;
  using Args = LnFwdStep<T>;
  static constexpr int kPhases = 3;
  struct State {
    A mean_h;
  };
  static FUSEDRNN_HD int64_t rows(const Args& s) { return s.rows; }
  static FUSEDRNN_HD LnSums<A> phase(int p, const Args& s, int64_t b, int64_t t, int64_t nt,
                                     LnSums<A> in, State& st) {
    const int64_t H = s.H;
    const LnWs L{3, H};
    const T* hg = s.hg + b * 3 * H;
    if (p < 2) return ln_row_stats<T, A>(p, 3, H, t, nt, hg, in, st.mean_h);
    const A rstd = ln_rstd(in.a, 3 * H);
    T* ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
    if (ws && t == 0) ws[L.rstd_hh()] = T(rstd);
    const T* xg = s.xg + b * 3 * H;
    T* out = s.out + b * s.ld_out;
    T* h = s.h + b * H;
    for (int64_t j = t; j < H; j += nt) {
      A gh[3];
      for (int k = 0; k < 3; ++k) {
        const int64_t q = k * H + j;
        const A hh = (A(hg[q]) - st.mean_h) * rstd;
        if (ws) ws[L.hhat() + q] = T(hh);
        gh[k] = A(s.ln_hh[q]) * hh + (s.b_hh ? A(s.b_hh[q]) : A(0));
      }
      const auto r = math::gru_forward<A>(A(xg[j]), A(xg[H + j]), A(xg[2 * H + j]), gh[0], gh[1],
                                          gh[2], A(h[j]));
      if (ws) {
        ws[j] = T(r.r);
        ws[H + j] = T(r.z);
        ws[2 * H + j] = T(r.n);
        ws[3 * H + j] = T(r.hn);
      }
      out[j] = T(r.h);
      h[j] = T(r.h);
    }
    return LnSums<A>{A(0), A(0)};
  }
};

template <class T>
struct LnGruBackward {
  using A = at::opmath_type<T>;
  using Args = LnBwdStep<T>;
  static constexpr int kPhases = 2;
  struct State {};
  static FUSEDRNN_HD int64_t rows(const Args& s) { return s.rows; }
  static FUSEDRNN_HD LnSums<A> phase(int p, const Args& s, int64_t b, int64_t t, int64_t nt,
                                     LnSums<A> in, State&) {
    const int64_t H = s.H;
    const LnWs L{3, H};
    const T* ws = s.ws + b * s.ld_ws;
    T* gn = s.dgn + b * 3 * H;
    LnSums<A> r{A(0), A(0)};
    if (p == 0) {
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;  // may be dh_carry: read first
      const T* hp = s.h_prev + b * H;
      T* gi = s.dgi + b * 3 * H;
      T* carry = s.dh_carry + b * H;
      for (int64_t j = t; j < H; j += nt) {
        const A dh = (da ? A(da[j]) : A(0)) + (db ? A(db[j]) : A(0));
        const auto g = math::gru_backward<A>(dh, A(ws[j]), A(ws[H + j]), A(ws[2 * H + j]),
                                             A(ws[3 * H + j]), A(hp[j]));
        gi[j] = T(g.dr);
        gi[H + j] = T(g.dz);
        gi[2 * H + j] = T(g.dn);
        gn[j] = T(g.dr);
        gn[H + j] = T(g.dz);
        gn[2 * H + j] = T(g.dhn);
        carry[j] = T(g.dh_prev);
        ln_bwd_sums<T, A>(3, H, j, gn, s.ln_hh, ws + L.hhat(), r);
      }
    } else {
      ln_bwd_write<T, A>(3, H, t, nt, gn, s.ln_hh, ws + L.hhat(), A(ws[L.rstd_hh()]), in,
                         s.dgh + b * 3 * H);
    }
    return r;
  }
};

// ---- the block reduction and the program loop ----------------------------------------------
// The host's block total of nt threads' partial sums, added in the GPU's order: within each
// warp of 32 lanes the xor butterfly (lanes past nt contribute zero; on the GPU nt is whole
// warps), then the warp totals in warp order.
template <class A>
inline LnSums<A> ln_host_block_sum(const LnSums<A>* part, int64_t nt) {
  LnSums<A> total{A(0), A(0)};
  for (int64_t w0 = 0; w0 < nt; w0 += kWarp) {
    LnSums<A> lane[kWarp], next[kWarp];
    for (int64_t l = 0; l < kWarp; ++l)
      lane[l] = w0 + l < nt ? part[w0 + l] : LnSums<A>{A(0), A(0)};
    for (int64_t o = kWarp / 2; o > 0; o /= 2) {
      for (int64_t l = 0; l < kWarp; ++l)
        next[l] = {lane[l].a + lane[l ^ o].a, lane[l].b + lane[l ^ o].b};
      for (int64_t l = 0; l < kWarp; ++l) lane[l] = next[l];
    }
    total.a += lane[0].a;
    total.b += lane[0].b;
  }
  return total;
}

#if defined(__CUDACC__)
// The block total of every thread's partial sums, returned to every thread. slots: two
// alternating buffers of 2 x 32 (one per warp), so the reduction after next may reuse a
// buffer that every thread has read before passing the barrier of the next one.
template <class A>
__device__ __forceinline__ LnSums<A> ln_block_sum(LnSums<A> v, A* slots, int& round) {
  for (int o = kWarp / 2; o > 0; o /= 2) {
    v.a += __shfl_xor_sync(0xffffffffu, v.a, o);
    v.b += __shfl_xor_sync(0xffffffffu, v.b, o);
  }
  A* slot = slots + (round & 1) * 2 * kWarp;
  ++round;
  const int warp = int(threadIdx.x) / int(kWarp), nw = int(blockDim.x) / int(kWarp);
  if (threadIdx.x % kWarp == 0) {
    slot[warp] = v.a;
    slot[kWarp + warp] = v.b;
  }
  __syncthreads();
  LnSums<A> r{A(0), A(0)};
  for (int w = 0; w < nw; ++w) {
    r.a += slot[w];
    r.b += slot[kWarp + w];
  }
  return r;
}

// One program (above) over its rows: block per row, grid-stride; blockDim.x whole warps.
template <class P>
__device__ __forceinline__ void ln_run_program(const typename P::Args& s) {
  using A = typename P::A;
  __shared__ A slots[2 * 2 * kWarp];
  int round = 0;
  const int64_t rows = P::rows(s);
  for (int64_t b = blockIdx.x; b < rows; b += gridDim.x) {
    typename P::State st{};
    LnSums<A> in{A(0), A(0)};
#pragma unroll
    for (int p = 0; p < P::kPhases; ++p) {
      const LnSums<A> part = P::phase(p, s, b, threadIdx.x, blockDim.x, in, st);
      if (p + 1 < P::kPhases) in = ln_block_sum(part, slots, round);
    }
  }
}
#endif

}  // namespace fusedrnn::kernels
