// The CPU passes of the LayerNorm LSTM / GRU (ln_step_args.h): each row's mean and variance
// are taken inside the fused pointwise pass, over SIMD vectors (row tails scalar), so a step is
// the recurrent GEMM plus one pass over its rows. Two-pass statistics (mean, then the mean
// squared deviation): no cancellation when |mean| >> std. Rows are independent and split over
// threads like the other pointwise passes (pointwise.h, over_rows).
#pragma once

#include <ATen/cpu/vec/functional.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "fusedrnn/ln_step_args.h"
#include "pointwise.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

// A running sum of SIMD chunks and scalar tails (over_columns' two value types).
template <class T>
struct RowSum {
  at::vec::Vectorized<T> v = at::vec::Vectorized<T>(T(0));
  T s = T(0);
  template <class V>
  void add(const V& x) {
    if constexpr (std::is_same_v<V, T>) {
      s += x;
    } else {
      v = v + x;
    }
  }
  T total() const {  // ATen's shuffle-tree horizontal sum (a few instructions per row)
    using V = at::vec::Vectorized<T>;
    return s + at::vec::vec_reduce_all<T>([](const V& a, const V& b) { return a + b; }, v);
  }
};

template <class T>
struct RowStats {
  T mean, rstd;
};

template <class T>
inline RowStats<T> row_stats(const T* v, int64_t n) {
  RowSum<T> s1;
  over_columns<T>(n, [&]<class V>(int64_t q) { s1.add(ld<T, V>(v + q)); });
  const T mean = s1.total() / T(n);
  RowSum<T> s2;
  over_columns<T>(n, [&]<class V>(int64_t q) {
    const V d = ld<T, V>(v + q) - V(mean);
    s2.add(d * d);
  });
  return {mean, T(1) / std::sqrt(s2.total() / T(n) + T(kLnEps))};
}

// dv (=) rstd (dy w - mean(dy w) - xhat mean(dy w xhat)) over one row of n.
template <class T>
inline void ln_backward_row(int64_t n, const T* dy, const T* w, const T* xhat, T rstd, T* dv) {
  RowSum<T> s1, s2;
  over_columns<T>(n, [&]<class V>(int64_t q) {
    const V dx = ld<T, V>(dy + q) * ld<T, V>(w + q);
    s1.add(dx);
    s2.add(dx * ld<T, V>(xhat + q));
  });
  const T m1 = s1.total() / T(n), m2 = s2.total() / T(n);
  over_columns<T>(n, [&]<class V>(int64_t q) {
    const V dx = ld<T, V>(dy + q) * ld<T, V>(w + q);
    st<T, V>(dv + q, V(rstd) * (dx - V(m1) - ld<T, V>(xhat + q) * V(m2)));
  });
}

struct LnRowsPass {
  template <class T>
  static void forward(const LnRows<T>& s) {
    over_rows(s.rows, 2 * s.n, [&](int64_t b) {
      const T* v = s.v + b * s.ld_v;
      T* y = s.y + b * s.ld_y;
      T* xh = s.xhat ? s.xhat + b * s.ld_ws : nullptr;
      const RowStats<T> r = row_stats(v, s.n);
      if (s.rstd) s.rstd[b * s.ld_ws] = r.rstd;
      over_columns<T>(s.n, [&]<class V>(int64_t q) {
        const V x = (ld<T, V>(v + q) - V(r.mean)) * V(r.rstd);
        if (xh) st<T, V>(xh + q, x);
        st<T, V>(y + q, ld<T, V>(s.w + q) * x + ld_or0<T, V>(s.b1, q) + ld_or0<T, V>(s.b2, q));
      });
    });
  }
  template <class T>
  static void backward(const LnRowsBwd<T>& s) {
    over_rows(s.rows, 2 * s.n, [&](int64_t b) {
      ln_backward_row(s.n, s.dy + b * s.ld_dy, s.w, s.xhat + b * s.ld_ws, s.rstd[b * s.ld_ws],
                      s.dv + b * s.ld_dv);
    });
  }
};

