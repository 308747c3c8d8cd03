// The persistent small-H forward as an op (design: cuda/PERSISTENT.md), shared by the GPU
// (cuda/persistent.cu, torch.ops.fusedrnn_cuda) and the host emulation
// (cuda/emu/emu_persistent.cpp, torch.ops.fusedrnn_emu):
//   persistent_forward(family, input [T, B, I], h0?, c0?, w_ih, w_hh, b_ih?, b_hh?, reverse,
//                      blocks) -> (output [T, B, H], h_n [B, H], c_n [B, H] or [0])
// Inference only, dense input, no projection; `blocks` = 0 picks the backend's default.
// Before the launch (ATen ops, once): xg = x W_ih^T (+ b_ih for GRU), the bias in float
// (LSTM: b_ih + b_hh), hbuf [2, B, H] with h0 in hbuf[1], c in float.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

#include "fusedrnn/dtype_dispatch.h"
#include "kernels/persistent.cuh"

namespace fusedrnn {

using OptTensor = std::optional<at::Tensor>;

// Runs the kernel (Backend::run<T>(args)) and returns the op's results.
template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> persistent_forward(
    const std::string& family, const at::Tensor& input, const OptTensor& h0, const OptTensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
    bool reverse, int64_t blocks) {
  const std::string op = "persistent_forward";
  TORCH_CHECK(family == "lstm" || family == "gru", op, ": family must be 'lstm' or 'gru', got '",
              family, "'");
  const int64_t G = family == "lstm" ? 4 : 3;
  TORCH_CHECK(input.dim() == 3, op, ": input must be [T, B, I], got ", input.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % G == 0 && w_hh.size(0) == G * w_hh.size(1), op,
              ": w_hh must be [", G, "*H, H], got ", w_hh.sizes());
  const int64_t T = input.size(0), B = input.size(1), I = input.size(2), H = w_hh.size(1);
  TORCH_CHECK(w_ih.sizes() == at::IntArrayRef({G * H, I}), op, ": w_ih must be [", G * H, ", ", I,
              "], got ", w_ih.sizes());
  TORCH_CHECK(blocks >= 0, op, ": blocks must be >= 0 (0: default), got ", blocks);
  if (family == "gru") TORCH_CHECK(!c0.has_value(), op, ": c0 is only for lstm");
  const auto opts = input.options();
  const auto fopts = opts.dtype(input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat);
  for (const auto* t : {&h0, &c0}) {
    if (t->has_value())
      TORCH_CHECK((*t)->sizes() == at::IntArrayRef({B, H}) && (*t)->dtype() == input.dtype() &&
                      (*t)->device() == input.device(),
                  op, ": h0/c0 must be [", B, ", ", H, "] like input, got ", (*t)->sizes());
  }
  for (const at::Tensor* w : {&w_ih, &w_hh})
    TORCH_CHECK(w->dtype() == input.dtype() && w->device() == input.device(), op,
                ": weights must have input's dtype and device");

  at::Tensor xg = at::matmul(input, w_ih.t());
  at::Tensor bias;
  if (G == 3) {
    if (b_ih) xg.add_(*b_ih);
    if (b_hh) bias = b_hh->to(fopts);
  } else if (b_ih || b_hh) {
    bias = at::zeros({G * H}, fopts);
    if (b_ih) bias.add_(*b_ih);
    if (b_hh) bias.add_(*b_hh);
  }
  xg = xg.contiguous();
  at::Tensor hbuf = at::empty({2, B, H}, opts);
  if (h0) {
    hbuf[1].copy_(*h0);
  } else {
    hbuf[1].zero_();
  }
  at::Tensor c =
      G == 4 ? (c0 ? c0->to(fopts, false, /*copy=*/true).contiguous() : at::zeros({B, H}, fopts))
             : at::empty({0}, fopts);
  at::Tensor out = at::empty({T, B, H}, opts);
  at::Tensor w = w_hh.contiguous();
  Backend::dispatch(input.scalar_type(), [&](auto tag) {
    using S = decltype(tag);
    kernels::PersistArgs<S> a;
    a.T_steps = T;
    a.B = B;
    a.H = H;
    a.G = G;
    a.reverse = reverse;
    a.xg = xg.data_ptr<S>();
    a.bias = bias.defined() ? bias.data_ptr<Carry<S>>() : nullptr;
    a.w_hh = w.data_ptr<S>();
    a.hbuf = hbuf.data_ptr<S>();
    a.c = G == 4 ? c.data_ptr<Carry<S>>() : nullptr;
    a.out = out.data_ptr<S>();
    if (T > 0 && B > 0 && H > 0) Backend::template run<S>(a, blocks);
  });
  at::Tensor h_n = hbuf[T > 0 ? (T - 1) % 2 : 1].clone();
  at::Tensor c_n = G == 4 ? c.to(input.scalar_type()) : at::empty({0}, opts);
  return {out, h_n, c_n};
}

inline const char* persistent_schema() {
  return "persistent_forward(str family, Tensor input, Tensor? h0, Tensor? c0, Tensor w_ih, "
         "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, bool reverse=False, int blocks=0) -> "
         "(Tensor, Tensor, Tensor)";
}

}  // namespace fusedrnn
