// Launch geometry of the host emulation (process-wide): the block size and grid cap that
// emu_backend.h's run_grid uses, set by torch.ops.fusedrnn_emu.set_launch. Defaults: the CUDA
// launcher's kThreads per block and an H100's resident-grid cap (132 SMs x 2048/kThreads).
#pragma once

#include <cstdint>

#include "../kernels/launch.cuh"

namespace fusedrnn::emu {

struct LaunchLimits {
  int64_t threads = kernels::kThreads;
  int64_t max_blocks = 132 * (2048 / kernels::kThreads);
  bool reverse = false;  // run blocks and threads in reverse order
};

inline LaunchLimits& limits() {
  static LaunchLimits l;
  return l;
}

}  // namespace fusedrnn::emu
