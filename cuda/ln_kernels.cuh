// CUDA passes of the LayerNorm LSTM / GRU, registered by register.cu (ln_lstm_stack,
// ln_gru_stack and the backward ops). Equations, saved values and the time loop (cuBLAS GEMMs
// between the passes): ln_driver.h; the passes' bodies, one thread block per row with block
// reductions for the row statistics: kernels/ln.cuh (checked on the host by
// cuda/emu/emu_ln_kernels.h). float32 and float64 only, like the CPU ops.
#pragma once

#include <algorithm>
#include <type_traits>

#include "cuda_backend.h"
#include "fusedrnn/stack_entries.h"
#include "kernels/ln.cuh"

namespace fusedrnn::gpu {

template <class P>
__global__ void __launch_bounds__(kernels::kLnThreads) ln_kernel(typename P::Args s) {
  kernels::ln_run_program<P>(s);
}

// One block per row (width: the columns a block covers), at most a resident grid's blocks.
template <class P>
void launch_ln(const typename P::Args& s, int64_t width) {
  const int64_t rows = P::rows(s);
  if (rows <= 0) return;
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t threads = kernels::ln_threads(width, kernels::kLnThreads);
  const int64_t per_sm = std::max<int64_t>(1, prop->maxThreadsPerMultiProcessor / threads);
  const kernels::LnLaunch l = kernels::ln_launch(rows, width, kernels::kLnThreads,
                                                 int64_t(prop->multiProcessorCount) * per_sm);
  ln_kernel<P><<<dim3(unsigned(l.blocks)), dim3(unsigned(l.threads)), 0,
                 at::cuda::getCurrentCUDAStream()>>>(s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool kLstm>
struct LnKernels {
  static constexpr bool kScalarInput = false;  // the input side comes as xg
  // A LayerNorm weight's gradient (column sums of dy * xhat) with ATen ops (ln_driver.h).
  template <class T>
  static at::Tensor weight_grad(const at::Tensor& dy, const at::Tensor& xhat) {
    return ln_weight_grad(dy, xhat);
  }
  template <class T>
  static void forward(const LnFwdStep<T>& s) {
    using P = std::conditional_t<kLstm, kernels::LnLstmForward<T>, kernels::LnGruForward<T>>;
    launch_ln<P>(s, s.H);
  }
  template <class T>
  static void backward(const LnBwdStep<T>& s) {
    using P = std::conditional_t<kLstm, kernels::LnLstmBackward<T>, kernels::LnGruBackward<T>>;
    launch_ln<P>(s, s.H);
  }
  template <class T>
  static void rows_forward(const LnRows<T>& s) {
    launch_ln<kernels::LnRowsForward<T>>(s, s.n);
  }
  template <class T>
  static void rows_backward(const LnRowsBwd<T>& s) {
    launch_ln<kernels::LnRowsBackward<T>>(s, s.n);
  }
};

}  // namespace fusedrnn::gpu
