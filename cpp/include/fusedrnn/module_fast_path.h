// The modules' one-call eager path (module_fast_path.cpp), bound as fusedrnn._C.cell_step
// (RNNCell, LSTMCell, GRUCell) and fusedrnn._C.stack_step (RNN, LSTM, GRU and the LayerNorm
// LSTM / GRU); and the modules' __call__ before them (module_call.cpp: fusedrnn._C.cell_call
// and stack_call).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

namespace fusedrnn {

// cell_step's `kind`: which cell op (modules.py's _fast_kind uses the same numbers).
enum CellKind : int64_t { kCellRnnTanh = 0, kCellRnnRelu = 1, kCellLstm = 2, kCellGru = 3 };

// stack_step's `kind`: which stack op (modules.py's _STACK_KIND).
enum StackKind : int64_t {
  kStackRnnTanh = 0,
  kStackRnnRelu = 1,
  kStackLstm = 2,
  kStackGru = 3,
  kStackLnLstm = 4,
  kStackLnGru = 5
};

// The cell's output (h', or (h', c') for the LSTM), or None when the call is not the plain
// case and the module must take its Python path.
pybind11::object cell_step(int64_t kind, int64_t input_size, int64_t hidden_size,
                           pybind11::handle input, pybind11::handle hx, pybind11::handle w_ih,
                           pybind11::handle w_hh, pybind11::handle b_ih, pybind11::handle b_hh);

// A sequence module's (output, h_n) or (output, (h_n, c_n)) for a batched, unpacked input,
// or None (as cell_step). `weights`: the module's _flat_weights.
pybind11::object stack_step(int64_t kind, pybind11::handle input, pybind11::handle hx,
                            pybind11::handle weights, bool has_biases, int64_t num_layers,
                            bool bidirectional, double dropout, bool train, bool batch_first,
                            int64_t input_size, int64_t hidden_size, int64_t proj_size);

// Binds fusedrnn._C.cell_call(module, args), stack_call(module, args) and
// module_call_init(...) (module_call.cpp).
void add_module_call(pybind11::module_& m);

}  // namespace fusedrnn
