// Op implementations shared by all backends: schema arguments -> LayerPlan -> driver.
//
// A Backend supplies `Blas` (see layer_driver.h) and `dispatch(dtype, op, f)`, which calls
// f(T{}) for the scalar types it supports and raises a clear error otherwise. Kern is the
// backend's fused pointwise pair for the family. Absent optional gradients (no bias, no
// projection, no c0) are returned as empty [0] tensors; the Python glue maps them to None.
// Layer backward ops skip grad_input (returned as an empty [0] tensor) when input_grad is
// false: the input of a first layer rarely needs a gradient, and dx = dG W_ih is one GEMM
// of the size of the input projection.
// Cell ops are a one-step layer (T = 1, hx required). Their backward ops also take
// hx_grad: without it dh = dG W_hh is skipped (grad_hx is an empty [0] tensor) and w_hh (like
// w_ih without input_grad) is only read for its shape, so autograd need not save it (torch.nn
// does not either). No backward op reads the biases' values, only their shapes.
#pragma once

#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <tuple>

#include "fusedrnn/layer_driver.h"

namespace fusedrnn {

using OptT = std::optional<at::Tensor>;
using at::Tensor;

// Runs f(T{}) for the plan's scalar type with the input's device current (kernels launch on
// the current device).
template <class Backend, class F>
void on_plan_device(const LayerPlan& p, F&& f) {
  c10::OptionalDeviceGuard guard;
  if (!p.x.is_cpu()) guard.reset_device(p.x.device());
  Backend::dispatch(p.x.scalar_type(), p.op.c_str(), f);
}

// The cell ops' forward: cell_forward for float / double, the layer driver for half / bf16.
template <class Tr, class Kern, class Backend>
LayerFwdResult run_cell_forward(const LayerPlan& p) {
  LayerFwdResult r;
  on_plan_device<Backend>(p, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (kWideCarry<T>) {
      r = layer_forward<Tr, Kern, Backend, T>(p);
    } else {
      r = cell_forward<Tr, Kern, Backend, T>(p);
    }
  });
  return r;
}

template <class Tr, class Kern, class Backend>
LayerFwdResult run_forward(const LayerPlan& p) {
  LayerFwdResult r;
  on_plan_device<Backend>(
      p, [&](auto tag) { r = layer_forward<Tr, Kern, Backend, decltype(tag)>(p); });
  return r;
}

// A backward op's incoming gradients and saved tensors, checked against the plan and made
// contiguous: grad_output [N, P], grad_hn [B, P], grad_cn [B, H] (LSTM), the saved output
// [N, P] and workspace [N, kWs*H] (families with one). Absent ones stay undefined.
struct BwdArgs {
  Tensor go, gh, gc, out, ws;
};

template <class Tr>
BwdArgs backward_args(const LayerPlan& p, const OptT& grad_output, const OptT& grad_hn,
                      const OptT& grad_cn, const OptT& output, const OptT& ws) {
  BwdArgs a;
  a.go = grad_arg(p, "grad_output", grad_output, {p.N, p.P});
  a.gh = grad_arg(p, "grad_hn", grad_hn, {p.B, p.P});
  if (Tr::kHasCell) a.gc = grad_arg(p, "grad_cn", grad_cn, {p.B, p.H});
  if (output) a.out = saved_arg(p, "output", *output, {p.N, p.P});
  if (Tr::kWs && ws) a.ws = saved_arg(p, "workspace", *ws, {p.N, Tr::kWs * p.H});
  return a;
}

// The cell ops' backward: cell_backward for float / double, the layer driver for half / bf16.
// saved: RNN h' (checked as "output"), LSTM / GRU the workspace.
template <class Tr, class Kern, class Backend>
LayerBwdResult run_cell_backward(const LayerPlan& p, const OptT& grad_hn, const OptT& grad_cn,
                                 const Tensor& saved, bool input_grad) {
  // No copy of `saved` outlives this statement but a's: cell_backward resets that one when it
  // lets go of the workspace (saved_release.h).
  const OptT none;
  BwdArgs a = backward_args<Tr>(p, none, grad_hn, grad_cn, Tr::kWs ? none : OptT(saved),
                                Tr::kWs ? OptT(saved) : none);
  Tensor& s = Tr::kWs ? a.ws : a.out;
  LayerBwdResult r;
  on_plan_device<Backend>(p, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (kWideCarry<T>) {
      const Tensor out = Tr::kWs ? p.h0 : s;  // read only by the RNN (its saved h')
      r = layer_backward<Tr, Kern, Backend, T>(p, Tensor(), a.gh, a.gc, out, a.ws, input_grad);
    } else {
      r = cell_backward<Tr, Kern, Backend, T>(p, a.gh, a.gc, s, input_grad);
    }
  });
  return r;
}

