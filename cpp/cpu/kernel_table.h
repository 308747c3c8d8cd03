// The CPU pointwise kernels of every family, as one table of function pointers per scalar
// type. capability.cpp is compiled once per instruction set (DEFAULT, and AVX2 / AVX512 on
// x86-64) and defines one table each; kernels() picks the table for this machine at run
// time (at::get_cpu_capability(), so ATEN_CPU_CAPABILITY=default forces the portable one).
#pragma once

#include <type_traits>

#include "fusedrnn/step_args.h"

namespace fusedrnn::cpu {

template <class T>
struct KernelTable {
  void (*rnn_tanh_forward)(const FwdStep<T>&);
  void (*rnn_tanh_backward)(const BwdStep<T>&);
  void (*rnn_relu_forward)(const FwdStep<T>&);
  void (*rnn_relu_backward)(const BwdStep<T>&);
  void (*lstm_forward)(const FwdStep<T>&);
  void (*lstm_backward)(const BwdStep<T>&);
  void (*gru_forward)(const FwdStep<T>&);
  void (*gru_backward)(const BwdStep<T>&);
};

struct KernelTables {
  const char* isa;
  KernelTable<float> f32;
  KernelTable<double> f64;
};

extern const KernelTables kernels_DEFAULT;
#if defined(FUSEDRNN_X86_DISPATCH)
extern const KernelTables kernels_AVX2;
extern const KernelTables kernels_AVX512;
#endif

// The table for this machine (chosen once).
const KernelTables& kernels();

template <class T>
const KernelTable<T>& kernels_for() {
  if constexpr (std::is_same_v<T, float>) {
    return kernels().f32;
  } else {
    return kernels().f64;
  }
}

}  // namespace fusedrnn::cpu
