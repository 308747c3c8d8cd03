// The time loop of one direction of one LayerNorm LSTM / GRU layer (Ba, Kiros & Hinton 2016,
// as haste), on the plan, backend policy (Be: Blas, WeightGemm, RowChunks) and backward buffers
// of the plain layer driver (layer_driver.h). LN(v; w) = w (v - mean v) / sqrt(var v + 1e-5)
// over the last dimension, biased variance.
//   LSTM: a = LN(x W_ih^T; ln_ih) + LN(h W_hh^T; ln_hh) + b_ih + b_hh, gates i f g o;
//         c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(LN(c'; ln_c) + ln_c_b);
//         c' (not normalised) is the carried state.
//   GRU : gi = LN(x W_ih^T; ln_ih) + b_ih; gh = LN(h W_hh^T; ln_hh) + b_hh;
//         r, z = sigmoid(gi + gh); n = tanh(gi_n + r gh_n); h' = (1 - z) n + z h.
// Forward: one GEMM x W_ih^T over all N rows and the input side's LN in place (one pass, rows
// in parallel); per step one recurrent GEMM hg = h W_hh^T and one fused pass (Kern::forward:
// LN of hg, gates, LN of c'). Saved for backward: output [N, H] and the workspace [N,
// ln_ws_cols] (ln_step_args.h: gates, c, normalised values, 1/std per row), none at inference.
// Backward: per step in reverse one fused pass (Kern::backward: d LN(c'), gates, d LN(hg)) and
// dh_{t-1} = dgh W_hh; after the loop the input side's LN backward over all rows, then the
// plain driver's weight GEMMs, and the LN weights' gradients as column sums.
// Kern: forward(LnFwdStep), backward(LnBwdStep), rows_forward(LnRows), rows_backward(LnRowsBwd),
// weight_grad(dy, xhat) (column sums of dy * xhat: ln_weight_grad, or a fused pass).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "fusedrnn/layer_driver.h"
#include "fusedrnn/ln_step_args.h"

