// The CPU backend's tuning knobs, in one process-wide object: read on every layer call (so a
// change applies to the next call), set from Python (fusedrnn.tuning), seeded once from the
// environment (FUSEDRNN_CHUNK_ROWS, FUSEDRNN_CHUNK_MAX_MFLOP, FUSEDRNN_PACK_MIN_STEPS,
// FUSEDRNN_NO_PACK, FUSEDRNN_NO_FUSE, FUSEDRNN_NO_THIN). Fields are atomics: a setter on one thread
// and layer calls on others never race; a call reads each knob once.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>

namespace fusedrnn::cpu {

struct Tuning {
  // Row-parallel time loops (cpu_backend.h ThreadRowChunks): fewest batch rows per thread, and the
  // largest step (MFLOP over all rows) that is split by rows rather than by MKL's threads.
  std::atomic<int64_t> chunk_rows{8};
  std::atomic<int64_t> chunk_max_mflop{16};
  // Recurrent-weight packing (cpu_backend.h PackedWeightGemm): on/off and the fewest steps for it.
  std::atomic<bool> pack{true};
  std::atomic<int64_t> pack_min_steps{8};
  // The fused small-H float32 steps (lstm_fused.h, gru_fused.h, rnn_fused.h, ln_fused.h) and the
  // backward's register dh = dG W_hh (narrow_gemm.h): on/off.
  std::atomic<bool> fuse{true};
  // Products with a thin side on the kernel table's passes, not MKL (thin_products.h): on/off.
  std::atomic<bool> thin{true};
};

inline int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v ? std::max<int64_t>(1, std::atoll(v)) : fallback;
}

inline Tuning& tuning() {
  static Tuning* t = [] {
    auto* s = new Tuning();  // never destroyed: kernels may run during interpreter shutdown
    s->chunk_rows = env_int("FUSEDRNN_CHUNK_ROWS", 8);
    s->chunk_max_mflop = env_int("FUSEDRNN_CHUNK_MAX_MFLOP", 16);
    s->pack_min_steps = env_int("FUSEDRNN_PACK_MIN_STEPS", 8);
    s->pack = std::getenv("FUSEDRNN_NO_PACK") == nullptr;
    s->fuse = std::getenv("FUSEDRNN_NO_FUSE") == nullptr;
    s->thin = std::getenv("FUSEDRNN_NO_THIN") == nullptr;
    return s;
  }();
  return *t;
}

}  // namespace fusedrnn::cpu
