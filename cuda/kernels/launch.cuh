// Launch geometry of the fused pointwise kernels, shared by the CUDA launcher and the host
// emulation (cuda/emu), so both run every kernel body over the same grid/block decomposition.
//
// Contract: a pointwise kernel covers n = rows * width elements with a 1-D grid of `blocks`
// blocks of `threads` threads and a grid-stride loop: element e is handled by the thread
// with global id e mod (blocks * threads). Indices are int64 throughout; blocks is capped
// (a grid never needs more blocks than the device keeps resident), so large problems loop.
// No kernel uses shared memory or __syncthreads: threads of a block are independent.
#pragma once

#include <cstdint>

#include "fusedrnn/cell_math.h"  // FUSEDRNN_HD

namespace fusedrnn::kernels {

// Threads per block of every pointwise kernel on the GPU (the __launch_bounds__ value).
constexpr int64_t kThreads = 256;

struct Launch {
  int64_t blocks = 1;   // gridDim.x
  int64_t threads = 1;  // blockDim.x
  FUSEDRNN_HD int64_t stride() const { return blocks * threads; }
};

// Grid for n elements: ceil(n / threads) blocks, at most max_blocks (>= 1).
inline Launch pointwise_launch(int64_t n, int64_t threads, int64_t max_blocks) {
  Launch l;
  l.threads = threads;
  const int64_t want = (n + threads - 1) / threads;
  l.blocks = want < 1 ? 1 : (want > max_blocks ? max_blocks : want);
  return l;
}

// First element of thread (block, thread); the body loops `e += l.stride()` while e < n.
FUSEDRNN_HD int64_t first_element(int64_t block, int64_t thread, const Launch& l) {
  return block * l.threads + thread;
}

// out[n] (=) a + b, a may be null (treated as zero): the row sums of Blas::add_rows
// (contiguous rows, n = rows * cols).
template <class T>
struct AddRows {
  int64_t n;
  const T* a;
  const T* b;
  T* out;
};

template <class T, class A>
FUSEDRNN_HD void add_rows_body(const AddRows<T>& s, int64_t block, int64_t thread,
                               const Launch& l) {
  for (int64_t e = first_element(block, thread, l); e < s.n; e += l.stride()) {
    s.out[e] = T((s.a ? A(s.a[e]) : A(0)) + A(s.b[e]));
  }
}

}  // namespace fusedrnn::kernels
