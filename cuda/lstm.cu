// CUDA fused pointwise passes of the LSTM (gate order i, f, g, o) and their op registration.
//
// Per step: hg [rows, 4H] from one cuBLAS GEMM; this kernel computes the gates, writes (=)
// ws [rows, 5H] = [i|f|g|o|c], c (in place), out (or the unprojected h buffer) and h.
// Backward: dh = dh_a + dh_b; writes (=) dgi [rows, 4H], dc <- dc_{t-1} (in place) and, when
// projected, hraw = o tanh(c). Bodies in kernels/lstm.cuh; 1-D grid-stride launch.
#include <torch/library.h>

#include "cuda_backend.h"
#include "fusedrnn/register_family.h"
#include "kernels/lstm.cuh"

namespace fusedrnn::gpu {
namespace {

template <class T>
__global__ void __launch_bounds__(kernels::kThreads)
    lstm_forward_kernel(FwdStep<T> s, kernels::Launch l) {
  kernels::lstm_forward_body(s, blockIdx.x, threadIdx.x, l);
}

template <class T>
__global__ void __launch_bounds__(kernels::kThreads)
    lstm_backward_kernel(BwdStep<T> s, kernels::Launch l) {
  kernels::lstm_backward_body(s, blockIdx.x, threadIdx.x, l);
}

struct LstmKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    launch_pointwise(&lstm_forward_kernel<T>, s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    launch_pointwise(&lstm_backward_kernel<T>, s.rows * s.H, s);
  }
};

}  // namespace
}  // namespace fusedrnn::gpu

TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::Lstm>, gpu::LstmKernels, gpu::Backend>(m);
}
