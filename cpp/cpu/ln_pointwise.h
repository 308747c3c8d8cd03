// The CPU passes of the LayerNorm LSTM / GRU (ln_step_args.h): each row's mean and variance
// are taken inside the fused pointwise pass, over SIMD vectors (row tails scalar), so a step is
// the recurrent GEMM plus one pass over its rows. Two-pass statistics (mean, then the mean
// squared deviation): no cancellation when |mean| >> std. Rows are independent and split over
// threads like the other pointwise passes (pointwise.h, over_rows).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "fusedrnn/ln_step_args.h"
#include "pointwise.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

template <class T>
struct RowStats {
  T mean, rstd;
};

// At inference the passes below work on groups of kLnRowGroup rows in lockstep. A row's
// LayerNorm is a chain of dependent reductions (mean, variance, 1/std, then the same for c),
// each a few dozen cycles of latency; at H <= 64 a row has too little other work to hide them
// (the sine LN-LSTM step ran at ~320 cycles a row, close to its chain's length). Independent
// rows side by side give the core several chains to overlap: 1.1-1.2x on the ln-stock and
// ln-sine LSTM steps. When a workspace is written (training), or read (backward), rows go one
// at a time: four rows' interleaved workspace streams ran 0.8-0.9x, so groups are skipped there.
// The tail of a step's rows runs one at a time.
constexpr int kLnRowGroup = 4;

// A training step's rows are far apart in the workspace (ln_ws_cols: 14H + 3 values a row for
// the LSTM, 10H + 2 for the GRU), and a row reads or writes a few cache lines in each of its
// column blocks, so the hardware prefetchers see short streams and the pass waits on memory
// (the sine LN-LSTM backward stalled on its loads of the previous step's c). A short row (up
// to kLnPrefetchMaxRow) is therefore asked for ahead, line by line, while the current one
// computes: into L2, two rows ahead. Alternating runs, 2 threads, AMD EPYC, ln-sine training
// step (H = 32, B = 784: rows of 1.9 KB / 1.3 KB): one row ahead into L1 ran 1.17-1.20x
// (LN-LSTM) and 1.13x (LN-GRU) against none (in-process, 10 rounds); two rows ahead into L2
// ran 1.09-1.10x / 1.04-1.09x against that (paired processes, 6 rounds; three rows: the same
// within noise; L2 at one row 1.03x): a row touches ~50 lines, more misses than L1 keeps in
// flight. Against none: 1.24-1.28x / 1.14x (paired processes, 8 and 10 rounds). Longer rows
// are left alone: ln-stock (H = 64: 3.6 KB / 2.6 KB rows) ran 0.96-0.98x / 0.98-0.99x, ln-mid
// (H = 256: 14 KB rows, which the prefetchers do follow) 0.92-1.00x. Grouped rows with
// prefetching still ran 0.98-1.0x in training.
constexpr int64_t kLnPrefetchMaxRow = 2048;  // bytes of a workspace row
constexpr int64_t kLnPrefetchAhead = 2;      // rows

template <class T>
inline bool ln_prefetch_rows(int64_t ld_ws) {
  return ld_ws * int64_t(sizeof(T)) <= kLnPrefetchMaxRow;
}

// Asks for the cache lines of the n values `ahead` values after `row` into L2. Prefetches do
// not fault, so rows past a step's last one (past the buffer's end) may be asked for; the
// address is formed as an integer, as pointer arithmetic past an allocation's end is undefined.
template <bool kWrite, class T>
inline void prefetch_values(const T* row, int64_t ahead, int64_t n) {
  if (row == nullptr) return;
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(row) + ahead * sizeof(T);
  for (int64_t o = 0; o < n * int64_t(sizeof(T)); o += 64)
    __builtin_prefetch(reinterpret_cast<const void*>(a + o), kWrite, 2);
}

