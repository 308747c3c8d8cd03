// torch.ops.fusedrnn_emu: the schemas of torch.ops.fusedrnn (host emulation of the CUDA
// kernels, see emu_backend.h), plus set_launch(threads, max_blocks, reverse), which sets the
// emulated launch geometry for the following calls (process-wide; tests restore it).
#include <torch/library.h>

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
}  // namespace

TORCH_LIBRARY(fusedrnn_emu, m) {
  fusedrnn::define_schemas(m);
  m.def("set_launch(int threads, int max_blocks, bool reverse=False) -> ()", &set_launch);
}
