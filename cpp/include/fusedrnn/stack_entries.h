// The whole-stack ops of one family (F_stack, F_stack_backward) on one backend: the schema
// arguments go to stack_driver.h, whose layer calls run the backend's layer driver.
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include "fusedrnn/ln_driver.h"
#include "fusedrnn/op_entries.h"
#include "fusedrnn/stack_driver.h"

namespace fusedrnn {

// The LayerNorm families' layer calls (ln_driver.h): float and double on every backend.
template <class Tr>
void check_ln_layer(LayerPlan& p) {
  const auto st = p.x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble, p.op,
              ": LayerNorm layers run in float32 or float64, got input of dtype ", st);
  check_ln_weights<Tr>(p, p.b_ih.defined());
}

template <class Tr, class Kern, class Backend>
LayerFwdResult run_ln_forward(LayerPlan p) {
  check_ln_layer<Tr>(p);
  LayerFwdResult r;
  c10::OptionalDeviceGuard guard;
  if (!p.x.is_cpu()) guard.reset_device(p.x.device());
  Backend::dispatch(p.x.scalar_type(), p.op.c_str(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      r = ln_layer_forward<Tr, Kern, Backend, T>(p);
  });
  return r;
}

template <class Tr, class Kern, class Backend>
LayerBwdResult run_ln_backward(LayerPlan p, const OptT& grad_output, const OptT& grad_hn,
                               const OptT& grad_cn, const Tensor& output, const Tensor& ws,
                               bool input_grad) {
  check_ln_layer<Tr>(p);
  const Tensor go = grad_arg(p, "grad_output", grad_output, {p.N, p.H});
  const Tensor gh = grad_arg(p, "grad_hn", grad_hn, {p.B, p.H});
  const Tensor gc = Tr::kHasCell ? grad_arg(p, "grad_cn", grad_cn, {p.B, p.H}) : Tensor();
  const Tensor out = saved_arg(p, "output", output, {p.N, p.H});
  const Tensor w = saved_arg(p, "workspace", ws, {p.N, ln_ws_cols(Tr::kGates, p.H)});
  LayerBwdResult r;
  c10::OptionalDeviceGuard guard;
  if (!p.x.is_cpu()) guard.reset_device(p.x.device());
  Backend::dispatch(p.x.scalar_type(), p.op.c_str(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      r = ln_layer_backward<Tr, Kern, Backend, T>(p, go, gh, gc, out, w, input_grad);
  });
  return r;
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> stack(
    const Tensor& input, const OptT& batch_sizes, const OptT& hx, const OptT& cx,
    at::TensorList weights, bool has_biases, int64_t num_layers, bool bidirectional, double dropout,
    bool train, bool need_workspace) {
  static const std::string name = std::string(Tr::kName) + "_stack";
  return run_stack_forward<Tr>(name.c_str(), input, batch_sizes, hx, cx, weights, has_biases,
                               num_layers, bidirectional, dropout, train, need_workspace,
                               [](const LayerPlan& p) {
                                 if constexpr (Tr::kLayerNorm) {
                                   return run_ln_forward<Tr, Kern, Backend>(p);
                                 } else {
                                   return run_forward<Tr, Kern, Backend>(p);
                                 }
                               });
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> stack_backward(
    const OptT& grad_output, const OptT& grad_hn, const OptT& grad_cn, const Tensor& input,
    const OptT& batch_sizes, const OptT& hx, const OptT& cx, at::TensorList weights,
    bool has_biases, int64_t num_layers, bool bidirectional, const Tensor& output,
    at::TensorList saved, bool input_grad) {
  auto layer = [](const LayerPlan& p, const OptT& go, const OptT& gh, const OptT& gc,
                  const Tensor& out, const Tensor& ws, bool need_dx) {
    if constexpr (Tr::kLayerNorm) {
      return run_ln_backward<Tr, Kern, Backend>(p, go, gh, gc, out, ws, need_dx);
    } else {
      return run_backward<Tr, Kern, Backend>(p, go, gh, gc, out, ws, need_dx);
    }
  };
  static const std::string name = std::string(Tr::kName) + "_stack_backward";
  return run_stack_backward<Tr>(name.c_str(), grad_output, grad_hn, grad_cn, input, batch_sizes, hx,
                                cx, weights, has_biases, num_layers, bidirectional, output, saved,
                                input_grad, layer);
}

template <class Tr, class Kern, class Backend>
void register_stack(torch::Library& m) {
  const std::string n = Tr::kName;
  m.impl((n + "_stack").c_str(), &stack<Tr, Kern, Backend>);
  m.impl((n + "_stack_backward").c_str(), &stack_backward<Tr, Kern, Backend>);
}

}  // namespace fusedrnn