// Blocks of kRows rows accumulate into their own partial row (in parallel), then the partials
// are added in block order: one pass over a and b, against a product buffer plus a reduction.
struct LnColDotPass {
  static constexpr int64_t kRows = 256;
  template <class T>
  static void run(const LnColDot<T>& s) {
    const int64_t n = s.n, blocks = (s.rows + kRows - 1) / kRows;
    std::vector<T> part(size_t(std::max<int64_t>(blocks, 1) * n), T(0));
    at::parallel_for(0, blocks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        T* acc = part.data() + k * n;
        const int64_t r1 = std::min(s.rows, (k + 1) * kRows);
        for (int64_t r = k * kRows; r < r1; ++r) {
          const T* a = s.a + r * s.lda;
          const T* b = s.b + r * s.ldb;
          over_columns<T>(n, [&]<class V>(int64_t q) {
            st<T, V>(acc + q, ld<T, V>(acc + q) + ld<T, V>(a + q) * ld<T, V>(b + q));
          });
        }
      }
    });
    std::fill(s.out, s.out + n, T(0));
    for (int64_t k = 0; k < blocks; ++k) {
      const T* acc = part.data() + k * n;
      over_columns<T>(n, [&]<class V>(int64_t q) {
        st<T, V>(s.out + q, ld<T, V>(s.out + q) + ld<T, V>(acc + q));
      });
    }
  }
};

struct LnLstmPointwise {
  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    const int64_t H = s.H, GH = 4 * H;
    const LnWs L{4, H};
    over_rows(s.rows, 2 * GH, [&](int64_t b) {
      const T* xg = s.xg + b * GH;
      const T* hg = s.hg + b * GH;
      T* ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
      T* c = s.c + b * H;
      T* out = s.out + b * s.ld_out;
      const RowStats<T> rh = row_stats(hg, GH);
      // Gates and the new cell state; o waits in out (or ws) for the normalised c.
      over_columns<T>(H, [&]<class V>(int64_t j) {
        V a[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t q = k * H + j;
          const V hh = (ld<T, V>(hg + q) - V(rh.mean)) * V(rh.rstd);
          if (ws) st<T, V>(ws + L.hhat() + q, hh);
          a[k] = ld<T, V>(xg + q) + ld<T, V>(s.ln_hh + q) * hh;
        }
        const V i = math::sigmoid(a[0]), f = math::sigmoid(a[1]), g = math::tanh_(a[2]);
        const V o = math::sigmoid(a[3]);
        const V cn = f * ld<T, V>(c + j) + i * g;
        if (ws) {
          st<T, V>(ws + j, i);
          st<T, V>(ws + H + j, f);
          st<T, V>(ws + 2 * H + j, g);
          st<T, V>(ws + 3 * H + j, o);
          st<T, V>(ws + 4 * H + j, cn);
        }
        st<T, V>(c + j, cn);
        st<T, V>(out + j, o);
      });
      const RowStats<T> rc = row_stats(c, H);
      if (ws) {
        ws[L.rstd_hh()] = rh.rstd;
        ws[L.rstd_c()] = rc.rstd;
      }
      T* h = s.h + b * H;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V ch = (ld<T, V>(c + j) - V(rc.mean)) * V(rc.rstd);
        if (ws) st<T, V>(ws + L.chat() + j, ch);
        const V hv =
            ld<T, V>(out + j) * math::tanh_(ld<T, V>(s.ln_c + j) * ch + ld_or0<T, V>(s.ln_c_b, j));
        st<T, V>(out + j, hv);
        st<T, V>(h + j, hv);
      });
    });
  }

  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    const int64_t H = s.H, GH = 4 * H;
    const LnWs L{4, H};
    over_rows(s.rows, 3 * GH, [&](int64_t b) {
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
      const T* ws = s.ws + b * s.ld_ws;
      const T* cp = s.c_prev + b * s.ld_c;
      const T* chat = ws + L.chat();
      T* dc = s.dc + b * H;
      T* dg = s.dgi + b * GH;
      T* dcn = s.dcn + b * H;
      // d(LN(c) + b) and the output gate; sums for the backward of LN(c).
      RowSum<T> s1, s2;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V dh = incoming<T, V>(da, db, j);
        const V o = ld<T, V>(ws + 3 * H + j), ch = ld<T, V>(chat + j), w = ld<T, V>(s.ln_c + j);
        const V t = math::tanh_(w * ch + ld_or0<T, V>(s.ln_c_b, j));
        const V dn = dh * o * (V(T(1)) - t * t);
        st<T, V>(dcn + j, dn);
        st<T, V>(dg + 3 * H + j, dh * t * o * (V(T(1)) - o));
        s1.add(dn * w);
        s2.add(dn * w * ch);
      });
      const T m1 = s1.total() / T(H), m2 = s2.total() / T(H), rc = ws[L.rstd_c()];
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V ch = ld<T, V>(chat + j);
        const V dchat = ld<T, V>(dcn + j) * ld<T, V>(s.ln_c + j);
        const V dct = V(rc) * (dchat - V(m1) - ch * V(m2)) + ld<T, V>(dc + j);
        const V i = ld<T, V>(ws + j), f = ld<T, V>(ws + H + j), g = ld<T, V>(ws + 2 * H + j);
        const V one(T(1));
        st<T, V>(dg + j, dct * g * i * (one - i));
        st<T, V>(dg + H + j, dct * ld<T, V>(cp + j) * f * (one - f));
        st<T, V>(dg + 2 * H + j, dct * i * (one - g * g));
        st<T, V>(dc + j, dct * f);
      });
      ln_backward_row(GH, dg, s.ln_hh, ws + L.hhat(), ws[L.rstd_hh()], s.dgh + b * GH);
    });
  }
};

