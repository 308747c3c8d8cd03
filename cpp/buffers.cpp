// The CPU buffer cache of buffers.h. A block is one c10::alloc_cpu allocation (64-byte aligned,
// as the default CPU allocator's) of whole pages; the free list keeps blocks most recently
// released first (a request scans it for the best fit) and drops from the back past the limit.
// Limit: FUSEDRNN_CPU_CACHE_MB (default 512), read at the first allocation; buffer_cache_set_limit
// changes it.
#include "fusedrnn/buffers.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <pthread.h>

#include <cstdlib>
#include <limits>
#include <list>
#include <mutex>
#include <new>

#include "fusedrnn/thin_products.h"

namespace fusedrnn {
namespace {

struct Block {
  void* ptr;
  size_t size;
};

// Whole pages: same shapes get the same block back.
size_t page_round(size_t n) { return (n + 4095) / 4096 * 4096; }

int64_t limit_from_env() {
  const char* v = std::getenv("FUSEDRNN_CPU_CACHE_MB");
  if (v == nullptr || *v == '\0') return int64_t(512) << 20;
  char* end = nullptr;
  const long long mb = std::strtoll(v, &end, 10);
  TORCH_CHECK(end != v && *end == '\0' && mb >= 0 && mb < (1LL << 40),
              "FUSEDRNN_CPU_CACHE_MB: expected a whole number of MiB >= 0, got '", v, "'");
  return static_cast<int64_t>(mb) << 20;
}

class BufferCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    const size_t want = page_round(n), most = want + want / 8;
    Block* b = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = free_.end();
      for (auto it = free_.begin(); it != free_.end(); ++it) {
        const size_t size = (*it)->size;
        if (size >= want && size <= most && (best == free_.end() || size < (*best)->size)) {
          best = it;
          if (size == want) break;
        }
      }
      if (best != free_.end()) {
        b = *best;
        free_.erase(best);
        cached_ -= static_cast<int64_t>(b->size);
        ++hits_;
      } else {
        ++misses_;
      }
    }
    if (b == nullptr) b = new Block{c10::alloc_cpu(want), want};
    c10::profiledCPUMemoryReporter().New(b->ptr, b->size);
    return {b->ptr, b, &BufferCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  bool enabled() {
    std::lock_guard<std::mutex> lock(mutex_);
    return limit() > 0;
  }

  BufferCacheInfo info() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {limit(), cached_, static_cast<int64_t>(free_.size()), hits_, misses_};
  }

  void set_limit(int64_t bytes) {
    std::list<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      trim(drop);
    }
    destroy(drop);
  }

  void empty() {
    std::list<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      drop.splice(drop.end(), free_);
      cached_ = 0;
    }
    destroy(drop);
  }

  // A forked child may inherit the lock held by a thread that does not exist there.
  void reset_lock_after_fork() { new (&mutex_) std::mutex(); }

 private:
  static void release(void* ctx) {
    auto* b = static_cast<Block*>(ctx);
    c10::profiledCPUMemoryReporter().Delete(b->ptr);
    instance().give_back(b);
  }

  void give_back(Block* b) {
    std::list<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_front(b);
      cached_ += static_cast<int64_t>(b->size);
      trim(drop);
    }
    destroy(drop);
  }

  // Caller holds the lock.
  int64_t limit() {
    if (limit_ < 0) limit_ = limit_from_env();
    return limit_;
  }

  // Caller holds the lock; the blocks moved to `drop` are freed after it is released.
  void trim(std::list<Block*>& drop) {
    const int64_t lim = limit();
    while (cached_ > lim && !free_.empty()) {
      cached_ -= static_cast<int64_t>(free_.back()->size);
      drop.splice(drop.begin(), free_, std::prev(free_.end()));
    }
  }

  static void destroy(std::list<Block*>& blocks) {
    for (Block* b : blocks) {
      c10::free_cpu(b->ptr);
      delete b;
    }
  }

 public:
  // Never destroyed: tensors released during interpreter shutdown still return blocks here.
  static BufferCache& instance() {
    static BufferCache* cache = [] {
      auto* c = new BufferCache();
      pthread_atfork(nullptr, nullptr, [] { instance().reset_lock_after_fork(); });
      return c;
    }();
    return *cache;
  }

 private:
  std::mutex mutex_;
  std::list<Block*> free_;
  int64_t limit_ = -1, cached_ = 0, hits_ = 0, misses_ = 0;
};

}  // namespace

at::Tensor buffer_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  if (opts.device().type() != c10::DeviceType::CPU || opts.pinned_memory() ||
      opts.layout() != at::kStrided)
    return at::empty(sizes, opts);
  const auto dtype = c10::typeMetaToScalarType(opts.dtype());
  const size_t bytes = c10::multiply_integers(sizes) * c10::elementSize(dtype);
  BufferCache& cache = BufferCache::instance();
  // Small ones straight from the CPU allocator: at::empty's trip through the dispatcher is ~0.3
  // us, and a B = 1 cell step takes several buffers in a ~4 us op.
  at::Tensor t =
      bytes < kMinCachedBytes || !cache.enabled()
          ? at::detail::empty_cpu(sizes, opts)
          : at::Tensor(at::detail::empty_generic(
                sizes, &cache, c10::DispatchKeySet(c10::DispatchKey::CPU), dtype, std::nullopt));
  auto& ctx = at::globalContext();
  if (ctx.deterministicAlgorithms() && ctx.deterministicFillUninitializedMemory() &&
      at::isFloatingType(dtype))
    t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

at::Tensor buffer_zeros(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  return buffer_empty(sizes, opts).zero_();
}

void mm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (!thin_mm(a, b, out)) at::mm_out(out, a, b);
}

at::Tensor buffer_mm(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = buffer_empty({a.size(0), b.size(1)}, a.options());
  mm_into(out, a, b);
  return out;
}

at::Tensor buffer_contiguous(const at::Tensor& t) {
  if (t.is_contiguous()) return t;
  at::Tensor out = buffer_empty(t.sizes(), t.options());
  out.copy_(t);
  return out;
}

BufferCacheInfo buffer_cache_info() { return BufferCache::instance().info(); }
void buffer_cache_empty() { BufferCache::instance().empty(); }
void buffer_cache_set_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "fusedrnn.set_cpu_cache_limit: limit must be >= 0 bytes, got ", bytes);
  BufferCache::instance().set_limit(bytes);
}

}  // namespace fusedrnn
