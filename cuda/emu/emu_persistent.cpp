// Host emulation of cuda/persistent.cu: the phased bodies of kernels/persistent.cuh run as a
// legal schedule of the GPU's (cuda/PERSISTENT.md): per step, block after block (in reverse
// under set_launch(..., reverse=True)), each block's phase for all its threads before the
// next phase. Races show up as NaN: every block's shared memory starts as NaN, and the
// buffer a step writes (hbuf[s % 2]) is filled with NaN when the step starts, so a read of
// the wrong buffer, or of a value another block has not yet written, is NaN.
// Registered as torch.ops.fusedrnn_emu.persistent_forward (blocks = 0: 7 blocks, so a test of
// H > 7 gets uneven unit ranges by default).
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../persistent_op.h"
#include "emu_launch.h"

namespace fusedrnn::emu {
namespace {

template <class T>
void fill_nan(T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = std::numeric_limits<T>::quiet_NaN();
}

struct PersistEmu {
  template <class F>
  static void dispatch(at::ScalarType st, F&& f) {
    dispatch_dtype<float, double, at::Half, at::BFloat16>(
        st, "fusedrnn_emu::persistent_forward",
        "float32, float64, float16 or bfloat16 (host emulation)", f);
  }

  template <class T>
  static void run(kernels::PersistArgs<T> a, int64_t blocks) {
    const LaunchLimits& lim = limits();
    a.blocks = blocks > 0 ? blocks : 7;
    a.threads = lim.threads;
    const int64_t smem = kernels::persist_smem_elems(a.B, a.H, a.G, a.blocks);
    const int64_t w_elems = smem - a.B * a.H;
    std::vector<T> shared(size_t(a.blocks * smem));  // every block's shared memory
    fill_nan(shared.data(), int64_t(shared.size()));
    auto blk = [&](int64_t i) { return lim.reverse ? a.blocks - 1 - i : i; };
    auto thr = [&](int64_t i) { return lim.reverse ? a.threads - 1 - i : i; };
    note('K');  // one launch for the whole sequence
    for (int64_t i = 0; i < a.blocks; ++i)
      for (int64_t t = 0; t < a.threads; ++t)
        kernels::persist_load_slice(a, blk(i), thr(t), shared.data() + blk(i) * smem);
    for (int64_t s = 0; s < a.T_steps; ++s) {
      fill_nan(a.hbuf + (s % 2) * a.B * a.H, a.B * a.H);
      for (int64_t i = 0; i < a.blocks; ++i) {
        T* sw = shared.data() + blk(i) * smem;
        T* sh = sw + w_elems;
        for (int64_t t = 0; t < a.threads; ++t) kernels::persist_load_h(a, s, thr(t), sh);
        // __syncthreads()
        for (int64_t t = 0; t < a.threads; ++t) kernels::persist_step(a, s, blk(i), thr(t), sw, sh);
      }
      // grid barrier
    }
  }
};

}  // namespace
}  // namespace fusedrnn::emu

TORCH_LIBRARY_IMPL(fusedrnn_emu, CPU, m) {
  m.impl("persistent_forward", &fusedrnn::persistent_forward<fusedrnn::emu::PersistEmu>);
}
