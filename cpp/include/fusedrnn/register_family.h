// Registers every op of one family (layer, cell and stack ops, each with its backward) for
// one backend's dispatch key; register_families does it for the four families, in the one
// registration file of each backend (cpp/cpu/register.cpp, cuda/register.cu,
// cuda/emu/emu_register.cpp).
#pragma once

#include <torch/library.h>

#include <string>

#include "fusedrnn/op_entries.h"
#include "fusedrnn/stack_entries.h"

namespace fusedrnn {

// Registers every op of family Tr for one dispatch key (call inside TORCH_LIBRARY_IMPL).
template <class Tr, class Kern, class Backend>
void register_family(torch::Library& m) {
  if constexpr (Tr::kFamily == Family::Lstm) {
    m.impl("lstm_layer", &lstm_layer<Tr, Kern, Backend>);
    m.impl("lstm_layer_backward", &lstm_layer_backward<Tr, Kern, Backend>);
    m.impl("lstm_cell", &lstm_cell<Tr, Kern, Backend>);
    m.impl("lstm_cell_backward", &lstm_cell_backward<Tr, Kern, Backend>);
  } else if constexpr (Tr::kFamily == Family::Gru) {
    m.impl("gru_layer", &gru_layer<Tr, Kern, Backend>);
    m.impl("gru_layer_backward", &gru_layer_backward<Tr, Kern, Backend>);
    m.impl("gru_cell", &gru_cell<Tr, Kern, Backend>);
    m.impl("gru_cell_backward", &gru_cell_backward<Tr, Kern, Backend>);
  } else {
    const std::string n = Tr::kName;
    m.impl((n + "_layer").c_str(), &rnn_layer<Tr, Kern, Backend>);
    m.impl((n + "_layer_backward").c_str(), &rnn_layer_backward<Tr, Kern, Backend>);
    m.impl((n + "_cell").c_str(), &rnn_cell<Tr, Kern, Backend>);
    m.impl((n + "_cell_backward").c_str(), &rnn_cell_backward<Tr, Kern, Backend>);
  }
  register_stack<Tr, Kern, Backend>(m);
}

// rnn_tanh and rnn_relu (RnnKernels<false> and <true>), lstm and gru on one Backend.
template <template <bool kRelu> class RnnKernels, class LstmKernels, class GruKernels,
          class Backend>
void register_families(torch::Library& m) {
  register_family<Traits<Family::RnnTanh>, RnnKernels<false>, Backend>(m);
  register_family<Traits<Family::RnnRelu>, RnnKernels<true>, Backend>(m);
  register_family<Traits<Family::Lstm>, LstmKernels, Backend>(m);
  register_family<Traits<Family::Gru>, GruKernels, Backend>(m);
}

// The LayerNorm LSTM / GRU: stack ops only (ln_driver.h).
template <class LnLstmKernels, class LnGruKernels, class Backend>
void register_ln_families(torch::Library& m) {
  register_stack<Traits<Family::LnLstm>, LnLstmKernels, Backend>(m);
  register_stack<Traits<Family::LnGru>, LnGruKernels, Backend>(m);
}

}  // namespace fusedrnn
