// torch.ops.fusedrnn_emu: the schemas of torch.ops.fusedrnn (host emulation of the CUDA
// kernels, see emu_backend.h), plus set_launch(threads, max_blocks, reverse), which sets the
// emulated launch geometry for the following calls (process-wide; tests restore it), and
// trace(on), which records the emulated device calls (emu_launch.h).
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/library.h>

#include <string>

#include "../persistent_op.h"
#include "emu_launch.h"
#include "fusedrnn/schemas.h"

namespace {
void set_launch(int64_t threads, int64_t max_blocks, bool reverse) {
  TORCH_CHECK(threads > 0 && threads <= 1024,
              "fusedrnn_emu::set_launch: threads must be in [1, 1024], got ", threads);
  TORCH_CHECK(max_blocks > 0, "fusedrnn_emu::set_launch: max_blocks must be positive, got ",
              max_blocks);
  auto& l = fusedrnn::emu::limits();
  l.threads = threads;
  l.max_blocks = max_blocks;
  l.reverse = reverse;
}

// The CPU allocator while tracing: the previous one, with every allocation noted as 'A'.
class TracingAllocator final : public c10::Allocator {
 public:
  c10::Allocator* base = nullptr;
  c10::DataPtr allocate(size_t n) override {
    if (n > 0) fusedrnn::emu::note('A');
    return base->allocate(n);
  }
  c10::DeleterFnPtr raw_deleter() const override { return base->raw_deleter(); }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    base->copy_data(dest, src, count);
  }
};

// trace(True) clears the trace and starts recording (emu_launch.h); trace(False) stops and
// returns the events recorded since.
std::string trace(bool on) {
  static TracingAllocator tracing;
  constexpr uint8_t kPriority = 255;  // SetCPUAllocator only replaces one of lower priority
  auto& t = fusedrnn::emu::trace();
  if (on && !t.on) {
    tracing.base = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&tracing, kPriority);
  } else if (!on && t.on) {
    c10::SetCPUAllocator(tracing.base, kPriority);
  }
  std::string events = std::move(t.events);
  t.events.clear();
  t.on = on;
  return on ? std::string() : events;
}
}  // namespace

TORCH_LIBRARY(fusedrnn_emu, m) {
  fusedrnn::define_schemas(m);
  m.def("set_launch(int threads, int max_blocks, bool reverse=False) -> ()", &set_launch);
  m.def("trace(bool on) -> str", &trace);
  m.def(fusedrnn::persistent_schema());
}