namespace fusedrnn {

// The LayerNorm weights of the plan (see ln_weight_count): checked and made contiguous.
template <class Tr>
void check_ln_weights(LayerPlan& p, bool has_biases) {
  const int64_t GH = Tr::kGates * p.H;
  TORCH_CHECK(static_cast<int64_t>(p.ln.size()) == ln_weight_count<Tr>(has_biases), p.op,
              ": expected ", ln_weight_count<Tr>(has_biases), " LayerNorm weights, got ",
              p.ln.size());
  static const char* names[] = {"ln_ih", "ln_hh", "ln_c", "ln_c_b"};
  for (size_t k = 0; k < p.ln.size(); ++k) {
    detail::check_like(p.op, names[k], p.ln[k], p.x);
    detail::check_shape(p.op, names[k], p.ln[k], {k < 2 ? GH : p.H}, k < 2 ? "[G*H]" : "[H]");
    p.ln[k] = p.ln[k].contiguous();
  }
}

// Whether the input side's LayerNorm takes its closed form (narrow_input_ln): its I x I
// quadratic form per row costs less than the statistics over G*H values it replaces.
inline bool narrow_input(const LayerPlan& p) { return p.I * p.I <= p.G * p.H; }

// The input side, LN(x W_ih^T; ln_ih) + b_ih (+ b_hh for the LSTM), in closed form for a narrow
// input. With U = W_ih less its column means ([GH, I]) and C = U^T U / GH ([I, I]), row n of
// v = x W_ih^T has v_n - mean(v_n) = x_n U^T and var(v_n) = x_n C x_n^T, so
//   LN(v_n) = (r_n x_n) U^T,  r_n = 1 / sqrt(x_n C x_n^T + eps)
// and the side is one GEMM [N, I+1] x [I+1, GH]: rows [r_n x_n | 1] against [ln_ih * U^T ; b].
// No [N, GH] statistics pass (the sine and stock inputs have I = 1: it was a fifth of the sine
// LN-LSTM's inference). Training writes the same xhat and 1/std as the rows pass would.
template <class Tr, class Be, class T>
at::Tensor narrow_input_ln(const LayerPlan& p, const at::Tensor& ws, const LnWs& L) {
  using Blas = typename Be::Blas;
  const int64_t I = p.I, GH = Tr::kGates * p.H, N = p.N;
  const auto opts = p.x.options();
  const at::Tensor U = p.w_ih - p.w_ih.mean(0, true);
  const at::Tensor C = at::mm(U.t(), U).div_(static_cast<double>(GH));
  const at::Tensor r = (at::mm(p.x, C) * p.x).sum(1).add_(kLnEps).rsqrt_();
  at::Tensor a = at::empty({N, I + 1}, opts);
  a.narrow(1, 0, I).copy_(p.x * r.unsqueeze(1));
  a.select(1, I).fill_(1);
  at::Tensor wb = at::empty({I + 1, GH}, opts);
  wb.narrow(0, 0, I).copy_(U.t() * p.ln[0]);
  at::Tensor bias = wb.select(0, I);
  if (!p.b_ih.defined()) {
    bias.zero_();
  } else if (Tr::kHasCell) {  // the LSTM's biases are all on this side
    at::add_out(bias, p.b_ih, p.b_hh);
  } else {
    bias.copy_(p.b_ih);
  }
  at::Tensor xg = at::mm(a, wb);
  if (p.keep_workspace && N > 0) {
    Blas::template gemm<T>(false, true, N, GH, I, T(1), ptr<T>(a), I + 1, ptr<T>(U), I, T(0),
                           ptr<T>(ws) + L.xhat(), ws.size(1));
    ws.select(1, L.rstd_ih()).copy_(r);
  }
  return xg;
}

template <class Tr, class Kern, class Be, class T>
LayerFwdResult ln_layer_forward(const LayerPlan& p) {
  using Blas = typename Be::Blas;
  const int64_t H = p.H, G = Tr::kGates, GH = G * H, WS = ln_ws_cols(G, H);
  const LnWs L{G, H};
  const auto opts = p.x.options();
  at::Tensor ws = at::empty({p.keep_workspace ? p.N : 0, WS}, opts);
  // The row padding (ln_ws_cols) is never read, but the saved tensor is an op result: defined.
  const int64_t used = L.rstd_ih() + 1;
  if (WS > used) ws.narrow(1, used, WS - used).zero_();
  T* ws_p = p.keep_workspace ? ptr<T>(ws) : nullptr;
  const bool closed = narrow_input(p);
  at::Tensor xg = closed ? narrow_input_ln<Tr, Be, T>(p, ws, L) : at::mm(p.x, p.w_ih.t());
  LnRows<T> in;  // the input side, normalised in place
  in.rows = p.N;
  in.n = GH;
  in.v = ptr<T>(xg);
  in.ld_v = in.ld_y = GH;
  in.w = ptr<T>(p.ln[0]);
  in.b1 = ptr<T>(p.b_ih);
  in.b2 = Tr::kHasCell ? ptr<T>(p.b_hh) : nullptr;  // the LSTM's biases are all on this side
  in.y = ptr<T>(xg);
  in.xhat = ws_p ? ws_p + L.xhat() : nullptr;
  in.rstd = ws_p ? ws_p + L.rstd_ih() : nullptr;
  in.ld_ws = WS;
  if (p.N > 0 && !closed) Kern::template rows_forward<T>(in);

  at::Tensor out = at::empty({p.N, H}, opts);
  at::Tensor h = state_copy<Blas, T>(p.h0, p.B, H, opts);
  at::Tensor c = Tr::kHasCell ? state_copy<Blas, T>(p.c0, p.B, H, opts) : at::Tensor();
  at::Tensor hg = at::empty({p.B, GH}, opts);
  const T *xg_p = ptr<T>(xg), *whh = ptr<T>(p.w_hh);
  T *out_p = ptr<T>(out), *h_p = ptr<T>(h), *c_p = ptr<T>(c), *hg_p = ptr<T>(hg);
  const typename Be::template WeightGemm<T> rec(true, GH, H, whh, H, p.T);  // h W_hh^T
  auto rows_loop = [&](int64_t b0, int64_t b1) {
    for (int64_t s = 0; s < p.T; ++s) {
      const int64_t t = p.reverse ? p.T - 1 - s : s;
      const int64_t rows = std::min(p.bs[t], b1) - b0, off = p.off[t] + b0;
      if (rows <= 0) continue;
      rec(rows, h_p + b0 * H, H, T(0), hg_p + b0 * GH, GH);
      LnFwdStep<T> st;
      st.rows = rows;
      st.H = H;
      st.xg = xg_p + off * GH;
      st.hg = hg_p + b0 * GH;
      st.ln_hh = ptr<T>(p.ln[1]);
      st.b_hh = Tr::kHasCell ? nullptr : ptr<T>(p.b_hh);
      if constexpr (Tr::kHasCell) {
        st.ln_c = ptr<T>(p.ln[2]);
        st.ln_c_b = p.ln.size() > 3 ? ptr<T>(p.ln[3]) : nullptr;
        st.c = c_p + b0 * H;
      }
      st.h = h_p + b0 * H;
      st.out = out_p + off * H;
      st.ld_out = H;
      st.ws = ws_p ? ws_p + off * WS : nullptr;
      st.ld_ws = WS;
      Kern::template forward<T>(st);
    }
  };
  Be::RowChunks::run(p.B, 2.0 * p.B * GH * H, rows_loop);
  LayerFwdResult r;
  r.output = out.view(p.out_shape(H));
  r.h_n = h;
  r.c_n = c;
  r.ws = ws;
  return r;
}

// Column sums of dy * xhat over rows (dy [N, n] contiguous, xhat [N, n] strided rows): an LN
// weight's gradient, with ATen ops (the GPU and the emulation; the CPU fuses it).
inline at::Tensor ln_weight_grad(const at::Tensor& dy, const at::Tensor& xhat) {
  return column_sums(dy * xhat);
}

template <class Tr, class Kern, class Be, class T>
void ln_backward_steps(const LayerPlan& p, BwdBuffers& b, const at::Tensor& gout,
                       const at::Tensor& out, const at::Tensor& ws, at::Tensor& dgn,
                       at::Tensor& dcn) {
  const int64_t H = p.H, G = Tr::kGates, GH = G * H, WS = ln_ws_cols(G, H);
  const T *gout_p = ptr<T>(gout), *out_p = ptr<T>(out), *ws_p = ptr<T>(ws);
  T *carry_h_p = ptr<T>(b.carry_h), *carry_c_p = ptr<T>(b.carry_c);
  T *dgi_p = ptr<T>(b.dG), *dgh_p = ptr<T>(b.dgh), *dgn_p = ptr<T>(dgn), *dcn_p = ptr<T>(dcn);
  const typename Be::template WeightGemm<T> rec(false, H, GH, ptr<T>(p.w_hh), H, p.T);  // dgh W_hh
  auto rows_loop = [&](int64_t b0, int64_t b1) {
    T* carry_h = carry_h_p + b0 * H;
    for (int64_t s = p.T - 1; s >= 0; --s) {
      const int64_t t = p.reverse ? p.T - 1 - s : s;
      const int64_t rows = std::min(p.bs[t], b1) - b0, off = p.off[t] + b0;
      if (rows <= 0) continue;
      LnBwdStep<T> st;
      st.rows = rows;
      st.H = H;
      st.dh_a = gout_p ? gout_p + off * H : nullptr;
      st.ld_a = H;
      st.dh_b = carry_h;
      st.ld_b = H;
      st.ws = ws_p + off * WS;
      st.ld_ws = WS;
      previous_rows<Tr::kHasCell>(p, b, t, off, b0, out_p, ws_p, WS, st.h_prev, st.c_prev, st.ld_c);
      st.ln_hh = ptr<T>(p.ln[1]);
      if constexpr (Tr::kHasCell) {
        st.ln_c = ptr<T>(p.ln[2]);
        st.ln_c_b = p.ln.size() > 3 ? ptr<T>(p.ln[3]) : nullptr;
        st.dc = carry_c_p + b0 * H;
        st.dcn = dcn_p + off * H;
      } else {
        st.dgn = dgn_p + off * GH;
        st.dh_carry = carry_h;
      }
      st.dgi = dgi_p + off * GH;
      st.dgh = dgh_p + off * GH;
      Kern::template backward<T>(st);
      rec(rows, dgh_p + off * GH, GH, Tr::kHasCell ? T(0) : T(1), carry_h, H);
    }
  };
  Be::RowChunks::run(p.B, 2.0 * p.B * GH * H, rows_loop);
}

template <class Tr, class Kern, class Be, class T>
LayerBwdResult ln_layer_backward(const LayerPlan& p, const at::Tensor& gout,
                                 const at::Tensor& grad_hn, const at::Tensor& grad_cn,
                                 const at::Tensor& out, const at::Tensor& ws, bool input_grad) {
  const int64_t H = p.H, G = Tr::kGates, GH = G * H, WS = ln_ws_cols(G, H);
  const LnWs L{G, H};
  const auto opts = p.x.options();
  BwdBuffers b = backward_buffers<Tr>(p, out, ws, grad_hn, grad_cn);  // b.dG: d(input side)
  b.dgh = at::empty({p.N, GH}, opts);                                 // d(h W_hh^T)
  at::Tensor dgn = Tr::kHasCell ? b.dG : at::empty({p.N, GH}, opts);  // d(hidden side)
  at::Tensor dcn = Tr::kHasCell ? at::empty({p.N, H}, opts) : at::Tensor();
  ln_backward_steps<Tr, Kern, Be, T>(p, b, gout, out, ws, dgn, dcn);

  LayerBwdResult r;
  const at::Tensor xhat = ws.narrow(1, L.xhat(), GH), hhat = ws.narrow(1, L.hhat(), GH);
  r.grad_ln.push_back(Kern::template weight_grad<T>(b.dG, xhat));
  r.grad_ln.push_back(Kern::template weight_grad<T>(dgn, hhat));
  if constexpr (Tr::kHasCell) {
    r.grad_ln.push_back(Kern::template weight_grad<T>(dcn, ws.narrow(1, L.chat(), H)));
    if (p.ln.size() > 3) r.grad_ln.push_back(column_sums(dcn));
  }
  if (p.b_ih.defined()) {
    r.grad_b_ih = column_sums(b.dG);
    r.grad_b_hh = Tr::kHasCell ? r.grad_b_ih.clone() : column_sums(dgn);
  } else {
    r.grad_b_ih = at::empty({0}, opts);
    r.grad_b_hh = at::empty({0}, opts);
  }
  // The input side's LN backward, in place (each row is read before it is written): dG
  // becomes d(x W_ih^T) for the plain driver's weight GEMMs. Everything that reads dG as the
  // LN output's gradient (the LSTM's dgn is dG) is done above.
  LnRowsBwd<T> rb;
  rb.rows = p.N;
  rb.n = GH;
  rb.dy = ptr<T>(b.dG);
  rb.ld_dy = rb.ld_dv = GH;
  rb.w = ptr<T>(p.ln[0]);
  rb.xhat = ptr<T>(ws) + L.xhat();
  rb.rstd = ptr<T>(ws) + L.rstd_ih();
  rb.ld_ws = WS;
  rb.dv = ptr<T>(b.dG);
  if (p.N > 0) Kern::template rows_backward<T>(rb);
  weight_grads<Tr>(p, b, out, input_grad, r);
  r.grad_h0 = p.h0.defined() ? b.carry_h : at::empty({0}, opts);
  r.grad_c0 = Tr::kHasCell && p.c0.defined() ? b.carry_c : at::empty({0}, opts);
  return r;
}

}  // namespace fusedrnn
