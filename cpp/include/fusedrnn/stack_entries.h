// The whole-stack ops of one family (F_stack, F_stack_backward) on one backend: the schema
// arguments go to stack_driver.h, whose layer calls run the backend's layer driver.
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include "fusedrnn/op_entries.h"
#include "fusedrnn/stack_driver.h"

namespace fusedrnn {

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> stack(
    const Tensor& input, const OptT& batch_sizes, const OptT& hx, const OptT& cx,
    at::TensorList weights, bool has_biases, int64_t num_layers, bool bidirectional, double dropout,
    bool train, bool need_workspace) {
  static const std::string name = std::string(Tr::kName) + "_stack";
  return run_stack_forward<Tr>(
      name.c_str(), input, batch_sizes, hx, cx, weights, has_biases, num_layers, bidirectional,
      dropout, train, need_workspace,
      [](const LayerPlan& p) { return run_forward<Tr, Kern, Backend>(p); });
}

template <class Tr, class Kern, class Backend>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> stack_backward(
    const OptT& grad_output, const OptT& grad_hn, const OptT& grad_cn, const Tensor& input,
    const OptT& batch_sizes, const OptT& hx, const OptT& cx, at::TensorList weights,
    bool has_biases, int64_t num_layers, bool bidirectional, const Tensor& output,
    at::TensorList saved, bool input_grad) {
  auto layer = [](const LayerPlan& p, const OptT& go, const OptT& gh, const OptT& gc,
                  const Tensor& out, const Tensor& ws, bool need_dx) {
    return run_backward<Tr, Kern, Backend>(p, go, gh, gc, out, ws, need_dx);
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
