// CPU registration of every op family (torch.ops.fusedrnn, dispatch key CPU): the layer,
// cell and stack ops of rnn_tanh, rnn_relu, lstm and gru, each with its backward, run by the
// layer driver on cpu::Backend with the family's pointwise passes (*_kernels.h).
#include <torch/library.h>

#include "fusedrnn/register_family.h"
#include "gru_kernels.h"
#include "lstm_kernels.h"
#include "rnn_kernels.h"

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::RnnTanh>, cpu::RnnKernels<false>, cpu::Backend>(m);
  register_family<Traits<Family::RnnRelu>, cpu::RnnKernels<true>, cpu::Backend>(m);
  register_family<Traits<Family::Lstm>, cpu::LstmKernels, cpu::Backend>(m);
  register_family<Traits<Family::Gru>, cpu::GruKernels, cpu::Backend>(m);
}
