// The fused per-step pointwise passes of every family on the CPU, written once over a value
// type V that is either a SIMD vector (at::vec::Vectorized<T>) or the scalar T (row tails).
// Layouts and what is read/written: see step_args.h; saved values: see cell_math.h.
// Rows are independent; a step is split over threads only above ~16K elements.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>

#include <algorithm>
#include <type_traits>

#include "fusedrnn/cell_math.h"
#include "fusedrnn/step_args.h"
#include "vec_ops.h"

namespace fusedrnn::cpu {
inline namespace CPU_CAPABILITY {

template <class V>
struct Lanes {
  static constexpr int64_t n = V::size();
};

template <class T, class V>
inline V ld(const T* p) {
  if constexpr (std::is_same_v<V, T>) {
    return *p;
  } else {
    return V::loadu(p);
  }
}

template <class T, class V>
inline V ld_or0(const T* p, int64_t j) {
  return p ? ld<T, V>(p + j) : V(T(0));
}

template <class T, class V>
inline void st(T* p, const V& v) {
  if constexpr (std::is_same_v<V, T>) {
    *p = v;
  } else {
    v.store(p);
  }
}

// Calls body.template operator()<V>(j) for SIMD chunks and then <T> for the row's tail.
template <class T, class Body>
inline void over_columns(int64_t H, Body&& body) {
  using Vec = at::vec::Vectorized<T>;
  int64_t j = 0;
  for (; j + Vec::size() <= H; j += Vec::size()) body.template operator()<Vec>(j);
  for (; j < H; ++j) body.template operator()<T>(j);
}

template <class F>
inline void over_rows(int64_t rows, int64_t width, F&& f) {
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(1, width));
  if (rows <= grain) {
    for (int64_t b = 0; b < rows; ++b) f(b);
  } else {
    at::parallel_for(0, rows, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) f(b);
    });
  }
}

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

// dh = dh_a + dh_b with either absent.
template <class T, class V>
inline V incoming(const T* a, const T* b, int64_t j) {
  if (a && b) return ld<T, V>(a + j) + ld<T, V>(b + j);
  if (a) return ld<T, V>(a + j);
  if (b) return ld<T, V>(b + j);
  return V(T(0));
}

template <bool kRelu>
struct RnnPointwise {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    const int64_t H = s.H;
    over_rows(s.rows, H, [&](int64_t b) {
      const T* xg = s.xg + b * H;
      const T* hg = s.hg + b * H;
      T* out = s.out + b * s.ld_out;
      T* h = s.h + b * H;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V pre = ld<T, V>(xg + j) + ld<T, V>(hg + j) + ld_or0<T, V>(s.b_hh, j);
        const V v = math::rnn_act<kRelu>(pre);
        st<T, V>(out + j, v);
        st<T, V>(h + j, v);
      });
    });
  }

  template <class T>
  static void backward(const BwdStep<T>& s) {
    const int64_t H = s.H;
    over_rows(s.rows, H, [&](int64_t b) {
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
      const T* h = s.ws + b * s.ld_ws;
      T* dg = s.dgi + b * H;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V dh = incoming<T, V>(da, db, j);
        st<T, V>(dg + j, math::rnn_act_backward<kRelu>(dh, ld<T, V>(h + j)));
      });
    });
  }
};