struct LnGruPointwise {
  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    const int64_t H = s.H, GH = 3 * H;
    const LnWs L{3, H};
    over_rows(s.rows, 2 * GH, [&](int64_t b) {
      const T* xg = s.xg + b * GH;
      const T* hg = s.hg + b * GH;
      T* ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
      T* out = s.out + b * s.ld_out;
      T* h = s.h + b * H;
      const RowStats<T> rh = row_stats(hg, GH);
      if (ws) ws[L.rstd_hh()] = rh.rstd;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        V gh[3];
        for (int k = 0; k < 3; ++k) {
          const int64_t q = k * H + j;
          const V hh = (ld<T, V>(hg + q) - V(rh.mean)) * V(rh.rstd);
          if (ws) st<T, V>(ws + L.hhat() + q, hh);
          gh[k] = ld<T, V>(s.ln_hh + q) * hh + ld_or0<T, V>(s.b_hh, q);
        }
        const auto r =
            math::gru_forward<V>(ld<T, V>(xg + j), ld<T, V>(xg + H + j), ld<T, V>(xg + 2 * H + j),
                                 gh[0], gh[1], gh[2], ld<T, V>(h + j));
        if (ws) {
          st<T, V>(ws + j, r.r);
          st<T, V>(ws + H + j, r.z);
          st<T, V>(ws + 2 * H + j, r.n);
          st<T, V>(ws + 3 * H + j, r.hn);
        }
        st<T, V>(out + j, r.h);
        st<T, V>(h + j, r.h);
      });
    });
  }

  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    const int64_t H = s.H, GH = 3 * H;
    const LnWs L{3, H};
    over_rows(s.rows, 3 * GH, [&](int64_t b) {
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
      const T* ws = s.ws + b * s.ld_ws;
      const T* hp = s.h_prev + b * H;
      T* gi = s.dgi + b * GH;
      T* gn = s.dgn + b * GH;
      T* carry = s.dh_carry + b * H;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V dh = incoming<T, V>(da, db, j);
        const auto r = math::gru_backward<V>(dh, ld<T, V>(ws + j), ld<T, V>(ws + H + j),
                                             ld<T, V>(ws + 2 * H + j), ld<T, V>(ws + 3 * H + j),
                                             ld<T, V>(hp + j));
        st<T, V>(gi + j, r.dr);
        st<T, V>(gi + H + j, r.dz);
        st<T, V>(gi + 2 * H + j, r.dn);
        st<T, V>(gn + j, r.dr);
        st<T, V>(gn + H + j, r.dz);
        st<T, V>(gn + 2 * H + j, r.dhn);
        st<T, V>(carry + j, r.dh_prev);
      });
      ln_backward_row(GH, gn, s.ln_hh, ws + L.hhat(), ws[L.rstd_hh()], s.dgh + b * GH);
    });
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
