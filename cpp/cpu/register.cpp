// CPU registration of every op family (torch.ops.fusedrnn, dispatch key CPU): the layer,
// cell and stack ops of rnn_tanh, rnn_relu, lstm and gru, each with its backward, run by the
// layer driver on cpu::Backend with the family's pointwise passes (*_kernels.h), and the stack
// ops of the LayerNorm LSTM / GRU (ln_driver.h, ln_kernels.h).
#include <torch/library.h>

#include "fusedrnn/register_family.h"
#include "gru_kernels.h"
#include "ln_kernels.h"
#include "lstm_kernels.h"
#include "rnn_kernels.h"

TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
  using namespace fusedrnn::cpu;
  fusedrnn::register_families<RnnKernels, LstmKernels, GruKernels, Backend>(m);
  fusedrnn::register_ln_families<LnKernels<true>, LnKernels<false>, Backend>(m);
}