struct LstmPointwise {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    const int64_t H = s.H;
    over_rows(s.rows, 4 * H, [&](int64_t b) {
      const T* xg = s.xg + b * 4 * H;
      const T* hg = s.hg + b * 4 * H;
      T* ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
      T* c = s.c + b * H;
      T* out = s.out + b * s.ld_out;
      T* h = s.write_h ? s.h + b * H : nullptr;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        V a[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t q = k * H + j;
          a[k] = ld<T, V>(xg + q) + ld<T, V>(hg + q) + ld_or0<T, V>(s.b_hh, q);
        }
        const auto r = math::lstm_forward<V>(a[0], a[1], a[2], a[3], ld<T, V>(c + j));
        if (ws) {
          st<T, V>(ws + j, r.i);
          st<T, V>(ws + H + j, r.f);
          st<T, V>(ws + 2 * H + j, r.g);
          st<T, V>(ws + 3 * H + j, r.o);
          st<T, V>(ws + 4 * H + j, r.c);
        }
        st<T, V>(c + j, r.c);
        st<T, V>(out + j, r.h);
        if (h) st<T, V>(h + j, r.h);
      });
    });
  }

  template <class T>
  static void backward(const BwdStep<T>& s) {
    const int64_t H = s.H;
    over_rows(s.rows, 4 * H, [&](int64_t b) {
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
      const T* ws = s.ws + b * s.ld_ws;
      const T* cp = s.c_prev + b * s.ld_c;
      T* dc = s.dc + b * H;
      T* dg = s.dgi + b * 4 * H;
      T* hraw = s.hraw ? s.hraw + b * H : nullptr;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V dh = incoming<T, V>(da, db, j);
        const auto r = math::lstm_backward<V>(
            dh, ld<T, V>(dc + j), ld<T, V>(ws + j), ld<T, V>(ws + H + j), ld<T, V>(ws + 2 * H + j),
            ld<T, V>(ws + 3 * H + j), ld<T, V>(ws + 4 * H + j), ld<T, V>(cp + j));
        st<T, V>(dg + j, r.dai);
        st<T, V>(dg + H + j, r.daf);
        st<T, V>(dg + 2 * H + j, r.dag);
        st<T, V>(dg + 3 * H + j, r.dao);
        st<T, V>(dc + j, r.dc_prev);
        if (hraw) st<T, V>(hraw + j, r.h);
      });
    });
  }
};

struct GruPointwise {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    const int64_t H = s.H;
    over_rows(s.rows, 3 * H, [&](int64_t b) {
      const T* xg = s.xg + b * 3 * H;
      const T* hg = s.hg + b * 3 * H;
      T* ws = s.ws ? s.ws + b * s.ld_ws : nullptr;
      T* out = s.out + b * s.ld_out;
      T* h = s.h + b * H;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V hr = ld<T, V>(hg + j) + ld_or0<T, V>(s.b_hh, j);
        const V hz = ld<T, V>(hg + H + j) + ld_or0<T, V>(s.b_hh, H + j);
        const V hn = ld<T, V>(hg + 2 * H + j) + ld_or0<T, V>(s.b_hh, 2 * H + j);
        const auto r = math::gru_forward<V>(ld<T, V>(xg + j), ld<T, V>(xg + H + j),
                                            ld<T, V>(xg + 2 * H + j), hr, hz, hn, ld<T, V>(h + j));
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
  static void backward(const BwdStep<T>& s) {
    const int64_t H = s.H;
    over_rows(s.rows, 3 * H, [&](int64_t b) {
      const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
      const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
      const T* ws = s.ws + b * s.ld_ws;
      const T* hp = s.h_prev + b * H;
      T* g = s.dgh + b * s.ld_dg;
      T* carry = s.dh_carry + b * H;
      over_columns<T>(H, [&]<class V>(int64_t j) {
        const V dh = incoming<T, V>(da, db, j);
        const auto r = math::gru_backward<V>(dh, ld<T, V>(ws + j), ld<T, V>(ws + H + j),
                                             ld<T, V>(ws + 2 * H + j), ld<T, V>(ws + 3 * H + j),
                                             ld<T, V>(hp + j));
        st<T, V>(g + j, r.dr);
        st<T, V>(g + H + j, r.dz);
        st<T, V>(g + 2 * H + j, r.dhn);
        st<T, V>(g + 3 * H + j, r.dn);
        st<T, V>(carry + j, r.dh_prev);
      });
    });
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace fusedrnn::cpu
