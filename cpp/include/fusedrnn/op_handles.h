// Typed handles of the forward ops, for C++ callers that go through the dispatcher
// (autograd.cpp's nodes, module_fast_path.cpp): the C++ signatures of the schemas in
// schemas.h, and op<Sig>("name") for fusedrnn::name.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace fusedrnn::ops {

using Tensor = at::Tensor;
using OptT = std::optional<at::Tensor>;

// {fam}_stack (the last bool: need_workspace) and {fam}_stack_autograd (without it).
using StackOut = std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>>;
using StackSig = StackOut(const Tensor&, const OptT&, const OptT&, const OptT&, at::TensorList,
                          bool, int64_t, bool, double, bool, bool);
using StackAutogradSig = StackOut(const Tensor&, const OptT&, const OptT&, const OptT&,
                                  at::TensorList, bool, int64_t, bool, double, bool);
// {fam}_cell and {fam}_cell_autograd: rnn_tanh / rnn_relu -> hy; gru -> (hy, workspace);
// lstm (input, hx, cx, ...) -> (hy, cy, workspace).
using RnnCellSig = Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const OptT&,
                          const OptT&);
using GruCellSig = std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, const OptT&, const OptT&);
using LstmCellSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                       const Tensor&, const Tensor&, const OptT&,
                                                       const OptT&);

template <class Sig>
c10::TypedOperatorHandle<Sig> op(const std::string& name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow(("fusedrnn::" + name).c_str(), "")
      .template typed<Sig>();
}

}  // namespace fusedrnn::ops
