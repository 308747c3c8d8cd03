// Host-emulation registration of every op family (torch.ops.fusedrnn_emu, dispatch key CPU):
// the layer, cell and stack ops of rnn_tanh, rnn_relu, lstm and gru, each with its backward,
// run by the layer driver on emu::Backend with the CUDA kernel bodies (emu_*_kernels.h), and
// the LayerNorm LSTM / GRU stack ops (emu_ln_kernels.h).
// The persistent op registers itself in emu_persistent.cpp.
#include <torch/library.h>

#include "emu_gru_kernels.h"
#include "emu_ln_kernels.h"
#include "emu_lstm_kernels.h"
#include "emu_rnn_kernels.h"
#include "fusedrnn/register_family.h"

TORCH_LIBRARY_IMPL(fusedrnn_emu, CPU, m) {
  using namespace fusedrnn::emu;
  fusedrnn::register_families<RnnKernels, LstmKernels, GruKernels, Backend>(m);
  fusedrnn::register_ln_families<LnKernels<true>, LnKernels<false>, Backend>(m);
}
