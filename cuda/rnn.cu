// CUDA fused pointwise passes of the Elman RNN (tanh and relu) and their op registration.
//
// Per step: hg [rows, H] comes from one cuBLAS GEMM (layer_driver.h); this kernel computes
// h = act(xg + hg + b_hh) and writes (=) it to the output rows and the running state.
// Backward: dgi [rows, H] (=) act'(h_t) (dh_a + dh_b), h_t read from the saved output.
// Bodies live in kernels/rnn.cuh (also run by the host emulation); 1-D grid-stride launch.
#include <torch/library.h>

#include "cuda_backend.h"
#include "fusedrnn/register_family.h"
#include "kernels/rnn.cuh"

namespace fusedrnn::gpu {
namespace {

template <bool kRelu, class T>
__global__ void __launch_bounds__(kernels::kThreads)
    rnn_forward_kernel(FwdStep<T> s, kernels::Launch l) {
  kernels::rnn_forward_body<kRelu>(s, blockIdx.x, threadIdx.x, l);
}

template <bool kRelu, class T>
__global__ void __launch_bounds__(kernels::kThreads)
    rnn_backward_kernel(BwdStep<T> s, kernels::Launch l) {
  kernels::rnn_backward_body<kRelu>(s, blockIdx.x, threadIdx.x, l);
}

template <bool kRelu>
struct RnnKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    launch_pointwise(&rnn_forward_kernel<kRelu, T>, s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    launch_pointwise(&rnn_backward_kernel<kRelu, T>, s.rows * s.H, s);
  }
};

}  // namespace
}  // namespace fusedrnn::gpu

TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::RnnTanh>, gpu::RnnKernels<false>, gpu::Backend>(m);
  register_family<Traits<Family::RnnRelu>, gpu::RnnKernels<true>, gpu::Backend>(m);
}
