// The persistent small-H forward on the GPU (design: cuda/PERSISTENT.md): one cooperative
// launch for the whole time loop, each block's W_hh slice in shared memory, one grid barrier
// (cooperative_groups grid.sync) per step. Bodies in kernels/persistent.cuh, shared with the
// host emulation, which checks them (tests/test_cuda_emulation_persistent.py).
// Registered as torch.ops.fusedrnn_cuda.persistent_forward (not yet chosen by the layer ops:
// that waits for its GPU measurements against cuDNN, see tests/test_cuda.py).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cooperative_groups.h>
#include <torch/library.h>

#include "persistent_op.h"

namespace fusedrnn::gpu {
namespace {

constexpr int kPersistThreads = 256;

// minBlocksPerMultiprocessor = 1: the launch checks co-residency with the occupancy API, so
// ptxas need not budget registers for more blocks per SM; with it the double instantiation
// takes 84 registers on sm_90 instead of spilling 8 bytes at 64 (the cuda-check spill gate).
template <class T>
__global__ void __launch_bounds__(kPersistThreads, 1) persistent_kernel(kernels::PersistArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem_w = reinterpret_cast<T*>(smem_raw);
  T* smem_h = smem_w + (kernels::persist_smem_elems(a.B, a.H, a.G, a.blocks) - a.B * a.H);
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  kernels::persist_load_slice(a, blockIdx.x, threadIdx.x, smem_w);
  __syncthreads();
  for (int64_t s = 0; s < a.T_steps; ++s) {
    kernels::persist_load_h(a, s, threadIdx.x, smem_h);
    __syncthreads();
    kernels::persist_step(a, s, blockIdx.x, threadIdx.x, smem_w, smem_h);
    grid.sync();  // h_t complete in hbuf[s % 2] (and smem_h free) before step s + 1
  }
}

struct PersistGpu {
  template <class F>
  static void dispatch(at::ScalarType st, F&& f) {
    dispatch_dtype<float, double, at::Half, at::BFloat16>(
        st, "fusedrnn_cuda::persistent_forward", "float32, float64, float16 or bfloat16", f);
  }

  template <class T>
  static void run(kernels::PersistArgs<T> a, int64_t blocks) {
    const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
    a.blocks = blocks > 0 ? blocks : std::min<int64_t>(a.H, prop->multiProcessorCount);
    a.threads = kPersistThreads;
    const size_t bytes = size_t(kernels::persist_smem_elems(a.B, a.H, a.G, a.blocks)) * sizeof(T);
    TORCH_CHECK(bytes <= size_t(prop->sharedMemPerBlockOptin), "persistent_forward: a block needs ",
                bytes, " bytes of shared memory (B = ", a.B, ", H = ", a.H, ", ", a.blocks,
                " blocks), the device allows ", prop->sharedMemPerBlockOptin,
                ": use more blocks or the layer ops");
    auto* kernel = &persistent_kernel<T>;
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    int per_sm = 0;
    C10_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistThreads, bytes));
    TORCH_CHECK(a.blocks <= int64_t(per_sm) * prop->multiProcessorCount,
                "persistent_forward: ", a.blocks, " blocks cannot all be resident (", per_sm,
                " per SM x ", prop->multiProcessorCount, " SMs)");
    void* args[] = {&a};
    C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(kernel),
                                               dim3(unsigned(a.blocks)), dim3(kPersistThreads),
                                               args, bytes, at::cuda::getCurrentCUDAStream()));
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> persistent_forward_cuda(
    const std::string& family, const at::Tensor& input, const OptTensor& h0, const OptTensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    bool reverse, int64_t blocks) {
  const c10::cuda::CUDAGuard guard(input.device());
  return persistent_forward<PersistGpu>(family, input, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse,
                                        blocks);
}

}  // namespace
}  // namespace fusedrnn::gpu

TORCH_LIBRARY(fusedrnn_cuda, m) { m.def(fusedrnn::persistent_schema()); }

TORCH_LIBRARY_IMPL(fusedrnn_cuda, CUDA, m) {
  m.impl("persistent_forward", &fusedrnn::gpu::persistent_forward_cuda);
}