// A training forward's prefetch: the workspace and hg rows kLnPrefetchAhead after R rows'.
template <int R, class T>
inline void prefetch_forward_rows(const LnFwdStep<T>& s, const LnWs& L, T* const (&ws)[R],
                                  const T* const (&hg)[R]) {
  if (!s.ws || !ln_prefetch_rows<T>(s.ld_ws)) return;
  const int64_t GH = L.G * L.H;
  for (int r = 0; r < R; ++r) {
    prefetch_values<true>(ws[r], kLnPrefetchAhead * s.ld_ws, L.used());
    if (hg[r]) prefetch_values<false>(hg[r], kLnPrefetchAhead * GH, GH);
  }
}

// f.template operator()<R>(b0) for rows [b0, b0 + R): groups of G, then R = 1.
template <int G = kLnRowGroup, class F>
inline void over_row_groups(int64_t rows, int64_t width, F&& f) {
  over_rows((rows + G - 1) / G, G * width, [&](int64_t q) {
    const int64_t b0 = q * G;
    if (b0 + G <= rows) {
      f.template operator()<G>(b0);
    } else {
      for (int64_t b = b0; b < rows; ++b) f.template operator()<1>(b);
    }
  });
}

// Groups of kLnRowGroup rows, or one row at a time (grouped false: a workspace is involved).
template <class F>
inline void over_rows_grouped_if(bool grouped, int64_t rows, int64_t width, F&& f) {
  if (grouped) {
    over_row_groups(rows, width, f);
  } else {
    over_row_groups<1>(rows, width, f);
  }
}

// Mean and 1/std of R rows of n (two-pass).
template <int R, class T>
inline void row_stats(const T* const (&v)[R], int64_t n, RowStats<T> (&out)[R]) {
  RowSum<T> s1[R];
  over_columns<T>(n, [&]<class V>(int64_t q) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) s1[r].add(ld<T, V>(v[r] + q));
  });
  T mean[R];
  for (int r = 0; r < R; ++r) mean[r] = s1[r].total() / T(n);
  RowSum<T> s2[R];
  over_columns<T>(n, [&]<class V>(int64_t q) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const V d = ld<T, V>(v[r] + q) - V(mean[r]);
      s2[r].add(d * d);
    }
  });
  for (int r = 0; r < R; ++r)
    out[r] = {mean[r], T(1) / std::sqrt(s2[r].total() / T(n) + T(kLnEps))};
}

// For R rows of n: dv (=) rstd (dy w - mean(dy w) - xhat mean(dy w xhat)).
template <int R, class T>
inline void ln_backward_rows(int64_t n, const T* const (&dy)[R], const T* w,
                             const T* const (&xhat)[R], const T (&rstd)[R], T* const (&dv)[R]) {
  RowSum<T> s1[R], s2[R];
  over_columns<T>(n, [&]<class V>(int64_t q) {
    const V wq = ld<T, V>(w + q);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const V dx = ld<T, V>(dy[r] + q) * wq;
      s1[r].add(dx);
      s2[r].add(dx * ld<T, V>(xhat[r] + q));
    }
  });
  T m1[R], m2[R];
  for (int r = 0; r < R; ++r) {
    m1[r] = s1[r].total() / T(n);
    m2[r] = s2[r].total() / T(n);
  }
  over_columns<T>(n, [&]<class V>(int64_t q) {
    const V wq = ld<T, V>(w + q);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const V dx = ld<T, V>(dy[r] + q) * wq;
      st<T, V>(dv[r] + q, V(rstd[r]) * (dx - V(m1[r]) - ld<T, V>(xhat[r] + q) * V(m2[r])));
    }
  });
}

// Row pointers base + (b0 + r) * ld for r < R (null if base is).
template <int R, class P>
inline void row_ptrs(P* base, int64_t b0, int64_t ld, P* (&out)[R]) {
  for (int r = 0; r < R; ++r) out[r] = base ? base + (b0 + r) * ld : nullptr;
}

