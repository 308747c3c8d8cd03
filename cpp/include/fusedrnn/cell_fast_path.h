// The cell modules' one-call eager path (cell_fast_path.cpp), bound as fusedrnn._C.cell_step.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

namespace fusedrnn {

// `kind`: which cell op (modules.py's _FAST_KIND uses the same numbers).
enum CellKind : int64_t { kCellRnnTanh = 0, kCellRnnRelu = 1, kCellLstm = 2, kCellGru = 3 };

// The cell's output (h', or (h', c') for the LSTM), or None when the call is not the plain
// case and the module must take its Python path.
pybind11::object cell_step(int64_t kind, int64_t input_size, int64_t hidden_size,
                           pybind11::handle input, pybind11::handle hx, pybind11::handle w_ih,
                           pybind11::handle w_hh, pybind11::handle b_ih, pybind11::handle b_hh);

}  // namespace fusedrnn
