// CUDA fused pointwise passes of the GRU (gate order r, z, n; reset applied to W_hn h + b_hn)
// and their op registration.
//
// Per step: hg [rows, 3H] from one cuBLAS GEMM; this kernel writes (=) ws [rows, 4H] =
// [r|z|n|hn], out and h (in place). Backward: writes (=) dgh = [dr, dz, dn r, dn] [rows, 4H]
// and dh_carry = z dh; the driver then adds (+=, beta = 1) dgh W_hh to dh_carry.
// Bodies in kernels/gru.cuh; 1-D grid-stride launch.
#include <torch/library.h>

#include "cuda_backend.h"
#include "fusedrnn/register_family.h"
#include "kernels/gru.cuh"

namespace fusedrnn::gpu {
namespace {

template <class T>
__global__ void __launch_bounds__(kernels::kThreads)
    gru_forward_kernel(FwdStep<T> s, kernels::Launch l) {
  kernels::gru_forward_body(s, blockIdx.x, threadIdx.x, l);
}

template <class T>
__global__ void __launch_bounds__(kernels::kThreads)
    gru_backward_kernel(BwdStep<T> s, kernels::Launch l) {
  kernels::gru_backward_body(s, blockIdx.x, threadIdx.x, l);
}

struct GruKernels {
  template <class T>
  static void forward(const FwdStep<T>& s) {
    launch_pointwise(&gru_forward_kernel<T>, s.rows * s.H, s);
  }
  template <class T>
  static void backward(const BwdStep<T>& s) {
    launch_pointwise(&gru_backward_kernel<T>, s.rows * s.H, s);
  }
};

}  // namespace
}  // namespace fusedrnn::gpu

TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
  using namespace fusedrnn;
  register_family<Traits<Family::Gru>, gpu::GruKernels, gpu::Backend>(m);
}
