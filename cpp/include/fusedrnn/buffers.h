// Large CPU buffers of the ops (workspaces, outputs, gate gradients, GEMM results) come from a
// small cache of freed blocks, so that repeated calls write to pages already mapped.
//
// Why: the buffers of a training step are freed at its end, mostly at the top of glibc's heap,
// which glibc hands back to the kernel once the free top passes its trim threshold; the next
// step faults every page in again (a stock-model LSTM training step took ~300 minor faults, a
// GRU step ~700, 10-20% of the step). A freed block here goes back to the cache instead, up to
// a byte limit (least recently freed blocks are released first).
//
// Contract: buffer_empty/buffer_zeros behave as at::empty/at::zeros (same dtype, layout, device,
// deterministic NaN fill under torch.use_deterministic_algorithms); only CPU requests of at
// least kMinCachedBytes use the cache, everything else goes to at::empty. A request takes the
// smallest cached block of its size (rounded up to whole pages) up to 1/8 more, so nearby
// sizes (a batch one step shorter) share blocks. Allocation and release are reported to
// torch.profiler like c10's CPU allocator's (the size reported is the block's), so
// profile_memory counts cached buffers as held only while a tensor uses them. Thread-safe; a forked
// child starts with the parent's cached blocks and a fresh lock.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fusedrnn {

constexpr size_t kMinCachedBytes = size_t(64) << 10;

at::Tensor buffer_empty(at::IntArrayRef sizes, const at::TensorOptions& opts);
at::Tensor buffer_zeros(at::IntArrayRef sizes, const at::TensorOptions& opts);
// at::mm_out(out, a, b), a thin product on the CPU by thin_products.h's passes.
void mm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b);
// at::mm(a, b) written into a buffer_empty result (mm_into).
at::Tensor buffer_mm(const at::Tensor& a, const at::Tensor& b);
// t itself when contiguous, else a contiguous copy in a buffer_empty result (an incoming
// gradient is often an expanded or transposed view).
at::Tensor buffer_contiguous(const at::Tensor& t);

struct BufferCacheInfo {
  int64_t limit_bytes, cached_bytes, cached_blocks, hits, misses;
};
BufferCacheInfo buffer_cache_info();
// Frees every cached block (blocks in use are kept and cached when released, within the limit).
void buffer_cache_empty();
// The most bytes the cache keeps; 0 turns it off (and frees what it holds).
void buffer_cache_set_limit(int64_t bytes);

}  // namespace fusedrnn