struct LnRowsPass {
  template <int R, class T>
  static void forward_rows(const LnRows<T>& s, int64_t b0) {
    const T* v[R];
    T *y[R], *xh[R];
    row_ptrs<R>(s.v, b0, s.ld_v, v);
    row_ptrs<R>(s.y, b0, s.ld_y, y);
    row_ptrs<R>(s.xhat, b0, s.ld_ws, xh);
    RowStats<T> rs[R];
    row_stats<R>(v, s.n, rs);
    if (s.rstd)
      for (int r = 0; r < R; ++r) s.rstd[(b0 + r) * s.ld_ws] = rs[r].rstd;
    over_columns<T>(s.n, [&]<class V>(int64_t q) {
      const V w = ld<T, V>(s.w + q), b = ld_or0<T, V>(s.b1, q) + ld_or0<T, V>(s.b2, q);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V x = (ld<T, V>(v[r] + q) - V(rs[r].mean)) * V(rs[r].rstd);
        if (xh[r]) st<T, V>(xh[r] + q, x);
        st<T, V>(y[r] + q, w * x + b);
      }
    });
  }
  template <class T>
  static void forward(const LnRows<T>& s) {
    over_rows_grouped_if(!s.xhat, s.rows, 2 * s.n,
                         [&]<int R>(int64_t b0) { forward_rows<R>(s, b0); });
  }
  template <class T>
  static void backward(const LnRowsBwd<T>& s) {
    over_row_groups<1>(s.rows, 2 * s.n, [&]<int R>(int64_t b0) {
      const T *dy[R], *xh[R];
      T* dv[R];
      T rstd[R];
      row_ptrs<R>(s.dy, b0, s.ld_dy, dy);
      row_ptrs<R>(s.xhat, b0, s.ld_ws, xh);
      row_ptrs<R>(s.dv, b0, s.ld_dv, dv);
      for (int r = 0; r < R; ++r) rstd[r] = s.rstd[(b0 + r) * s.ld_ws];
      ln_backward_rows<R>(s.n, dy, s.w, xh, rstd, dv);
    });
  }
};

// The input side of row r at columns q: xg's, or a one-feature input's xs[r] xw + xb.
template <class T, class V>
inline V input_side(const LnFwdStep<T>& s, const T* xg, T xs, int64_t q) {
  return s.xs ? V(xs) * ld<T, V>(s.xw + q) + ld<T, V>(s.xb + q) : ld<T, V>(xg + q);
}

// Rows' xs values (0 when the input side comes as xg).
template <int R, class T>
inline void row_scalars(const LnFwdStep<T>& s, int64_t b0, T (&out)[R]) {
  for (int r = 0; r < R; ++r) out[r] = s.xs ? s.xs[b0 + r] : T(0);
}

