// The op schemas of every fused op, as a function so that more than one namespace can declare
// them: fusedrnn (schemas.cpp) and fusedrnn_emu (the host emulation of the CUDA kernels,
// cuda/emu). See schemas.cpp for what the ops are.
#pragma once

#include <torch/library.h>

#include <string>

namespace fusedrnn {

// "<name>(<forward stack arguments><extra>) -> <returns>": the *_stack ops (extra:
// need_workspace) and autograd.cpp's *_stack_autograd (no extra) declare their arguments here.
inline std::string stack_schema(const std::string& name, const char* extra) {
  return name +
         "(Tensor input, Tensor? batch_sizes, Tensor? hx, Tensor? cx, Tensor[] weights, "
         "bool has_biases, int num_layers, bool bidirectional, float dropout, bool train" +
         extra + ") -> (Tensor output, Tensor h_n, Tensor c_n, Tensor[] saved)";
}

// "<fam>_cell<suffix>(...) -> ...": the *_cell ops (no suffix) and autograd.cpp's
// *_cell_autograd declare their arguments here. fam: rnn_tanh, rnn_relu, lstm, gru.
inline std::string cell_schema(const std::string& fam, const char* suffix) {
  const bool lstm = fam == "lstm";
  const char* rets = lstm           ? "(Tensor hy, Tensor cy, Tensor workspace)"
                     : fam == "gru" ? "(Tensor hy, Tensor workspace)"
                                    : "Tensor hy";
  return fam + "_cell" + suffix + "(Tensor input, Tensor hx, " + (lstm ? "Tensor cx, " : "") +
         "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh) -> " + rets;
}

inline void define_stack_schemas(torch::Library& m) {
  // Whole stacks (every layer and direction; stack_driver.h). The forward draws dropout masks
  // from the default generator: nondeterministic_seeded, as aten::dropout. ln_lstm / ln_gru:
  // the LayerNorm LSTM / GRU (ln_driver.h), whose weights add the LayerNorm weights.
  for (const char* f : {"rnn_tanh", "rnn_relu", "lstm", "gru", "ln_lstm", "ln_gru"}) {
    const std::string n = f;
    m.def(stack_schema(n + "_stack", ", bool need_workspace=True").c_str(),
          {at::Tag::nondeterministic_seeded});
    m.def((n + "_stack_backward(Tensor? grad_output, Tensor? grad_hn, Tensor? grad_cn, "
               "Tensor input, Tensor? batch_sizes, Tensor? hx, Tensor? cx, Tensor[] weights, "
               "bool has_biases, int num_layers, bool bidirectional, Tensor output, "
               "Tensor[] saved, bool input_grad=True) -> (Tensor grad_input, Tensor grad_hx, "
               "Tensor grad_cx, Tensor[] grad_weights)")
              .c_str());
  }
}

inline void define_schemas(torch::Library& m) {
  define_stack_schemas(m);
  for (const char* f : {"rnn_tanh", "rnn_relu"}) {
    const std::string n = f;
    m.def((n + "_layer(Tensor input, Tensor? batch_sizes, Tensor? h0, Tensor w_ih, Tensor w_hh, "
               "Tensor? b_ih, Tensor? b_hh, bool reverse) -> (Tensor output, Tensor h_n)")
              .c_str());
    m.def(
        (n +
         "_layer_backward(Tensor? grad_output, Tensor? grad_hn, Tensor input, "
         "Tensor? batch_sizes, Tensor? h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
         "Tensor? b_hh, bool reverse, Tensor output, bool input_grad=True) -> (Tensor grad_input, "
         "Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, "
         "Tensor grad_b_hh)")
            .c_str());
    m.def(cell_schema(n, "").c_str());
    m.def((n + "_cell_backward(Tensor? grad_hy, Tensor input, Tensor hx, Tensor w_ih, "
               "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor hy, bool input_grad=True, "
               "bool hx_grad=True) -> (Tensor grad_input, "
               "Tensor grad_hx, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, "
               "Tensor grad_b_hh)")
              .c_str());
  }
  m.def(
      "lstm_layer(Tensor input, Tensor? batch_sizes, Tensor? h0, Tensor? c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, bool "
      "need_workspace=True) -> (Tensor output, "
      "Tensor h_n, Tensor c_n, Tensor workspace)");
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_hn, Tensor? grad_cn, Tensor input, "
      "Tensor? batch_sizes, Tensor? h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, bool reverse, Tensor output, Tensor workspace, "
      "bool input_grad=True) -> "
      "(Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");
  m.def(cell_schema("lstm", "").c_str());
  m.def(
      "lstm_cell_backward(Tensor? grad_hy, Tensor? grad_cy, Tensor input, Tensor hx, Tensor cx, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor workspace, "
      "bool input_grad=True, bool hx_grad=True) -> "
      "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "gru_layer(Tensor input, Tensor? batch_sizes, Tensor? h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse, bool need_workspace=True) -> (Tensor output, "
      "Tensor h_n, "
      "Tensor workspace)");
  m.def(
      "gru_layer_backward(Tensor? grad_output, Tensor? grad_hn, Tensor input, "
      "Tensor? batch_sizes, Tensor? h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "bool reverse, Tensor output, Tensor workspace, bool input_grad=True) -> "
      "(Tensor grad_input, Tensor grad_h0, "
      "Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(cell_schema("gru", "").c_str());
  m.def(
      "gru_cell_backward(Tensor? grad_hy, Tensor input, Tensor hx, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, Tensor workspace, bool input_grad=True, bool hx_grad=True) -> "
      "(Tensor grad_input, Tensor grad_hx, "
      "Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh)");
}

}  // namespace fusedrnn
