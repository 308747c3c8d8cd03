// The whole stack of a module in one op call: every layer and direction, dropout between
// layers, as ATen's RNN.cpp does (Cell -> Layer -> Stack), but with the fused layer driver.
//
// Input: time-major [T, B, I] or packed [N, I] with batch_sizes. hx [L*D, B, P], cx [L*D, B,
// H] (LSTM) or absent (zeros). weights: torch.nn's flat list, per layer and direction
// w_ih [G*H, I_l], w_hh [G*H, P], then b_ih, b_hh [G*H] (has_biases), then w_hr [P, H]
// (projected LSTM) or the LayerNorm weights (ln_weight_count, layer_plan.h), with I_l = I
// for layer 0 and D*P above it.
// Outputs: output [T, B, D*P] (or [N, D*P]), h_n [L*D, B, P], c_n [L*D, B, H] (LSTM; else an
// empty [0]), and `saved`, read by backward: per layer l, per direction d, the direction's
// output [N, P] and workspace (see layer_driver.h); then, below the top layer, the next
// layer's input x_{l+1} [N, D*P] (after dropout) and the dropout mask [N, D*P] (scaled,
// values 0 or 1/(1-p); an empty [0] without dropout). No result aliases another (an op's
// results must not): where one would (one direction: the top layer's output is `output`;
// without dropout x_{l+1} is the layer's output) the slot holds an empty [0] and backward
// reads the other (it takes `output` too). Masks are drawn like at::dropout
// (bernoulli_(1-p) on the default generator, then / (1-p)), so a seeded run reproduces
// torch.nn's masks exactly.
// Backward: layers in reverse; each direction's layer_backward; the input gradients of the
// directions are summed, masked, and become the output gradient of the layer below. Weight
// gradients in the weights' order; grad_hx / grad_cx empty [0] when hx / cx were absent.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "fusedrnn/buffers.h"
#include "fusedrnn/dropout_mask.h"
#include "fusedrnn/layer_plan.h"

