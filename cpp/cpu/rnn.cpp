// CPU registration of the Elman RNN ops (tanh and relu).
//
// Forward step : h = act(xg + hg + b_hh), written (=) to out and the running state.
// Backward step: dgi = act'(h) * (dh_a + dh_b); h_t is read from the saved output.
// Nothing else is saved. The pointwise passes live in pointwise.h (per-ISA tables).
#include <torch/library.h>

#include "cpu_backend.h"
#include "fusedrnn/register_family.h"
#include "kernel_table.h"

namespace fusedrnn::cpu {
namespace {

template <bool kRelu>
struct RnnKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    (kRelu ? kernels_for<T>().rnn_relu_forward : kernels_for<T>().rnn_tanh_forward)(s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    (kRelu ? kernels_for<T>().rnn_relu_backward : kernels_for<T>().rnn_tanh_backward)(s);
  }
};

}  // namespace
}  // namespace fusedrnn::cpu

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::RnnTanh>, cpu::RnnKernels<false>, cpu::Backend>(m);
  register_family<Traits<Family::RnnRelu>, cpu::RnnKernels<true>, cpu::Backend>(m);
}
