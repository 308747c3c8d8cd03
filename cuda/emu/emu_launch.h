// Launch geometry of the host emulation (process-wide): the block size and grid cap that
// emu_backend.h's run_grid uses, set by torch.ops.fusedrnn_emu.set_launch. Defaults: the CUDA
// launcher's kThreads per block and an H100's resident-grid cap (132 SMs x 2048/kThreads).
#pragma once

#include <cstdint>
#include <string>

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

// Event trace for tests (torch.ops.fusedrnn_emu.trace): while on, every emulated device call
// appends one letter, in order: 'G' a GEMM (a cuBLAS call on the GPU), 'K' a kernel launch or
// memset, 'C' a device copy (cudaMemcpyAsync), 'A' a host allocation through the CPU allocator
// (a device allocation on the GPU), except the scratch of the host GEMM itself (gemm_depth > 0),
// which cuBLAS does not make. A layer call's time loop is then a run of G/K/C letters.
struct Trace {
  bool on = false;
  int gemm_depth = 0;
  std::string events;
};

inline Trace& trace() {
  static Trace t;
  return t;
}

inline void note(char event) {
  Trace& t = trace();
  if (t.on && (event != 'A' || t.gemm_depth == 0)) t.events.push_back(event);
}

}  // namespace fusedrnn::emu