namespace fusedrnn {

struct StackShape {
  int64_t L = 1, D = 1, per = 2;  // per: weights of one (layer, direction)
  bool bias = true, proj = false;
  int64_t n_ln = 0;  // LayerNorm weights of one (layer, direction), after the biases
  int64_t idx(int64_t l, int64_t d) const { return l * D + d; }
  // Index in `saved` of direction d's output in layer l (its workspace follows).
  int64_t out_at(int64_t l, int64_t d) const { return layer_at(l) + 2 * d; }
  // Index of the input of layer l (l >= 1) and of the mask applied to it.
  int64_t input_at(int64_t l) const { return layer_at(l - 1) + 2 * D; }
  int64_t mask_at(int64_t l) const { return input_at(l) + 1; }
  int64_t saved_count() const { return layer_at(L) - 2; }
  int64_t layer_at(int64_t l) const { return l * (2 * D + 2); }
  // Whether the slot would alias: the top layer's single output is `output` itself.
  bool out_is_output(int64_t l) const { return l == L - 1 && D == 1; }
};

// Where a (layer, direction)'s LayerNorm weights start in its slice of the weight list.
inline int64_t ln_at(const StackShape& s) { return s.bias ? 4 : 2; }

template <class Tr>
StackShape stack_shape(const std::string& op, int64_t num_layers, bool bidirectional,
                       bool has_biases, size_t n_weights) {
  StackShape s;
  TORCH_CHECK(num_layers >= 1, op, ": num_layers must be at least 1, got ", num_layers);
  s.L = num_layers;
  s.D = bidirectional ? 2 : 1;
  s.bias = has_biases;
  s.n_ln = ln_weight_count<Tr>(has_biases);
  const int64_t base = 2 + (has_biases ? 2 : 0) + s.n_ln;
  const int64_t n = static_cast<int64_t>(n_weights);
  TORCH_CHECK(n % (s.L * s.D) == 0, op, ": expected ", base, " weights per layer and direction (",
              s.L, " layers x ", s.D, " directions), got ", n, " in all");
  s.per = n / (s.L * s.D);
  s.proj = s.per == base + 1 && Tr::kFamily == Family::Lstm;
  TORCH_CHECK(s.per == base || s.proj, op, ": expected ", base,
              Tr::kFamily == Family::Lstm ? " (or, projected, one more)" : "",
              " weights per layer and direction, got ", s.per);
  return s;
}

struct LayerWeights {
  at::Tensor w_ih, w_hh;
  std::optional<at::Tensor> b_ih, b_hh, w_hr;
  std::vector<at::Tensor> ln;
};

inline LayerWeights layer_weights(const StackShape& s, at::TensorList w, int64_t idx) {
  const int64_t o = idx * s.per;
  LayerWeights r{w[o], w[o + 1], std::nullopt, std::nullopt, std::nullopt, {}};
  if (s.bias) {
    r.b_ih = w[o + 2];
    r.b_hh = w[o + 3];
  }
  if (s.proj) r.w_hr = w[o + s.per - 1];
  for (int64_t k = 0; k < s.n_ln; ++k) r.ln.push_back(w[o + ln_at(s) + k]);
  return r;
}

inline std::optional<at::Tensor> state_slice(const std::optional<at::Tensor>& st,
                                             const std::string& op, const char* name,
                                             const StackShape& s, int64_t idx,
                                             const at::Tensor& input) {
  if (!st.has_value() || !st->defined()) return std::nullopt;
  detail::check_like(op, name, *st, input);
  TORCH_CHECK(st->dim() == 3 && st->size(0) == s.L * s.D, op, ": expected ", name,
              " of shape [L*D, B, *] with L*D = ", s.L * s.D, ", got ",
              detail::shape_str(st->sizes()));
  return st->select(0, idx);
}

template <class Tr, class Run>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> run_stack_forward(
    const char* name, const at::Tensor& input, const std::optional<at::Tensor>& batch_sizes,
    const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& cx,
    at::TensorList weights, bool has_biases, int64_t num_layers, bool bidirectional, double dropout,
    bool train, bool need_workspace, Run&& run_layer) {
  const std::string op = std::string("fusedrnn::") + name;  // as make_plan names it
  const StackShape s = stack_shape<Tr>(op, num_layers, bidirectional, has_biases, weights.size());
  TORCH_CHECK(dropout >= 0 && dropout <= 1, op, ": dropout must be in [0, 1], got ", dropout);
  if (!Tr::kHasCell) TORCH_CHECK(!opt(cx), op, ": cx is only for LSTM");
  const bool drop = train && dropout > 0 && s.L > 1;
  std::vector<at::Tensor> saved(s.saved_count()), hs, cs;
  at::Tensor x = input;
  for (int64_t l = 0; l < s.L; ++l) {
    std::vector<at::Tensor> outs;
    for (int64_t d = 0; d < s.D; ++d) {
      const int64_t idx = s.idx(l, d);
      const LayerWeights w = layer_weights(s, weights, idx);
      LayerPlan p = make_plan<Tr>(name, x, batch_sizes, state_slice(hx, op, "hx", s, idx, input),
                                  state_slice(cx, op, "cx", s, idx, input), w.w_ih, w.w_hh, w.b_ih,
                                  w.b_hh, w.w_hr, d == 1);
      p.keep_workspace = need_workspace;
      p.ln = w.ln;
      LayerFwdResult r = run_layer(p);
      outs.push_back(r.output);
      hs.push_back(r.h_n);
      if (Tr::kHasCell) cs.push_back(r.c_n);
      saved[s.out_at(l, d)] = s.out_is_output(l) ? buffer_empty({0}, r.output.options()) : r.output;
      saved[s.out_at(l, d) + 1] = r.ws;
    }
    if (s.D == 1) {
      x = outs[0];
    } else {
      auto sizes = outs[0].sizes().vec();
      sizes.back() *= s.D;
      x = buffer_empty(sizes, outs[0].options());
      at::cat_out(x, outs, -1);
    }
    if (l + 1 < s.L) {
      at::Tensor mask = drop ? dropout_mask(x, dropout) : buffer_empty({0}, x.options());
      if (drop) {
        at::Tensor kept = buffer_empty(x.sizes(), x.options());
        x = at::mul_out(kept, x, mask);
      }
      saved[s.input_at(l + 1)] = drop || s.D > 1 ? x : buffer_empty({0}, x.options());
      saved[s.mask_at(l + 1)] = mask;
    }
  }
  at::Tensor h_n = at::stack(hs, 0);
  at::Tensor c_n = Tr::kHasCell ? at::stack(cs, 0) : buffer_empty({0}, input.options());
  return {x, h_n, c_n, saved};
}

template <class Tr, class Run>
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>> run_stack_backward(
    const char* name, const std::optional<at::Tensor>& grad_output,
    const std::optional<at::Tensor>& grad_hn, const std::optional<at::Tensor>& grad_cn,
    const at::Tensor& input, const std::optional<at::Tensor>& batch_sizes,
    const std::optional<at::Tensor>& hx, const std::optional<at::Tensor>& cx,
    at::TensorList weights, bool has_biases, int64_t num_layers, bool bidirectional,
    const at::Tensor& output, at::TensorList saved, bool input_grad, Run&& run_layer_backward) {
  const std::string op = std::string("fusedrnn::") + name;
  const StackShape s = stack_shape<Tr>(op, num_layers, bidirectional, has_biases, weights.size());
  TORCH_CHECK(static_cast<int64_t>(saved.size()) == s.saved_count(), op, ": expected ",
              s.saved_count(), " saved tensors, got ", saved.size());
  std::vector<at::Tensor> gw(weights.size()), gh(s.L * s.D), gc(s.L * s.D);
  at::Tensor g_top = opt(grad_output) ? *grad_output : at::Tensor();
  at::Tensor grad_input;
  auto layer_out = [&](int64_t l, int64_t d) -> const at::Tensor& {
    return s.out_is_output(l) ? output : saved[s.out_at(l, d)];
  };
  for (int64_t l = s.L - 1; l >= 0; --l) {
    const bool own_input = l > 0 && (s.D > 1 || saved[s.mask_at(l)].numel() > 0);
    const at::Tensor x = l == 0 ? input : own_input ? saved[s.input_at(l)] : layer_out(l - 1, 0);
    const bool need_dx = l > 0 || input_grad;
    at::Tensor gx;
    for (int64_t d = 0; d < s.D; ++d) {
      const int64_t idx = s.idx(l, d);
      const LayerWeights w = layer_weights(s, weights, idx);
      LayerPlan p = make_plan<Tr>(name, x, batch_sizes, state_slice(hx, op, "hx", s, idx, input),
                                  state_slice(cx, op, "cx", s, idx, input), w.w_ih, w.w_hh, w.b_ih,
                                  w.b_hh, w.w_hr, d == 1, false, need_dx, true, false);
      p.ln = w.ln;
      const int64_t P = p.P;
      std::optional<at::Tensor> go, ghn, gcn;
      if (g_top.defined()) go = s.D == 1 ? g_top : g_top.narrow(-1, d * P, P);
      if (opt(grad_hn)) ghn = grad_hn->select(0, idx);
      if (Tr::kHasCell && opt(grad_cn)) gcn = grad_cn->select(0, idx);
      LayerBwdResult r =
          run_layer_backward(p, go, ghn, gcn, layer_out(l, d), saved[s.out_at(l, d) + 1], need_dx);
      if (need_dx) gx = gx.defined() ? gx.add_(r.grad_input) : r.grad_input;
      const int64_t o = idx * s.per;
      gw[o] = r.grad_w_ih;
      gw[o + 1] = r.grad_w_hh;
      if (s.bias) {
        gw[o + 2] = r.grad_b_ih;
        gw[o + 3] = r.grad_b_hh;
      }
      if (s.proj) gw[o + s.per - 1] = r.grad_w_hr;
      for (int64_t k = 0; k < s.n_ln; ++k) gw[o + ln_at(s) + k] = r.grad_ln[k];
      gh[idx] = r.grad_h0;
      if (Tr::kHasCell) gc[idx] = r.grad_c0;
    }
    if (l > 0) {
      const at::Tensor& mask = saved[s.mask_at(l)];
      g_top = mask.numel() ? gx.mul_(mask) : gx;
    } else {
      grad_input = input_grad ? gx : buffer_empty({0}, input.options());
    }
  }
  // Absent states get their own empty tensors: results must not alias each other. One layer
  // and direction returns its state gradient as a view (its own fresh buffer): a copy would be
  // a second [B, P] alive at the peak of a T = 1 call, above torch.nn's (bench stream-layer).
  const auto states = [](std::vector<at::Tensor>& g) {
    return g.size() == 1 ? g[0].unsqueeze(0) : at::stack(g, 0);
  };
  at::Tensor grad_hx = opt(hx) ? states(gh) : buffer_empty({0}, input.options());
  at::Tensor grad_cx = Tr::kHasCell && opt(cx) ? states(gc) : buffer_empty({0}, input.options());
  return {grad_input, grad_hx, grad_cx, gw};
}

}  // namespace fusedrnn
