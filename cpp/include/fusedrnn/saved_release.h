// Early release of a cell step's saved workspace (LSTM, GRU), so a training step holds no
// more than torch.nn's.
//
// A cell's backward reads the workspace its forward saved only in the gate pass; the weight
// gradients that follow are its largest allocations (dW_hh: 4H x H). torch.nn's cell frees its
// workspace in between (the gate math and the two matrix products are separate autograd
// nodes); ours is one node. So the node (cpp/autograd.cpp) sets this thread's callback around
// the backward op call, only when it may let go (the graph is not kept, the backward is not
// recorded), and cell_backward (layer_driver.h) calls release_saved() right after its last
// read of the workspace: the callback drops the node's references, cell_backward its own.
// Anyone else holding the workspace (a caller of the op itself) keeps it alive as before.
#pragma once

namespace fusedrnn {

struct SavedRelease {
  void (*fn)(void*) = nullptr;
  void* ctx = nullptr;
};

SavedRelease& saved_release_slot();  // this thread's (defined in cpp/autograd.cpp)

// Runs and clears this thread's callback, if one is set.
inline void release_saved() {
  SavedRelease& slot = saved_release_slot();
  if (slot.fn == nullptr) return;
  const SavedRelease r = slot;
  slot = SavedRelease{};
  r.fn(r.ctx);
}

// Sets the callback for one scope (nothing when fn is null); cleared on exit either way.
class SavedReleaseScope {
 public:
  SavedReleaseScope(void (*fn)(void*), void* ctx) {
    if (fn != nullptr) saved_release_slot() = SavedRelease{fn, ctx};
  }
  ~SavedReleaseScope() { saved_release_slot() = SavedRelease{}; }
  SavedReleaseScope(const SavedReleaseScope&) = delete;
  SavedReleaseScope& operator=(const SavedReleaseScope&) = delete;
};

}  // namespace fusedrnn
