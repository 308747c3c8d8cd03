// CPU fused pointwise passes of the GRU (gate order r, z, n; torch.nn's reset-after form
// n = tanh(x_n + r (W_hn h + b_hn))) and their op registration.
//
// Forward step : reads xg [rows, 3H] (with b_ih), hg [rows, 3H], b_hh, the running h;
//                writes (=) out, h (in place), ws [rows, 4H] = [r | z | n | hn].
// Backward step: dh = dh_a + dh_b; writes (=) dgi = [dr, dz, dn] (input side),
//                dgh = [dr, dz, dn r] (hidden side), dh_carry = z dh (the driver then adds
//                dgh W_hh to it).
#include <torch/library.h>

#include "cpu_backend.h"
#include "fusedrnn/cell_math.h"
#include "fusedrnn/op_entries.h"

namespace fusedrnn::cpu {
namespace {

struct GruKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    using A = acc_t<T>;
    const int64_t H = s.H;
    for_rows(s.rows, 3 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* xg = s.xg + b * 3 * H;
        const T* hg = s.hg + b * 3 * H;
        T* ws = s.ws + b * s.ld_ws;
        T* out = s.out + b * s.ld_out;
        T* h = s.h + b * H;
        const T* bh = s.b_hh;
        for (int64_t j = 0; j < H; ++j) {
          const A hr = A(hg[j]) + (bh ? A(bh[j]) : A(0));
          const A hz = A(hg[H + j]) + (bh ? A(bh[H + j]) : A(0));
          const A hn = A(hg[2 * H + j]) + (bh ? A(bh[2 * H + j]) : A(0));
          const auto r = math::gru_forward<A>(A(xg[j]), A(xg[H + j]), A(xg[2 * H + j]), hr, hz,
                                              hn, A(h[j]));
          ws[j] = T(r.r);
          ws[H + j] = T(r.z);
          ws[2 * H + j] = T(r.n);
          ws[3 * H + j] = T(r.hn);
          out[j] = T(r.h);
          h[j] = T(r.h);
        }
      }
    });
  }

  template <class T>
  static void backward(const BwdStep<T>& s) {
    using A = acc_t<T>;
    const int64_t H = s.H;
    for_rows(s.rows, 3 * H, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
        const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
        const T* ws = s.ws + b * s.ld_ws;
        const T* hp = s.h_prev + b * H;
        T* gi = s.dgi + b * 3 * H;
        T* gh = s.dgh + b * 3 * H;
        T* carry = s.dh_carry + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const A dh = (da ? A(da[j]) : A(0)) + (db ? A(db[j]) : A(0));
          const auto r = math::gru_backward<A>(dh, A(ws[j]), A(ws[H + j]), A(ws[2 * H + j]),
                                               A(ws[3 * H + j]), A(hp[j]));
          gi[j] = gh[j] = T(r.dr);
          gi[H + j] = gh[H + j] = T(r.dz);
          gi[2 * H + j] = T(r.dn);
          gh[2 * H + j] = T(r.dhn);
          carry[j] = T(r.dh_prev);
        }
      }
    });
  }
};

}  // namespace
}  // namespace fusedrnn::cpu

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::Gru>, cpu::GruKernels, cpu::Backend>(m);
}
