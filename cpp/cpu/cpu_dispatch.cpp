// Picks the CPU pointwise kernel table for this machine once, the way ATen picks its own
// kernels: at::get_cpu_capability() honours ATEN_CPU_CAPABILITY and the CPU's features.
#include <ATen/Version.h>

#include <string>

#include "kernel_table.h"

namespace fusedrnn::cpu {

const KernelTables& kernels() {
  static const KernelTables* table = [] {
#if defined(FUSEDRNN_X86_DISPATCH)
    const std::string cap = at::get_cpu_capability();
    if (cap == "AVX512") return &kernels_AVX512;
    if (cap == "AVX2") return &kernels_AVX2;
#endif
    return &kernels_DEFAULT;
  }();
  return *table;
}

}  // namespace fusedrnn::cpu
