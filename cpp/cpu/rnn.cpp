// CPU fused pointwise passes of the Elman RNN (tanh and relu) and their op registration.
//
// Forward step : h = act(xg + hg + b_hh), written (=) to out and the running state.
// Backward step: dgi = act'(h) * (dh_a + dh_b); h_t is read from the saved output (ws).
// Nothing else is saved. Rows are independent: parallel over rows above a size threshold.
#include <torch/library.h>

#include "cpu_backend.h"
#include "fusedrnn/cell_math.h"
#include "fusedrnn/op_entries.h"

namespace fusedrnn::cpu {
namespace {

template <bool kRelu>
struct RnnKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    using A = acc_t<T>;
    const int64_t H = s.H;
    for_rows(s.rows, H, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* xg = s.xg + b * H;
        const T* hg = s.hg + b * H;
        T* out = s.out + b * s.ld_out;
        T* h = s.h + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const A pre = A(xg[j]) + A(hg[j]) + (s.b_hh ? A(s.b_hh[j]) : A(0));
          const T v = T(math::rnn_act<kRelu>(pre));
          out[j] = v;
          h[j] = v;
        }
      }
    });
  }

  template <class T>
  static void backward(const BwdStep<T>& s) {
    using A = acc_t<T>;
    const int64_t H = s.H;
    for_rows(s.rows, H, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* da = s.dh_a ? s.dh_a + b * s.ld_a : nullptr;
        const T* db = s.dh_b ? s.dh_b + b * s.ld_b : nullptr;
        const T* h = s.ws + b * s.ld_ws;
        T* dg = s.dgi + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const A dh = (da ? A(da[j]) : A(0)) + (db ? A(db[j]) : A(0));
          dg[j] = T(math::rnn_act_backward<kRelu>(dh, A(h[j])));
        }
      }
    });
  }
};

}  // namespace
}  // namespace fusedrnn::cpu

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::RnnTanh>, cpu::RnnKernels<false>, cpu::Backend>(m);
  register_family<Traits<Family::RnnRelu>, cpu::RnnKernels<true>, cpu::Backend>(m);
}
