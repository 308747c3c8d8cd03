// CPU fused pointwise passes of the LSTM (gate order i, f, g, o) and their op registration.
//
// Forward step : a = xg + hg + b_hh [rows, 4H]; i,f,o = sigmoid, g = tanh; c = f c' + i g;
//                h = o tanh(c). Writes (=) out (or the unprojected h buffer), the running h/c
//                (in place) and ws [rows, 5H] = [i | f | g | o | c].
// Backward step: dh = dh_a + dh_b, dc (in/out, += path from h); writes (=) dgi [rows, 4H],
//                dc <- dc f, and hraw = o tanh(c) for the projection's weight gradient.
#include <torch/library.h>

#include "cpu_backend.h"
#include "fusedrnn/cell_math.h"
#include "fusedrnn/op_entries.h"

namespace fusedrnn::cpu {
namespace {

struct LstmKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    using A = acc_t<T>;
    const int64_t H = s.H;
    for_rows(s.rows, 4 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* xg = s.xg + b * 4 * H;
        const T* hg = s.hg + b * 4 * H;
        T* ws = s.ws + b * s.ld_ws;
        T* c = s.c + b * H;
        T* out = s.out + b * s.ld_out;
        T* h = s.h + b * H;
        for (int64_t j = 0; j < H; ++j) {
          A a[4];
          for (int k = 0; k < 4; ++k) {
            const int64_t q = k * H + j;
            a[k] = A(xg[q]) + A(hg[q]) + (s.b_hh ? A(s.b_hh[q]) : A(0));
          }
          const auto r = math::lstm_forward<A>(a[0], a[1], a[2], a[3], A(c[j]));
          ws[j] = T(r.i);
          ws[H + j] = T(r.f);
          ws[2 * H + j] = T(r.g);
          ws[3 * H + j] = T(r.o);
          ws[4 * H + j] = T(r.c);
          c[j] = T(r.c);
          out[j] = T(r.h);
          if (s.write_h) h[j] = T(r.h);
        }
      }
    });
  }

  template <class T>
  static void backward(const BwdStep<T>& s) {
    using A = acc_t<T>;
    const int64_t H = s.H;
    for_rows(s.rows, 4 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
        const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
        const T* ws = s.ws + b * s.ld_ws;
        const T* cp = s.c_prev + b * H;
        T* dc = s.dc + b * H;
        T* dg = s.dgi + b * 4 * H;
        T* hraw = s.hraw ? s.hraw + b * H : nullptr;
        for (int64_t j = 0; j < H; ++j) {
          const A dh = (da ? A(da[j]) : A(0)) + (db ? A(db[j]) : A(0));
          const auto r = math::lstm_backward<A>(dh, A(dc[j]), A(ws[j]), A(ws[H + j]),
                                                A(ws[2 * H + j]), A(ws[3 * H + j]),
                                                A(ws[4 * H + j]), A(cp[j]));
          dg[j] = T(r.dai);
          dg[H + j] = T(r.daf);
          dg[2 * H + j] = T(r.dag);
          dg[3 * H + j] = T(r.dao);
          dc[j] = T(r.dc_prev);
          if (hraw) hraw[j] = T(r.h);
        }
      }
    });
  }
};

}  // namespace
}  // namespace fusedrnn::cpu

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::Lstm>, cpu::LstmKernels, cpu::Backend>(m);
}
