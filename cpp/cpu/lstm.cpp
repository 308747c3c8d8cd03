// CPU registration of the LSTM ops (gate order i, f, g, o; optional projection).
//
// Forward step : a = xg + hg + b_hh [rows, 4H]; i,f,o = sigmoid, g = tanh; c = f c' + i g;
//                h = o tanh(c). Writes (=) out (or the unprojected h buffer), the running h/c
//                (in place) and ws [rows, 5H] = [i | f | g | o | c].
// Backward step: dh = dh_a + dh_b, dc (in/out); writes (=) dgi [rows, 4H], dc <- dc f, and
//                hraw = o tanh(c) for the projection's weight gradient.
// The pointwise passes live in pointwise.h (per-ISA tables).
#include <torch/library.h>

#include "cpu_backend.h"
#include "fusedrnn/op_entries.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {
namespace {

struct LstmKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    kernels_for<T>().lstm_forward(s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    kernels_for<T>().lstm_backward(s);
  }
};

}  // namespace
}  // namespace fusedrnn::cpu

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::Lstm>, cpu::LstmKernels, cpu::Backend>(m);
}
