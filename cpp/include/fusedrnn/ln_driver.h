// The time loop of one direction of one LayerNorm LSTM / GRU layer (Ba, Kiros & Hinton 2016,
// as haste), on the plan, backend policy (Be: Blas, WeightGemm, RowChunks) and backward buffers
// of the plain layer driver (layer_driver.h). LN(v; w) = w (v - mean v) / sqrt(var v + 1e-5)
// over the last dimension, biased variance.
//   LSTM: a = LN(x W_ih^T; ln_ih) + LN(h W_hh^T; ln_hh) + b_ih + b_hh, gates i f g o;
//         c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(LN(c'; ln_c) + ln_c_b);
//         c' (not normalised) is the carried state.
//   GRU : gi = LN(x W_ih^T; ln_ih) + b_ih; gh = LN(h W_hh^T; ln_hh) + b_hh;
//         r, z = sigmoid(gi + gh); n = tanh(gi_n + r gh_n); h' = (1 - z) n + z h.
// Forward: the input side first: one GEMM x W_ih^T over all N rows and its LN in place (one
// pass, rows in parallel), or for a narrow input (I*I <= G*H) its closed form (one GEMM; with
// one feature on the CPU, inside the step); per step one recurrent GEMM hg = h W_hh^T and one
// fused pass (Kern::forward: LN of hg, gates, LN of c'), or both in one (Kern::FusedStep, below).
// Saved for backward: output [N, H] and the workspace [N, ln_ws_cols] (ln_step_args.h: gates, c,
// normalised values, 1/std per row), none at inference. Backward: per step in reverse one fused
// pass (Kern::backward: d LN(c'), gates, d LN(hg)) and dh_{t-1} = dgh W_hh; after the loop the
// input side's LN backward over all rows (or its closed form), then the plain driver's weight
// GEMMs, and the LN weights' gradients as column sums.
//
// Kern: forward(LnFwdStep), backward(LnBwdStep), rows_forward(LnRows), rows_backward(LnRowsBwd),
// weight_grad(dy, xhat) (column sums of dy * xhat: ln_weight_grad, or a fused pass),
// kScalarInput (whether forward takes a one-feature input side as LnFwdStep::xs), and
// optionally FusedStep<T> (LnFusedStepFor).
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "fusedrnn/layer_driver.h"
#include "fusedrnn/ln_step_args.h"