struct LnLstmPointwise {
  template <int R, class T>
  static void forward_rows(const LnFwdStep<T>& s, int64_t b0) {
    const int64_t H = s.H, GH = 4 * H;
    const LnWs L{4, H};
    const T *xg[R], *hg[R], *cc[R];
    T *ws[R], *c[R], *out[R], *h[R];
    row_ptrs<R>(s.xg, b0, GH, xg);
    row_ptrs<R>(s.hg, b0, GH, hg);
    row_ptrs<R>(s.ws, b0, s.ld_ws, ws);
    row_ptrs<R>(s.c, b0, H, c);
    row_ptrs<R>(s.out, b0, s.ld_out, out);
    row_ptrs<R>(s.h, b0, H, h);
    T xs[R];
    row_scalars<R>(s, b0, xs);
    prefetch_forward_rows<R>(s, L, ws, hg);
    RowStats<T> rh[R];
    row_stats<R>(hg, GH, rh);
    // Gates and the new cell state; o waits in out for the normalised c.
    over_columns<T>(H, [&]<class V>(int64_t j) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        V a[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t q = k * H + j;
          const V hh = (ld<T, V>(hg[r] + q) - V(rh[r].mean)) * V(rh[r].rstd);
          if (ws[r]) st<T, V>(ws[r] + L.hhat() + q, hh);
          if (ws[r] && s.xs) st<T, V>(ws[r] + L.xhat() + q, V(xs[r]) * ld<T, V>(s.xu + q));
          a[k] = input_side<T, V>(s, xg[r], xs[r], q) + ld<T, V>(s.ln_hh + q) * hh;
        }
        const V i = math::sigmoid(a[0]), f = math::sigmoid(a[1]), g = math::tanh_(a[2]);
        const V o = math::sigmoid(a[3]);
        const V cn = f * ld<T, V>(c[r] + j) + i * g;
        if (ws[r]) {
          st<T, V>(ws[r] + j, i);
          st<T, V>(ws[r] + H + j, f);
          st<T, V>(ws[r] + 2 * H + j, g);
          st<T, V>(ws[r] + 3 * H + j, o);
          st<T, V>(ws[r] + 4 * H + j, cn);
        }
        st<T, V>(c[r] + j, cn);
        st<T, V>(out[r] + j, o);
      }
    });
    for (int r = 0; r < R; ++r) cc[r] = c[r];
    RowStats<T> rc[R];
    row_stats<R>(cc, H, rc);
    for (int r = 0; r < R; ++r)
      if (ws[r]) {
        ws[r][L.rstd_hh()] = rh[r].rstd;
        ws[r][L.rstd_c()] = rc[r].rstd;
      }
    over_columns<T>(H, [&]<class V>(int64_t j) {
      const V w = ld<T, V>(s.ln_c + j), cb = ld_or0<T, V>(s.ln_c_b, j);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V ch = (ld<T, V>(c[r] + j) - V(rc[r].mean)) * V(rc[r].rstd);
        if (ws[r]) st<T, V>(ws[r] + L.chat() + j, ch);
        const V hv = ld<T, V>(out[r] + j) * math::tanh_(w * ch + cb);
        st<T, V>(out[r] + j, hv);
        st<T, V>(h[r] + j, hv);
      }
    });
  }

  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    over_rows_grouped_if(!s.ws, s.rows, 8 * s.H,
                         [&]<int R>(int64_t b0) { forward_rows<R>(s, b0); });
  }

  template <int R, class T>
  static void backward_rows(const LnBwdStep<T>& s, int64_t b0) {
    const int64_t H = s.H, GH = 4 * H;
    const LnWs L{4, H};
    const T *da[R], *db[R], *ws[R], *cp[R], *dgc[R], *hhat[R];
    T *dc[R], *dg[R], *dcn[R], *dgh[R];
    T rh[R];
    row_ptrs<R>(s.dh_a, b0, s.ld_a, da);
    row_ptrs<R>(s.dh_b, b0, s.ld_b, db);
    row_ptrs<R>(s.ws, b0, s.ld_ws, ws);
    row_ptrs<R>(s.c_prev, b0, s.ld_c, cp);
    row_ptrs<R>(s.dc, b0, H, dc);
    row_ptrs<R>(s.dgi, b0, GH, dg);
    row_ptrs<R>(s.dcn, b0, H, dcn);
    row_ptrs<R>(s.dgh, b0, GH, dgh);
    if (ln_prefetch_rows<T>(s.ld_ws))
      for (int r = 0; r < R; ++r) {
        prefetch_values<false>(ws[r], kLnPrefetchAhead * s.ld_ws, L.used());
        if (cp[r]) prefetch_values<false>(cp[r], kLnPrefetchAhead * s.ld_c, H);
        if (da[r]) prefetch_values<false>(da[r], kLnPrefetchAhead * s.ld_a, H);
        if (db[r]) prefetch_values<false>(db[r], kLnPrefetchAhead * s.ld_b, H);
        prefetch_values<true>(dg[r], kLnPrefetchAhead * GH, GH);
        prefetch_values<true>(dgh[r], kLnPrefetchAhead * GH, GH);
        prefetch_values<true>(dcn[r], kLnPrefetchAhead * H, H);
      }
    // d(LN(c) + b) and the output gate; sums for the backward of LN(c).
    RowSum<T> s1[R], s2[R];
    over_columns<T>(H, [&]<class V>(int64_t j) {
      const V w = ld<T, V>(s.ln_c + j), cb = ld_or0<T, V>(s.ln_c_b, j);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V dh = incoming<T, V>(da[r], db[r], j);
        const V o = ld<T, V>(ws[r] + 3 * H + j), ch = ld<T, V>(ws[r] + L.chat() + j);
        const V t = math::tanh_(w * ch + cb);
        const V dn = dh * o * (V(T(1)) - t * t);
        st<T, V>(dcn[r] + j, dn);
        st<T, V>(dg[r] + 3 * H + j, dh * t * o * (V(T(1)) - o));
        s1[r].add(dn * w);
        s2[r].add(dn * w * ch);
      }
    });
    T m1[R], m2[R], rc[R];
    for (int r = 0; r < R; ++r) {
      m1[r] = s1[r].total() / T(H);
      m2[r] = s2[r].total() / T(H);
      rc[r] = ws[r][L.rstd_c()];
    }
    over_columns<T>(H, [&]<class V>(int64_t j) {
      const V w = ld<T, V>(s.ln_c + j), one(T(1));
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V ch = ld<T, V>(ws[r] + L.chat() + j);
        const V dchat = ld<T, V>(dcn[r] + j) * w;
        const V dct = V(rc[r]) * (dchat - V(m1[r]) - ch * V(m2[r])) + ld<T, V>(dc[r] + j);
        const V i = ld<T, V>(ws[r] + j), f = ld<T, V>(ws[r] + H + j);
        const V g = ld<T, V>(ws[r] + 2 * H + j);
        st<T, V>(dg[r] + j, dct * g * i * (one - i));
        st<T, V>(dg[r] + H + j, dct * ld<T, V>(cp[r] + j) * f * (one - f));
        st<T, V>(dg[r] + 2 * H + j, dct * i * (one - g * g));
        st<T, V>(dc[r] + j, dct * f);
      }
    });
    for (int r = 0; r < R; ++r) {
      dgc[r] = dg[r];
      hhat[r] = ws[r] + L.hhat();
      rh[r] = ws[r][L.rstd_hh()];
    }
    ln_backward_rows<R>(GH, dgc, s.ln_hh, hhat, rh, dgh);
  }

  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    over_row_groups<1>(s.rows, 12 * s.H, [&]<int R>(int64_t b0) { backward_rows<R>(s, b0); });
  }
};

