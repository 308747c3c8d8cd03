// The Python extension fusedrnn._C. Importing it loads this library, whose static
// initialisers register the op schemas and the kernels of every compiled backend.
// It also reports how the library was built, for fusedrnn.build_info().
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <pybind11/pybind11.h>

#include "cpu/kernel_table.h"
#include "cpu/tuning.h"
#include "fusedrnn/buffers.h"
#include "fusedrnn/dropout_mask.h"
#include "fusedrnn/module_fast_path.h"

#ifndef FUSEDRNN_VERSION
#define FUSEDRNN_VERSION "0.0.0"
#endif
#ifndef FUSEDRNN_CUDA_ARCHS
#define FUSEDRNN_CUDA_ARCHS ""
#endif
#ifndef FUSEDRNN_TORCH_VERSION
#define FUSEDRNN_TORCH_VERSION "unknown"
#endif

namespace py = pybind11;

namespace {
py::dict get_tuning() {
  const auto& t = fusedrnn::cpu::tuning();
  py::dict d;
  d["chunk_rows"] = t.chunk_rows.load();
  d["chunk_max_mflop"] = t.chunk_max_mflop.load();
  d["pack"] = t.pack.load();
  d["pack_min_steps"] = t.pack_min_steps.load();
  d["fuse"] = t.fuse.load();
  d["thin"] = t.thin.load();
  return d;
}

// Arguments are validated in Python (fusedrnn.tuning.set), which names the bad one.
void set_tuning(int64_t chunk_rows, int64_t chunk_max_mflop, bool pack, int64_t pack_min_steps,
                bool fuse, bool thin) {
  auto& t = fusedrnn::cpu::tuning();
  t.chunk_rows = chunk_rows;
  t.chunk_max_mflop = chunk_max_mflop;
  t.pack = pack;
  t.pack_min_steps = pack_min_steps;
  t.fuse = fuse;
  t.thin = thin;
}
}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedrnn fused RNN/LSTM/GRU kernels (ops live in torch.ops.fusedrnn)";
  m.def("get_tuning", &get_tuning);
  m.def("cell_step", &fusedrnn::cell_step);
  m.def("stack_step", &fusedrnn::stack_step);
  fusedrnn::add_module_call(m);
  m.def("set_tuning", &set_tuning);
  m.def("cpu_cache_info", [] {
    const auto i = fusedrnn::buffer_cache_info();
    py::dict d;
    d["limit_bytes"] = i.limit_bytes;
    d["cached_bytes"] = i.cached_bytes;
    d["cached_blocks"] = i.cached_blocks;
    d["hits"] = i.hits;
    d["misses"] = i.misses;
    return d;
  });
  m.def("empty_cpu_cache", &fusedrnn::buffer_cache_empty);
  m.def("set_cpu_cache_limit", &fusedrnn::buffer_cache_set_limit);
  m.def("build_info", [] {
    py::dict d;
    d["version"] = FUSEDRNN_VERSION;
    d["torch_built_with"] = FUSEDRNN_TORCH_VERSION;
#ifdef FUSEDRNN_WITH_CUDA
    d["cuda"] = true;
#else
    d["cuda"] = false;
#endif
    d["cuda_arch_list"] = FUSEDRNN_CUDA_ARCHS;
    d["threads"] = at::get_num_threads();
    d["cpu_capability"] = at::get_cpu_capability();
    d["cpu_kernels"] = fusedrnn::cpu::kernels().isa;  // the SIMD table the CPU ops use
    d["parallel_backend"] = at::get_parallel_info();
    d["tuning"] = get_tuning();
    // How CPU dropout masks are drawn: "fused" (dropout_mask.cpp's loop, checked equal to
    // at::bernoulli_ on this torch) or "bernoulli_" (torch's own, where they differ).
    d["cpu_dropout_sampler"] = fusedrnn::cpu_mask_sampler_exact() ? "fused" : "bernoulli_";
    return d;
  });
}
