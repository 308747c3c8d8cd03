// The op schemas, declared once for every backend (TORCH_LIBRARY(fusedrnn, m)).
//
// Per cell family F in {rnn_tanh, rnn_relu, lstm, gru}:
//   F_layer / F_layer_backward : one direction over a whole sequence (time loop in C++).
//   F_cell  / F_cell_backward  : one step (the *Cell modules).
// Layer input is time-major [T, B, I], or packed data [N, I] with batch_sizes [T] (int64, CPU).
// Outputs: output [T, B, P] (or [N, P]), h_n [B, P], c_n [B, H] (LSTM), and a workspace
// (LSTM [N, 5H], GRU [N, 4H]; 0 rows with need_workspace=False, at inference) that backward
// reads. F_stack runs every layer and direction (stack_driver.h). Backward returns a gradient for
// every tensor input; absent optional inputs get an empty [0] gradient.
#include "fusedrnn/schemas.h"

#include <torch/library.h>

TORCH_LIBRARY(fusedrnn, m) { fusedrnn::define_schemas(m); }