struct LnGruPointwise {
  template <int R, class T>
  static void forward_rows(const LnFwdStep<T>& s, int64_t b0) {
    const int64_t H = s.H, GH = 3 * H;
    const LnWs L{3, H};
    const T *xg[R], *hg[R];
    T *ws[R], *out[R], *h[R];
    row_ptrs<R>(s.xg, b0, GH, xg);
    row_ptrs<R>(s.hg, b0, GH, hg);
    row_ptrs<R>(s.ws, b0, s.ld_ws, ws);
    row_ptrs<R>(s.out, b0, s.ld_out, out);
    row_ptrs<R>(s.h, b0, H, h);
    T xs[R];
    row_scalars<R>(s, b0, xs);
    prefetch_forward_rows<R>(s, L, ws, hg);
    RowStats<T> rh[R];
    row_stats<R>(hg, GH, rh);
    for (int r = 0; r < R; ++r)
      if (ws[r]) ws[r][L.rstd_hh()] = rh[r].rstd;
    over_columns<T>(H, [&]<class V>(int64_t j) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        V gh[3];
        for (int k = 0; k < 3; ++k) {
          const int64_t q = k * H + j;
          const V hh = (ld<T, V>(hg[r] + q) - V(rh[r].mean)) * V(rh[r].rstd);
          if (ws[r]) st<T, V>(ws[r] + L.hhat() + q, hh);
          if (ws[r] && s.xs) st<T, V>(ws[r] + L.xhat() + q, V(xs[r]) * ld<T, V>(s.xu + q));
          gh[k] = ld<T, V>(s.ln_hh + q) * hh + ld_or0<T, V>(s.b_hh, q);
        }
        const auto o = math::gru_forward<V>(
            input_side<T, V>(s, xg[r], xs[r], j), input_side<T, V>(s, xg[r], xs[r], H + j),
            input_side<T, V>(s, xg[r], xs[r], 2 * H + j), gh[0], gh[1], gh[2], ld<T, V>(h[r] + j));
        if (ws[r]) {
          st<T, V>(ws[r] + j, o.r);
          st<T, V>(ws[r] + H + j, o.z);
          st<T, V>(ws[r] + 2 * H + j, o.n);
          st<T, V>(ws[r] + 3 * H + j, o.hn);
        }
        st<T, V>(out[r] + j, o.h);
        st<T, V>(h[r] + j, o.h);
      }
    });
  }

  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    over_rows_grouped_if(!s.ws, s.rows, 6 * s.H,
                         [&]<int R>(int64_t b0) { forward_rows<R>(s, b0); });
  }

  template <int R, class T>
  static void backward_rows(const LnBwdStep<T>& s, int64_t b0) {
    const int64_t H = s.H, GH = 3 * H;
    const LnWs L{3, H};
    const T *da[R], *db[R], *ws[R], *hp[R], *gnc[R], *hhat[R];
    T *gi[R], *gn[R], *carry[R], *dgh[R];
    T rh[R];
    row_ptrs<R>(s.dh_a, b0, s.ld_a, da);
    row_ptrs<R>(s.dh_b, b0, s.ld_b, db);
    row_ptrs<R>(s.ws, b0, s.ld_ws, ws);
    row_ptrs<R>(s.h_prev, b0, H, hp);
    row_ptrs<R>(s.dgi, b0, GH, gi);
    row_ptrs<R>(s.dgn, b0, GH, gn);
    row_ptrs<R>(s.dh_carry, b0, H, carry);
    row_ptrs<R>(s.dgh, b0, GH, dgh);
    if (ln_prefetch_rows<T>(s.ld_ws))
      for (int r = 0; r < R; ++r) {
        prefetch_values<false>(ws[r], kLnPrefetchAhead * s.ld_ws, L.used());
        if (hp[r]) prefetch_values<false>(hp[r], kLnPrefetchAhead * H, H);
        if (da[r]) prefetch_values<false>(da[r], kLnPrefetchAhead * s.ld_a, H);
        if (db[r]) prefetch_values<false>(db[r], kLnPrefetchAhead * s.ld_b, H);
        prefetch_values<true>(gi[r], kLnPrefetchAhead * GH, GH);
        prefetch_values<true>(gn[r], kLnPrefetchAhead * GH, GH);
        prefetch_values<true>(dgh[r], kLnPrefetchAhead * GH, GH);
      }
    over_columns<T>(H, [&]<class V>(int64_t j) {
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const V dh = incoming<T, V>(da[r], db[r], j);
        const auto o = math::gru_backward<V>(dh, ld<T, V>(ws[r] + j), ld<T, V>(ws[r] + H + j),
                                             ld<T, V>(ws[r] + 2 * H + j),
                                             ld<T, V>(ws[r] + 3 * H + j), ld<T, V>(hp[r] + j));
        st<T, V>(gi[r] + j, o.dr);
        st<T, V>(gi[r] + H + j, o.dz);
        st<T, V>(gi[r] + 2 * H + j, o.dn);
        st<T, V>(gn[r] + j, o.dr);
        st<T, V>(gn[r] + H + j, o.dz);
        st<T, V>(gn[r] + 2 * H + j, o.dhn);
        st<T, V>(carry[r] + j, o.dh_prev);
      }
    });
    for (int r = 0; r < R; ++r) {
      gnc[r] = gn[r];
      hhat[r] = ws[r] + L.hhat();
      rh[r] = ws[r][L.rstd_hh()];
    }
    ln_backward_rows<R>(GH, gnc, s.ln_hh, hhat, rh, dgh);
  }

  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    over_row_groups<1>(s.rows, 9 * s.H, [&]<int R>(int64_t b0) { backward_rows<R>(s, b0); });
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
