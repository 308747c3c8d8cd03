// Dropout masks drawn on the CPU without at::bernoulli_'s per-element cost.
//
// at::bernoulli_(p) on a CPU tensor draws element after element through TensorIterator and
// the generator's engine: ~10 ns an element, a fifth of a fused stock-model training epoch
// with dropout (torch.nn pays it too). Here the kernel table's sampler (cpu/mask_sampler.h)
// takes the same draws from the default generator's engine state, under the generator's lock,
// writes the survivors' 1/(1-p) directly (one pass, not bernoulli_ then div_), and writes the
// advanced state back: the same values and the same generator afterwards, as
// cpu_mask_sampler_exact() checks against bernoulli_ then div_ once per process (a torch that
// draws differently makes dropout_mask fall back to them).
#include "fusedrnn/dropout_mask.h"

#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "cpu/kernel_table.h"
#include "fusedrnn/buffers.h"

namespace fusedrnn {
namespace {

// keep = 1 / q computed as div_ computes it: the scalar cast to T, then divided in T.
template <class T>
void fill(at::CPUGeneratorImpl* g, at::Tensor& t, double q) {
  const T keep = T(1) / static_cast<T>(q);
  std::lock_guard<std::mutex> lock(g->mutex_);
  at::mt19937 eng = g->engine();
  at::mt19937_data_pod state = eng.data();
  cpu::kernels_for<T>().bernoulli_mask(state, q, keep, t.data_ptr<T>(), t.numel());
  eng.set_data(state);
  g->set_engine(eng);
}

// Fills the contiguous float / double `t` with bernoulli_(q) / q from generator `g`; false for
// other dtypes.
bool fill_from(const at::Generator& g, at::Tensor& t, double q) {
  auto* impl = g.get<at::CPUGeneratorImpl>();
  if (t.scalar_type() == at::kFloat) {
    fill<float>(impl, t, q);
  } else if (t.scalar_type() == at::kDouble) {
    fill<double>(impl, t, q);
  } else {
    return false;
  }
  return true;
}

}  // namespace

bool cpu_mask_sampler_exact() {
  static const bool exact = [] {
    // 1237 elements take 2474 draws: several refills, entered at odd and even offsets.
    for (const auto dtype : {at::kFloat, at::kDouble}) {
      for (const double q : {0.8, 0.31, 1.0}) {
        const at::Generator a = at::detail::createCPUGenerator(20261129);
        const at::Generator b = at::detail::createCPUGenerator(20261129);
        a.get<at::CPUGeneratorImpl>()->random();  // start mid-state
        b.get<at::CPUGeneratorImpl>()->random();
        const at::Tensor ref = at::empty({1237}, at::TensorOptions(dtype)).bernoulli_(q, a).div_(q);
        at::Tensor mine = at::empty({1237}, at::TensorOptions(dtype));
        if (!fill_from(b, mine, q) || !at::equal(ref, mine)) return false;
        if (a.get<at::CPUGeneratorImpl>()->random() != b.get<at::CPUGeneratorImpl>()->random())
          return false;
      }
    }
    return true;
  }();
  return exact;
}

at::Tensor dropout_mask(const at::Tensor& y, double p) {
  if (p >= 1) return at::zeros_like(y);
  // empty_like keeps a non-contiguous y's strides, as torch.nn's mask has them.
  at::Tensor noise = y.is_contiguous() ? buffer_empty(y.sizes(), y.options()) : at::empty_like(y);
  // Memory order is bernoulli_'s draw order only for a contiguous mask.
  const bool fast = y.device().is_cpu() && noise.is_contiguous() && cpu_mask_sampler_exact() &&
                    fill_from(at::detail::getDefaultCPUGenerator(), noise, 1 - p);
  if (!fast) noise.bernoulli_(1 - p).div_(1 - p);
  return noise;
}

}  // namespace fusedrnn
