// One instruction set's table of CPU pointwise kernels. CMake compiles this file once per
// ISA with CPU_CAPABILITY set (DEFAULT; AVX2 and AVX512 on x86-64, with their -m flags), so
// ATen's Vectorized<T> (and our templates, in the inline namespace CPU_CAPABILITY) resolve to
// that ISA. Nothing here is called directly: kernels() in cpu_dispatch.cpp picks a table.
#include "gru_fused.h"
#include "kernel_table.h"
#include "ln_fused.h"
#include "ln_pointwise.h"
#include "lstm_fused.h"
#include "mask_sampler.h"
#include "narrow_gemm.h"
#include "pointwise.h"
#include "rnn_fused.h"
#include "thin_products.h"

#define FUSEDRNN_CAT2(a, b) a##b
#define FUSEDRNN_CAT(a, b) FUSEDRNN_CAT2(a, b)
#define FUSEDRNN_STR2(a) #a
#define FUSEDRNN_STR(a) FUSEDRNN_STR2(a)

namespace fusedrnn::cpu {

template <class T>
constexpr KernelTable<T> make_table() {
  return KernelTable<T>{
      &RnnPointwise<false>::forward<T>,
      &RnnPointwise<false>::backward<T>,
      &RnnPointwise<true>::forward<T>,
      &RnnPointwise<true>::backward<T>,
      &LstmPointwise::forward<T>,
      &LstmPointwise::backward<T>,
      &GruPointwise::forward<T>,
      &GruPointwise::backward<T>,
      &LnLstmPointwise::forward<T>,
      &LnLstmPointwise::backward<T>,
      &LnGruPointwise::forward<T>,
      &LnGruPointwise::backward<T>,
      &LnRowsPass::forward<T>,
      &LnRowsPass::backward<T>,
      &TallDotPass::run<T>,
      &RowDotPass::run<T>,
      &outer_product<T>,
      &bernoulli_mask<T>,
  };
}

// The fused steps need real vectors: the portable table has none.
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
constexpr LstmFused kLstmFused{FVec::size(), &lstm_fused_pack, &lstm_fused_step};
constexpr RnnFused kRnnFused{FVec::size(), &rnn_fused_pack, &rnn_fused_step};
constexpr GruFused kGruFused{FVec::size(), &gru_fused_pack, &gru_fused_step};
constexpr NarrowGemmKernel kNarrowGemm{FVec::size(), &narrow_gemm};
#else
constexpr LstmFused kLstmFused{0, nullptr, nullptr};
constexpr RnnFused kRnnFused{0, nullptr, nullptr};
constexpr GruFused kGruFused{0, nullptr, nullptr};
constexpr NarrowGemmKernel kNarrowGemm{0, nullptr};
#endif
// The LayerNorm steps only on AVX-512: on AVX2 (2 LSTM / 3 GRU rows per group in 16
// registers) they ran 0.54-1.02x the BLAS path at inference (H = 32 to 128, B = 32 to 784).
#if defined(CPU_CAPABILITY_AVX512)
constexpr LnFused kLnLstmFused{FVec::size(), &ln_fused_pack<4>, &ln_fused_step<4, LnLstmPointwise>};
constexpr LnFused kLnGruFused{FVec::size(), &ln_fused_pack<3>, &ln_fused_step<3, LnGruPointwise>};
#else
constexpr LnFused kLnLstmFused{0, nullptr, nullptr};
constexpr LnFused kLnGruFused{0, nullptr, nullptr};
#endif

extern const KernelTables FUSEDRNN_CAT(kernels_, CPU_CAPABILITY);
const KernelTables FUSEDRNN_CAT(kernels_, CPU_CAPABILITY) = {FUSEDRNN_STR(CPU_CAPABILITY),
                                                             make_table<float>(),
                                                             make_table<double>(),
                                                             kLstmFused,
                                                             kRnnFused,
                                                             kGruFused,
                                                             kLnLstmFused,
                                                             kLnGruFused,
                                                             kNarrowGemm};

}  // namespace fusedrnn::cpu
