// Registers every op of one family (layer, cell and stack ops, each with its backward) for
// one backend's dispatch key: the only function the backends' registration files call.
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

}  // namespace fusedrnn