template <class Tr, class Kern, class Backend>
LayerBwdResult run_backward(const LayerPlan& p, const OptT& grad_output, const OptT& grad_hn,
                            const OptT& grad_cn, const Tensor& output, const Tensor& ws,
                            bool input_grad = true) {
  const BwdArgs a = backward_args<Tr>(p, grad_output, grad_hn, grad_cn, output, ws);
  LayerBwdResult r;
  on_plan_device<Backend>(p, [&](auto tag) {
    r = layer_backward<Tr, Kern, Backend, decltype(tag)>(p, a.go, a.gh, a.gc, a.out, a.ws,
                                                         input_grad);
  });
  return r;
}

// ---- whole-layer ops --------------------------------------------------------------------
template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor> rnn_layer(const Tensor& input, const OptT& batch_sizes, const OptT& h0,
                                     const Tensor& w_ih, const Tensor& w_hh, const OptT& b_ih,
                                     const OptT& b_hh, bool reverse) {
  const auto p = make_plan<Tr>(Tr::kFamily == Family::Gru       ? "gru_layer"
                               : Tr::kFamily == Family::RnnRelu ? "rnn_relu_layer"
                                                                : "rnn_tanh_layer",
                               input, batch_sizes, h0, std::nullopt, w_ih, w_hh, b_ih, b_hh,
                               std::nullopt, reverse);
  auto r = run_forward<Tr, Kern, Backend>(p);
  return {r.output, r.h_n};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_layer_backward(
    const OptT& grad_output, const OptT& grad_hn, const Tensor& input, const OptT& batch_sizes,
    const OptT& h0, const Tensor& w_ih, const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh,
    bool reverse, const Tensor& output, bool input_grad) {
  const auto p = make_plan<Tr>(
      Tr::kFamily == Family::RnnRelu ? "rnn_relu_layer_backward" : "rnn_tanh_layer_backward", input,
      batch_sizes, h0, std::nullopt, w_ih, w_hh, b_ih, b_hh, std::nullopt, reverse, false,
      input_grad, true, false);
  auto r = run_backward<Tr, Kern, Backend>(p, grad_output, grad_hn, std::nullopt, output, Tensor(),
                                           input_grad);
  return {r.grad_input, r.grad_h0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor> gru_layer(const Tensor& input, const OptT& batch_sizes,
                                             const OptT& h0, const Tensor& w_ih, const Tensor& w_hh,
                                             const OptT& b_ih, const OptT& b_hh, bool reverse,
                                             bool need_workspace) {
  auto p = make_plan<Tr>("gru_layer", input, batch_sizes, h0, std::nullopt, w_ih, w_hh, b_ih, b_hh,
                         std::nullopt, reverse);
  p.keep_workspace = need_workspace;
  auto r = run_forward<Tr, Kern, Backend>(p);
  return {r.output, r.h_n, r.ws};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_layer_backward(
    const OptT& grad_output, const OptT& grad_hn, const Tensor& input, const OptT& batch_sizes,
    const OptT& h0, const Tensor& w_ih, const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh,
    bool reverse, const Tensor& output, const Tensor& workspace, bool input_grad) {
  const auto p =
      make_plan<Tr>("gru_layer_backward", input, batch_sizes, h0, std::nullopt, w_ih, w_hh, b_ih,
                    b_hh, std::nullopt, reverse, false, input_grad, true, false);
  auto r = run_backward<Tr, Kern, Backend>(p, grad_output, grad_hn, std::nullopt, output, workspace,
                                           input_grad);
  return {r.grad_input, r.grad_h0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_layer(const Tensor& input, const OptT& batch_sizes,
                                                      const OptT& h0, const OptT& c0,
                                                      const Tensor& w_ih, const Tensor& w_hh,
                                                      const OptT& b_ih, const OptT& b_hh,
                                                      const OptT& w_hr, bool reverse,
                                                      bool need_workspace) {
  auto p = make_plan<Tr>("lstm_layer", input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                         reverse);
  p.keep_workspace = need_workspace;
  auto r = run_forward<Tr, Kern, Backend>(p);
  return {r.output, r.h_n, r.c_n, r.ws};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_backward(
    const OptT& grad_output, const OptT& grad_hn, const OptT& grad_cn, const Tensor& input,
    const OptT& batch_sizes, const OptT& h0, const OptT& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptT& b_ih, const OptT& b_hh, const OptT& w_hr, bool reverse, const Tensor& output,
    const Tensor& workspace, bool input_grad) {
  const auto p = make_plan<Tr>("lstm_layer_backward", input, batch_sizes, h0, c0, w_ih, w_hh, b_ih,
                               b_hh, w_hr, reverse, false, input_grad, true, false);
  auto r = run_backward<Tr, Kern, Backend>(p, grad_output, grad_hn, grad_cn, output, workspace,
                                           input_grad);
  return {r.grad_input, r.grad_h0,   r.grad_c0,   r.grad_w_ih,
          r.grad_w_hh,  r.grad_b_ih, r.grad_b_hh, r.grad_w_hr};
}

// ---- single-step cell ops ---------------------------------------------------------------
template <class Tr, class Kern, class Backend>
Tensor rnn_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih, const Tensor& w_hh,
                const OptT& b_ih, const OptT& b_hh) {
  const auto p = make_plan<Tr>(Tr::kFamily == Family::RnnRelu ? "rnn_relu_cell" : "rnn_tanh_cell",
                               input, std::nullopt, hx, std::nullopt, w_ih, w_hh, b_ih, b_hh,
                               std::nullopt, false, /*is_cell=*/true);
  return run_cell_forward<Tr, Kern, Backend>(p).h_n;
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> rnn_cell_backward(
    const OptT& grad_hy, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh, const Tensor& hy, bool input_grad,
    bool hx_grad) {
  const auto p = make_plan<Tr>(
      Tr::kFamily == Family::RnnRelu ? "rnn_relu_cell_backward" : "rnn_tanh_cell_backward", input,
      std::nullopt, hx, std::nullopt, w_ih, w_hh, b_ih, b_hh, std::nullopt, false, true, input_grad,
      hx_grad, false);
  auto r = run_cell_backward<Tr, Kern, Backend>(p, grad_hy, std::nullopt, hy, input_grad);
  return {r.grad_input, r.grad_h0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor> gru_cell(const Tensor& input, const Tensor& hx, const Tensor& w_ih,
                                    const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh) {
  const auto p = make_plan<Tr>("gru_cell", input, std::nullopt, hx, std::nullopt, w_ih, w_hh, b_ih,
                               b_hh, std::nullopt, false, true);
  auto r = run_cell_forward<Tr, Kern, Backend>(p);
  return {r.h_n, r.ws};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_cell_backward(
    const OptT& grad_hy, const Tensor& input, const Tensor& hx, const Tensor& w_ih,
    const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh, const Tensor& workspace,
    bool input_grad, bool hx_grad) {
  const auto p =
      make_plan<Tr>("gru_cell_backward", input, std::nullopt, hx, std::nullopt, w_ih, w_hh, b_ih,
                    b_hh, std::nullopt, false, true, input_grad, hx_grad, false);
  auto r = run_cell_backward<Tr, Kern, Backend>(p, grad_hy, std::nullopt, workspace, input_grad);
  return {r.grad_input, r.grad_h0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor> lstm_cell(const Tensor& input, const Tensor& hx,
                                             const Tensor& cx, const Tensor& w_ih,
                                             const Tensor& w_hh, const OptT& b_ih,
                                             const OptT& b_hh) {
  const auto p = make_plan<Tr>("lstm_cell", input, std::nullopt, hx, cx, w_ih, w_hh, b_ih, b_hh,
                               std::nullopt, false, true);
  auto r = run_cell_forward<Tr, Kern, Backend>(p);
  return {r.h_n, r.c_n, r.ws};
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_cell_backward(
    const OptT& grad_hy, const OptT& grad_cy, const Tensor& input, const Tensor& hx,
    const Tensor& cx, const Tensor& w_ih, const Tensor& w_hh, const OptT& b_ih, const OptT& b_hh,
    const Tensor& workspace, bool input_grad, bool hx_grad) {
  const auto p = make_plan<Tr>("lstm_cell_backward", input, std::nullopt, hx, cx, w_ih, w_hh, b_ih,
                               b_hh, std::nullopt, false, true, input_grad, hx_grad, false);
  auto r = run_cell_backward<Tr, Kern, Backend>(p, grad_hy, grad_cy, workspace, input_grad);
  return {r.grad_input, r.grad_h0, r.grad_c0, r.grad_w_ih, r.grad_w_hh, r.grad_b_ih, r.grad_b_hh};
}

}  // namespace fusedrnn