namespace fusedrnn {

// A backend's step with the recurrent GEMM inside the LN pass (Kern::FusedStep<T>, optional:
// the CPU's small-H float32 one, cpu/ln_fused.h), built once per layer call from the plan; when
// active() it replaces the step's GEMM and Kern::forward (same writes). NoLnFusedStep: never.
struct NoLnFusedStep {
  explicit NoLnFusedStep(const LayerPlan&) {}
  bool active() const { return false; }
  template <class T>
  void operator()(const LnFwdStep<T>&) const {}
};
template <class Kern, class T, class = void>
struct LnFusedStepFor {
  using type = NoLnFusedStep;
};
template <class Kern, class T>
struct LnFusedStepFor<Kern, T, std::void_t<typename Kern::template FusedStep<T>>> {
  using type = typename Kern::template FusedStep<T>;
};

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
//   LN(v_n) = (r_n x_n) U^T,  r_n = 1 / sqrt(x_n C x_n^T + eps).
// No [N, GH] statistics pass (the sine and stock inputs have I = 1: it was a fifth of the sine
// LN-LSTM's inference). Training writes 1/std and the normalised values xhat, as the rows pass
// does: the backward reads 1/std with x in its closed form, or both in the rows pass.
struct NarrowInput {
  at::Tensor U, r;  // [GH, I], [N]
};

// U: W_ih less its column means (forward and backward of the closed form).
inline at::Tensor centred_w_ih(const LayerPlan& p) { return p.w_ih - p.w_ih.mean(0, true); }

inline NarrowInput narrow_input_terms(const LayerPlan& p, const at::Tensor& ws, const LnWs& L) {
  NarrowInput t;
  t.U = centred_w_ih(p);
  const at::Tensor C = buffer_mm(t.U.t(), t.U).div_(static_cast<double>(t.U.size(0)));
  t.r = (buffer_mm(p.x, C) * p.x).sum(1).add_(kLnEps).rsqrt_();
  if (p.keep_workspace) ws.select(1, L.rstd_ih()).copy_(t.r);
  return t;
}

// The input side's bias [GH]: b_ih, plus b_hh for the LSTM (all its biases are on this side).
template <class Tr>
at::Tensor input_bias(const LayerPlan& p) {
  if (!p.b_ih.defined()) return buffer_zeros({Tr::kGates * p.H}, p.x.options());
  return Tr::kHasCell ? p.b_ih + p.b_hh : p.b_ih;
}

// Materialised (kernels without kScalarInput, or I > 1): one GEMM [N, I+1] x [I+1, GH], rows
// [r_n x_n | 1] against [ln_ih * U^T ; bias]; xhat for the workspace is one more GEMM.
template <class Tr, class Be, class T>
at::Tensor narrow_input_ln(const LayerPlan& p, const at::Tensor& ws, const LnWs& L) {
  using Blas = typename Be::Blas;
  const int64_t I = p.I, N = p.N;
  const NarrowInput t = narrow_input_terms(p, ws, L);
  const at::Tensor a = at::cat({p.x * t.r.unsqueeze(1), at::ones({N, 1}, p.x.options())}, 1);
  const at::Tensor wb = at::cat({t.U.t() * p.ln[0], input_bias<Tr>(p).unsqueeze(0)}, 0);
  if (p.keep_workspace && N > 0)
    Blas::template gemm<T>(false, true, N, wb.size(1), I, T(1), ptr<T>(a), I + 1, ptr<T>(t.U), I,
                           T(0), ptr<T>(ws) + L.xhat(), ws.size(1));
  return buffer_mm(a, wb);
}

// One feature (I = 1) on kernels with kScalarInput (the CPU's, so host memory): the step
// computes row n's input side as xs_n (ln_ih * u) + bias from xs_n = r_n x_n (LnFwdStep::xs),
// with no [N, GH] xg written and read back (the sine LN models' largest buffer). With one
// feature, C is the variance of w_ih's column, so r_n = 1 / sqrt(x_n^2 var + eps). Plain loops
// over N + GH values: a dozen ATen calls on these vectors cost more than the layer's step
// passes at the stock size. Returns [xs (N) | ln_ih * u | bias | u (GH each)].
template <class Tr, class T>
at::Tensor scalar_input(const LayerPlan& p, const at::Tensor& ws, const LnWs& L) {
  const int64_t N = p.N, GH = Tr::kGates * p.H;
  at::Tensor out = buffer_empty({N + 3 * GH}, p.x.options());
  T *xs = ptr<T>(out), *xw = xs + N, *xb = xw + GH, *u = xb + GH;
  const T *w = ptr<T>(p.w_ih), *ln = ptr<T>(p.ln[0]), *x = ptr<T>(p.x);
  const T *b_ih = ptr<T>(p.b_ih), *b_hh = Tr::kHasCell ? ptr<T>(p.b_hh) : nullptr;
  double mean = 0, var = 0;  // two passes, as the rows pass
  for (int64_t j = 0; j < GH; ++j) mean += w[j];
  mean /= double(GH);
  for (int64_t j = 0; j < GH; ++j) {
    u[j] = T(w[j] - mean);
    var += double(u[j]) * double(u[j]);
    xw[j] = ln[j] * u[j];
    xb[j] = (b_ih ? b_ih[j] : T(0)) + (b_hh ? b_hh[j] : T(0));
  }
  var /= double(GH);
  T* rstd = p.keep_workspace ? ptr<T>(ws) + L.rstd_ih() : nullptr;
  const int64_t ld = ws.size(1);
  for (int64_t n = 0; n < N; ++n) {
    const T r = T(1.0 / std::sqrt(double(x[n]) * double(x[n]) * var + kLnEps));
    xs[n] = x[n] * r;
    if (rstd) rstd[n * ld] = r;
  }
  return out;
}

// The backward of narrow_input_ln. With A = diag(r) X (rows a_n = r_n x_n), w = ln_ih and dY
// the input side's output gradient, the LN backward of row n is
//   dv_n = r_n (g_n - m1_n - m2_n U a_n),  g_n = dy_n * w,  m1_n = mean(g_n),
//   m2_n = mean(g_n * U a_n) = (dy_n (w * U)) . a_n / GH,
// and summed over rows, with P = dY^T A ([GH, I]):
//   d ln_ih = rowsum(U * P),   dW_ih = w * P - 1 (A^T m1)^T - U (A^T diag(m2) A),
//   dx = diag(r) (dY (w * W_ih) - m1 colsum(W_ih)^T - diag(m2) A (U^T W_ih)).
// Two passes over dY (P, and [m1 | dY (w * U) | dY (w * W_ih)] as one GEMM) instead of the
// rows pass, the ln_ih column sums of dY * xhat and the dW_ih GEMM: each a pass over [N, GH].
// Its ~15 small ATen calls cost ~0.2 ms (2 threads here); the passes over [N, GH] it saves cost
// as much near 2^20 values (sine: 2.0M and 1.5M; stock: 0.25M and 0.18M), so below that the
// rows pass backward runs (the forward wrote the xhat it reads).
inline bool closed_input_backward(const LayerPlan& p) {
  return narrow_input(p) && p.N * p.G * p.H >= (int64_t(1) << 20);
}

template <class Tr>
at::Tensor narrow_input_ln_backward(const LayerPlan& p, const at::Tensor& dY, const at::Tensor& ws,
                                    const LnWs& L, bool input_grad, LayerBwdResult& r) {
  const int64_t I = p.I, GH = Tr::kGates * p.H;
  const at::Tensor w = p.ln[0].unsqueeze(1);  // [GH, 1]
  const at::Tensor U = centred_w_ih(p);
  const at::Tensor rstd = ws.select(1, L.rstd_ih()).unsqueeze(1);  // [N, 1]
  const at::Tensor A = p.x * rstd;
  const at::Tensor P = buffer_mm(dY.t(), A);
  std::vector<at::Tensor> rhs = {w, U * w};
  if (input_grad) rhs.push_back(p.w_ih * w);
  const at::Tensor S = buffer_mm(dY, at::cat(rhs, 1));  // [N, 1 + I (+ I)]
  const at::Tensor m1 = S.narrow(1, 0, 1).div(static_cast<double>(GH));
  const at::Tensor m2 = (S.narrow(1, 1, I) * A).sum(1, true).div_(static_cast<double>(GH));
  r.grad_w_ih = P * w - buffer_mm(m1.t(), A) - buffer_mm(U, buffer_mm(A.t(), A * m2));
  if (input_grad) {
    const at::Tensor dx = S.narrow(1, 1 + I, I) - m1 * p.w_ih.sum(0, true) -
                          buffer_mm(A * m2, buffer_mm(U.t(), p.w_ih));
    r.grad_input = (dx * rstd).view(p.in_shape);
  } else {
    r.grad_input = buffer_empty({0}, p.x.options());
  }
  return (U * P).sum(1);
}

template <class Tr, class Kern, class Be, class T>
LayerFwdResult ln_layer_forward(const LayerPlan& p) {
  using Blas = typename Be::Blas;
  const int64_t H = p.H, G = Tr::kGates, GH = G * H, WS = ln_ws_cols(G, H);
  const LnWs L{G, H};
  const auto opts = p.x.options();
  at::Tensor ws = buffer_empty({p.keep_workspace ? p.N : 0, WS}, opts);
  // The row padding (ln_ws_cols) is never read, but the saved tensor is an op result: defined.
  const int64_t used = L.used();
  if (WS > used) ws.narrow(1, used, WS - used).zero_();
  T* ws_p = p.keep_workspace ? ptr<T>(ws) : nullptr;
  const bool scalar = Kern::kScalarInput && p.I == 1;
  at::Tensor xg, xs;
  if (scalar) {
    xs = scalar_input<Tr, T>(p, ws, L);
  } else if (narrow_input(p)) {
    xg = narrow_input_ln<Tr, Be, T>(p, ws, L);
  } else {
    xg = buffer_mm(p.x, p.w_ih.t());
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
    if (p.N > 0) Kern::template rows_forward<T>(in);
  }

  at::Tensor out = buffer_empty({p.N, H}, opts);
  at::Tensor h = state_copy<Blas, T>(p.h0, p.B, H, opts);
  at::Tensor c = Tr::kHasCell ? state_copy<Blas, T>(p.c0, p.B, H, opts) : at::Tensor();
  const typename LnFusedStepFor<Kern, T>::type fused(p);
  at::Tensor hg = buffer_empty({fused.active() ? 0 : p.B, GH}, opts);
  const T *xg_p = ptr<T>(xg), *xs_p = ptr<T>(xs), *xv_p = xs_p + p.N, *whh = ptr<T>(p.w_hh);
  T *out_p = ptr<T>(out), *h_p = ptr<T>(h), *c_p = ptr<T>(c), *hg_p = ptr<T>(hg);
  // h W_hh^T (unless fused; steps 0: not packed for BLAS then)
  const typename Be::template WeightGemm<T> rec(true, GH, H, whh, H, fused.active() ? 0 : p.T);
  auto rows_loop = [&](int64_t b0, int64_t b1) {
    for (int64_t s = 0; s < p.T; ++s) {
      const int64_t t = p.reverse ? p.T - 1 - s : s;
      const int64_t rows = std::min(p.bs[t], b1) - b0, off = p.off[t] + b0;
      if (rows <= 0) continue;
      if (!fused.active()) rec(rows, h_p + b0 * H, H, T(0), hg_p + b0 * GH, GH);
      LnFwdStep<T> st;
      st.rows = rows;
      st.H = H;
      st.xg = scalar ? nullptr : xg_p + off * GH;
      if (scalar) {
        st.xs = xs_p + off;
        st.xw = xv_p;
        st.xb = xv_p + GH;
        st.xu = xv_p + 2 * GH;
      }
      st.hg = fused.active() ? nullptr : hg_p + b0 * GH;
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
      if (fused.active()) {
        fused(st);
      } else {
        Kern::template forward<T>(st);
      }
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
  BwdBuffers b = backward_buffers<Tr>(p, out, ws, grad_hn, grad_cn);     // b.dG: d(input side)
  b.dgh = buffer_empty({p.N, GH}, opts);                                 // d(h W_hh^T)
  at::Tensor dgn = Tr::kHasCell ? b.dG : buffer_empty({p.N, GH}, opts);  // d(hidden side)
  at::Tensor dcn = Tr::kHasCell ? buffer_empty({p.N, H}, opts) : at::Tensor();
  ln_backward_steps<Tr, Kern, Be, T>(p, b, gout, out, ws, dgn, dcn);

  LayerBwdResult r;
  const bool closed = closed_input_backward(p);
  const at::Tensor xhat = ws.narrow(1, L.xhat(), GH), hhat = ws.narrow(1, L.hhat(), GH);
  r.grad_ln.push_back(closed ? narrow_input_ln_backward<Tr>(p, b.dG, ws, L, input_grad, r)
                             : Kern::template weight_grad<T>(b.dG, xhat));
  r.grad_ln.push_back(Kern::template weight_grad<T>(dgn, hhat));
  if constexpr (Tr::kHasCell) {
    r.grad_ln.push_back(Kern::template weight_grad<T>(dcn, ws.narrow(1, L.chat(), H)));
    if (p.ln.size() > 3) r.grad_ln.push_back(column_sums(dcn));
  }
  if (p.b_ih.defined()) {
    r.grad_b_ih = column_sums(b.dG);
    r.grad_b_hh = Tr::kHasCell ? r.grad_b_ih.clone() : column_sums(dgn);
  } else {
    r.grad_b_ih = buffer_empty({0}, opts);
    r.grad_b_hh = buffer_empty({0}, opts);
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
  if (p.N > 0 && !closed) Kern::template rows_backward<T>(rb);
  weight_grads<Tr>(p, b, out, input_grad, r, !closed);
  r.grad_h0 = p.h0.defined() ? b.carry_h : buffer_empty({0}, opts);
  r.grad_c0 = Tr::kHasCell && p.c0.defined() ? b.carry_c : buffer_empty({0}, opts);
  return r;
}

}  // namespace fusedrnn
