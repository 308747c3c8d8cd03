// CUDA registration of every op family (torch.ops.fusedrnn, dispatch key CUDA): the layer,
// cell and stack ops of rnn_tanh, rnn_relu, lstm and gru, each with its backward, run by the
// layer driver on gpu::Backend (cuBLAS GEMMs) with the family's pointwise passes
// (*_kernels.cuh, each a pointwise_kernel of cuda_backend.h over a body of kernels/*.cuh),
// and the stack ops of the LayerNorm LSTM / GRU (ln_driver.h, ln_kernels.cuh).
#include <torch/library.h>

#include "fusedrnn/register_family.h"
#include "gru_kernels.cuh"
#include "ln_kernels.cuh"
#include "lstm_kernels.cuh"
#include "rnn_kernels.cuh"

TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
  using namespace fusedrnn::gpu;
  fusedrnn::register_families<RnnKernels, LstmKernels, GruKernels, Backend>(m);
  fusedrnn::register_ln_families<LnKernels<true>, LnKernels<false>, Backend>(m);
}
